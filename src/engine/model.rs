//! A model package loaded into two ONNX Runtime sessions, its options, and the engine's thread policy.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;

use super::providers::{join_notes, make_session};
use super::warmup::WarmUpSlot;
use crate::arena::{self, ArenaLease};
use crate::error::{err, Result, Sam3dStatus};
use crate::manifest::{FrameMode, Package};
use crate::runtime::Runtime;

/// Execution provider requested for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    TensorRt,
    /// Intel's OpenVINO on the CPU: built into ONNX Runtime, or its plugin execution provider
    OpenVino,
}

impl std::str::FromStr for Device {
    type Err = String;
    /// "cpu", "cuda", "tensorrt" or "openvino" (command lines, bindings).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "tensorrt" => Ok(Device::TensorRt),
            "openvino" => Ok(Device::OpenVino),
            o => Err(format!("device {o}: cpu, cuda, tensorrt or openvino")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub device: Device,
    /// ONNX Runtime intra-op threads, also the workers of the engine's crop resampling and
    /// paste-back (0: all cores).
    pub threads: usize,
    /// Check every package file against its SHA-256 before loading (default true).
    pub verify_hashes: bool,
    /// Settings of the CUDA and TensorRT providers (ignored on CPU).
    pub gpu: GpuOptions,
    /// OpenVINO: bf16 arithmetic where the CPU has AMX-BF16 or AVX512-BF16 (elsewhere fp32, said
    /// in the provider note). Off by default: masks then match the CPU provider's within fp32
    /// rounding.
    pub bf16: bool,
    /// OpenVINO: folder for compiled models, so a later open does not compile again. Created when
    /// missing.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: Device::Cpu,
            threads: 0,
            verify_hashes: true,
            gpu: GpuOptions::default(),
            bf16: false,
            cache_dir: None,
        }
    }
}

/// Settings of the GPU execution providers.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// CUDA device ordinal.
    pub device_id: i32,
    /// Cap on ONNX Runtime's CUDA memory arena in bytes (0: no cap). The cap bounds the arena, so a
    /// run that needs more fails with `Runtime` instead of taking the host application's memory.
    pub memory_limit: usize,
    /// TensorRT: let TensorRT pick fp16 kernels (the graphs stay fp32; TensorRT keeps fp32 where
    /// it must). Off by default: masks then match the CPU's within fp32 rounding.
    pub fp16: bool,
    /// CUDA: TF32 tensor cores for fp32 MatMul/Conv (ONNX Runtime's own default is on). Off by
    /// default so GPU masks match the CPU's within fp32 rounding; on, the paper-size encoder runs
    /// several times faster at about 1e-3 relative error (docs/performance.md).
    pub tf32: bool,
    /// TensorRT: folder for built engines and timing caches, reused by later opens of the same
    /// model (building takes minutes at paper size). Created when missing.
    pub trt_cache_dir: Option<PathBuf>,
}

/// A loaded model package.
pub struct Model {
    pub package: Package,
    pub crop: usize,
    pub frame: FrameMode,
    pub(super) encoder: Mutex<Session>,
    pub(super) decoder: Mutex<Session>,
    /// names of the encoder's outputs (the region cache), fed back to the decoder by name
    pub cache_names: Vec<String>,
    /// the crop goes in, and the probabilities come out, as float16 (a half-precision package
    /// halves those copies between host and device); otherwise float32
    pub(super) crop_f16: bool,
    pub(super) prob_f16: bool,
    /// the decoder takes each point's label (`labels`, float32 1 positive / 0 negative)
    pub(super) takes_labels: bool,
    /// execution provider in use, and why it differs from the one asked for
    pub provider: String,
    pub provider_note: String,
    /// threads of the engine's own CPU loops (crop resampling, paste-back): the ONNX Runtime
    /// thread setting, every core for 0 (a segmenter runs them between its ONNX Runtime runs)
    pub cpu_threads: usize,
    /// where the encoder's outputs (the region cache) are kept: the provider's device, so the
    /// decoder reads them there at every click instead of receiving a host copy
    pub(super) cache_memory: CacheMemory,
    /// the share of the CPU arena both sessions use (`arena`); None: each session has its own
    _arena: Option<ArenaLease>,
    /// the running warm-up (`warmup`), which clicks stop
    pub(crate) warm: WarmUpSlot,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum CacheMemory {
    Host,
    Cuda(i32),
}

impl CacheMemory {
    pub(super) fn info(self) -> ort::Result<MemoryInfo<'static>> {
        let (device, id) = match self {
            CacheMemory::Host => (AllocationDevice::CPU, 0),
            CacheMemory::Cuda(id) => (AllocationDevice::CUDA, id),
        };
        MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default)
    }
}

impl Model {
    pub fn open(runtime: &Runtime, dir: &Path, opts: &ModelOptions) -> Result<Model> {
        // the cheap checks before the package's hashes are computed (seconds at paper size)
        if opts.threads > crate::limits::MAX_THREADS as usize {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!(
                    "threads = {} exceeds the limit of {} (0 = all cores)",
                    opts.threads,
                    crate::limits::MAX_THREADS
                ),
            ));
        }
        check_gpu_options(opts)?;
        let package = Package::open(dir, opts.verify_hashes)?;
        let m = &package.manifest;
        let crop = m.crop()?;
        let frame = m.frame_mode()?;
        // CPU models share one arena (the decoder reuses the encoder's freed memory); if it cannot
        // be registered, each session keeps its own, as ONNX Runtime does by default
        let arena = match opts.device {
            Device::Cpu => arena::lease(*runtime).ok(),
            _ => None,
        };
        let shared = arena.is_some();
        let (encoder, provider, provider_note) =
            make_session(runtime, &dir.join(&m.graphs.encoder.file), opts, shared)?;
        let (decoder, dec_provider, dec_note) =
            make_session(runtime, &dir.join(&m.graphs.decoder.file), opts, shared)?;
        // the decoder's own story, where it differs from the encoder's
        let dec = if dec_provider != provider {
            format!("the decoder runs on {dec_provider}: {dec_note}")
        } else if !provider_note.contains(dec_note.as_str()) {
            dec_note
        } else {
            String::new()
        };
        let provider_note = join_notes(provider_note, dec);
        let cache_names: Vec<String> = encoder
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if encoder.inputs().len() != 1 || encoder.inputs()[0].name() != "crop" {
            return Err(err(
                Sam3dStatus::BadModel,
                format!("{}: encoder graph must take exactly `crop`", dir.display()),
            ));
        }
        for name in cache_names.iter().map(String::as_str).chain(["points"]) {
            if !decoder.inputs().iter().any(|i| i.name() == name) {
                return Err(err(
                    Sam3dStatus::BadModel,
                    format!("{}: decoder graph lacks input `{name}`", dir.display()),
                ));
            }
        }
        // a decoder trained with negative clicks takes each point's label (1 positive, 0 negative)
        let takes_labels = decoder.inputs().iter().any(|i| i.name() == "labels");
        if m.prompts.negative_points && !takes_labels {
            return Err(err(
                Sam3dStatus::BadModel,
                format!(
                    "{}: the manifest declares negative clicks but the decoder graph lacks input \
                     `labels`",
                    dir.display()
                ),
            ));
        }
        if !decoder.outputs().iter().any(|o| o.name() == "prob") {
            return Err(err(
                Sam3dStatus::BadModel,
                format!("{}: decoder graph lacks output `prob`", dir.display()),
            ));
        }
        check_graph_shapes(&encoder, &decoder, crop)
            .map_err(|m| err(Sam3dStatus::BadModel, format!("{}: {m}", dir.display())))?;
        let bad = |m: String| err(Sam3dStatus::BadModel, format!("{}: {m}", dir.display()));
        let crop_f16 = is_f16(&encoder.inputs()[0], "the encoder's input `crop`").map_err(bad)?;
        let prob = decoder.outputs().iter().find(|o| o.name() == "prob");
        let prob_f16 =
            is_f16(prob.expect("checked above"), "the decoder's output `prob`").map_err(bad)?;
        // device memory only where a GPU provider runs the graphs (OpenVINO's CPU device and a
        // fallback keep the cache in host memory)
        let cache_memory = if provider == "CUDA" || provider == "TensorRT" {
            CacheMemory::Cuda(opts.gpu.device_id)
        } else {
            CacheMemory::Host
        };
        Ok(Model {
            package,
            crop,
            frame,
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            cache_names,
            crop_f16,
            prob_f16,
            takes_labels,
            provider,
            provider_note,
            cpu_threads: worker_threads(opts.threads),
            cache_memory,
            _arena: arena,
            warm: WarmUpSlot::default(),
        })
    }

    pub fn manifest(&self) -> &crate::manifest::Manifest {
        &self.package.manifest
    }
}

/// The graphs' declared shapes against the manifest's crop (symbolic dimensions match anything),
/// so that a manifest cannot make the engine build crops the graphs were not made for (a crop of
/// 512 against 32-voxel graphs took gigabytes before ONNX Runtime refused the run).
fn check_graph_shapes(
    encoder: &Session,
    decoder: &Session,
    crop: usize,
) -> std::result::Result<(), String> {
    use crate::manifest::shape_fits;
    let shape = |o: &ort::value::Outlet| o.dtype().tensor_shape().map(|s| s.to_vec());
    let c = crop as i64;
    let find = |list: &[ort::value::Outlet], name: &str| {
        list.iter().find(|o| o.name() == name).and_then(shape)
    };
    for (what, got, want) in [
        (
            "encoder input `crop`",
            find(encoder.inputs(), "crop"),
            vec![1, 1, c, c, c],
        ),
        (
            "decoder output `prob`",
            find(decoder.outputs(), "prob"),
            vec![1, c, c, c],
        ),
    ] {
        match got {
            Some(got) if shape_fits(&got, &want) => {}
            got => {
                return Err(format!(
                    "the {what} has shape {got:?}, the manifest's crop of {crop} needs {want:?}"
                ))
            }
        }
    }
    // the region cache passes from the encoder's outputs to the decoder's inputs of the same name
    for o in encoder.outputs() {
        let into = find(decoder.inputs(), o.name());
        if let (Some(a), Some(b)) = (shape(o), into) {
            let fits =
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x < 0 || *y < 0 || x == y);
            if !fits {
                return Err(format!(
                    "the encoder's output `{}` has shape {a:?}, the decoder's input takes {b:?}",
                    o.name()
                ));
            }
        }
        // and with the same element type (float32 or float16), so a mixed package fails here
        // rather than at the first click
        let ty = |o: &ort::value::Outlet| match o.dtype() {
            ort::value::ValueType::Tensor { ty, .. } => Some(*ty),
            _ => None,
        };
        let into = decoder.inputs().iter().find(|i| i.name() == o.name());
        if let Some(i) = into {
            if ty(o) != ty(i) {
                return Err(format!(
                    "the encoder's output `{}` is {}, the decoder's input takes {}",
                    o.name(),
                    o.dtype(),
                    i.dtype()
                ));
            }
        }
    }
    // the engine gives the clicks as float32
    let points = decoder.inputs().iter().find(|i| i.name() == "points");
    if let Some(p) = points {
        let float32 = matches!(p.dtype(), ort::value::ValueType::Tensor { ty, .. }
            if *ty == ort::value::TensorElementType::Float32);
        if !float32 {
            return Err(format!(
                "the decoder's input `points` is {}, not a float32 tensor",
                p.dtype()
            ));
        }
    }
    Ok(())
}

/// Whether a graph's input or output is a float16 tensor (else float32; anything else is refused).
fn is_f16(o: &ort::value::Outlet, what: &str) -> std::result::Result<bool, String> {
    use ort::value::{TensorElementType as T, ValueType};
    match o.dtype() {
        ValueType::Tensor { ty: T::Float16, .. } => Ok(true),
        ValueType::Tensor { ty: T::Float32, .. } => Ok(false),
        other => Err(format!(
            "{what} is {other}, not a float32 or float16 tensor"
        )),
    }
}

/// GPU settings are checked on every machine, so a host sees the same error with or without a GPU.
fn check_gpu_options(opts: &ModelOptions) -> Result<()> {
    let g = &opts.gpu;
    if g.device_id < 0 {
        return Err(err(
            Sam3dStatus::InvalidArgument,
            format!("GPU device id {} is negative", g.device_id),
        ));
    }
    if let (Some(dir), Device::OpenVino) = (&opts.cache_dir, opts.device) {
        std::fs::create_dir_all(dir).map_err(|e| {
            err(
                Sam3dStatus::Io,
                format!("OpenVINO cache folder {}: {e}", dir.display()),
            )
        })?;
    }
    if let Some(dir) = &g.trt_cache_dir {
        if opts.device == Device::TensorRt {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(
                    Sam3dStatus::Io,
                    format!("TensorRT cache folder {}: {e}", dir.display()),
                )
            })?;
        }
    }
    Ok(())
}

/// Worker threads for the resampling loops: `requested`, or every core for 0.
pub(super) fn worker_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
