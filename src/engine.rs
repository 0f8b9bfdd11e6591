//! The inference pipeline of the model-package contract: a `Model` (two ONNX Runtime sessions,
//! shared by any number of `Segmenter`s on any threads) and a `Segmenter` (one volume, a cached
//! encoder region, several objects with their clicks, undo and redo).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ort::ep::ExecutionProvider;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{builder::GraphOptimizationLevel, RunOptions, Session};
use ort::value::{DynValue, TensorRef};

use crate::arena::{self, ArenaLease};
use crate::error::{err, Error, Result, Sam3dStatus};
use crate::fpmode::ModeGuard;
use crate::frame::FrameMap;
use crate::manifest::{FrameMode, Package};
use crate::refine::{flip_cube, flip_point, keep_seeded_components, FLIP_COUNTS};
use crate::resample::{
    back_taps, extract_crop, model_size, paste_threshold, worker_threads, CropPlan,
};
use crate::runtime::Runtime;
use crate::volume::Volume;
use crate::warmup::WarmUpSlot;

/// Execution provider requested for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    TensorRt,
}

impl std::str::FromStr for Device {
    type Err = String;
    /// "cpu", "cuda" or "tensorrt" (command lines, bindings).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "tensorrt" => Ok(Device::TensorRt),
            o => Err(format!("device {o}: cpu, cuda or tensorrt")),
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
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: Device::Cpu,
            threads: 0,
            verify_hashes: true,
            gpu: GpuOptions::default(),
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
    /// several times faster on an H100 at about 1e-3 relative error (README, Performance).
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
    encoder: Mutex<Session>,
    decoder: Mutex<Session>,
    /// names of the encoder's outputs (the region cache), fed back to the decoder by name
    pub cache_names: Vec<String>,
    /// execution provider in use, and why it differs from the one asked for
    pub provider: String,
    pub provider_note: String,
    /// threads of the engine's own CPU loops (crop resampling, paste-back): the ONNX Runtime
    /// thread setting, every core for 0 (a segmenter runs them between its ONNX Runtime runs)
    pub cpu_threads: usize,
    /// where the encoder's outputs (the region cache) are kept: the provider's device, so the
    /// decoder reads them there at every click instead of receiving a host copy
    cache_memory: CacheMemory,
    /// the share of the CPU arena both sessions use (`arena`); None: each session has its own
    _arena: Option<ArenaLease>,
    /// the running warm-up (`warmup`), which clicks stop
    pub(crate) warm: WarmUpSlot,
}

#[derive(Debug, Clone, Copy)]
enum CacheMemory {
    Host,
    Cuda(i32),
}

impl CacheMemory {
    fn info(self) -> ort::Result<MemoryInfo<'static>> {
        let (device, id) = match self {
            CacheMemory::Host => (AllocationDevice::CPU, 0),
            CacheMemory::Cuda(id) => (AllocationDevice::CUDA, id),
        };
        MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default)
    }
}

/// `run` (one ONNX Runtime run) with subnormals flushed on the calling thread as on ONNX Runtime's
/// own pool threads (`with_flush_to_zero` in `make_session`), whichever thread the host calls from;
/// the thread's mode is restored afterwards (`fpmode`).
fn flushing<R>(run: impl FnOnce() -> R) -> R {
    let _mode = ModeGuard::flush_subnormals();
    run()
}

fn rt_err(what: &str, e: impl std::fmt::Display) -> Error {
    err(Sam3dStatus::Runtime, format!("{what}: {e}"))
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
        let (decoder, _, _) =
            make_session(runtime, &dir.join(&m.graphs.decoder.file), opts, shared)?;
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
        if !decoder.outputs().iter().any(|o| o.name() == "prob") {
            return Err(err(
                Sam3dStatus::BadModel,
                format!("{}: decoder graph lacks output `prob`", dir.display()),
            ));
        }
        check_graph_shapes(&encoder, &decoder, crop)
            .map_err(|m| err(Sam3dStatus::BadModel, format!("{}: {m}", dir.display())))?;
        let cache_memory = if provider == "CPU" {
            CacheMemory::Host
        } else {
            CacheMemory::Cuda(opts.gpu.device_id)
        };
        Ok(Model {
            package,
            crop,
            frame,
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            cache_names,
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
    }
    Ok(())
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

/// A session for one graph; `shared_arena`: its CPU memory comes from the environment's arena
/// (`arena`), which the caller holds a lease on.
fn make_session(
    runtime: &Runtime,
    file: &Path,
    opts: &ModelOptions,
    shared_arena: bool,
) -> Result<(Session, String, String)> {
    let mut builder =
        Session::builder(runtime.environment()).map_err(|e| rt_err("session options", e))?;
    builder = builder
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| rt_err("optimisation level", e))?;
    if opts.threads > 0 {
        builder = builder
            .with_intra_threads(opts.threads)
            .map_err(|e| rt_err("threads", e))?;
    }
    // ONNX Runtime's intra-op workers spin after each run by default; on the 2-core development
    // machine that took the cores from the next short run and from the engine's own loops (demo click
    // 0.065 s without spinning vs 0.11 s with). SAM3D_INTRA_OP_SPINNING=1 restores ONNX Runtime's default.
    let spin = std::env::var("SAM3D_INTRA_OP_SPINNING").is_ok_and(|v| v == "1");
    builder = builder
        .with_intra_op_spinning(spin)
        .map_err(|e| rt_err("spinning", e))?;
    // Subnormal floats as zero in ONNX Runtime's worker threads. The shifted-window blocks add the
    // official -100 mask inside the attention logits, so the flash-attention loop rescales by
    // exp(-100) ~ 4e-44, a subnormal: on Intel cores each such operation takes a microcode assist.
    // Paper-size encoder on 2 Xeon cores: 96.7 s -> 50.9 s (its 6 shifted blocks 8.7 s -> 0.3-0.7 s each);
    // AMD Zen 3 showed no such cost. Only values below 1.2e-38 change, and those to 0. This covers
    // ONNX Runtime's pool threads; `flushing` covers the thread that calls a run.
    builder = builder
        .with_flush_to_zero()
        .map_err(|e| rt_err("denormals as zero", e))?;
    // No memory pattern. With it, ONNX Runtime serves a graph's first run from its arena piece by
    // piece, then plans one block of the whole run's size for every later run with the same input
    // shapes while the arena keeps the first run's pieces: the paper-size engine's peak RSS went
    // 5.1 → 9.1 GB at the second encoding (5.7 GB without the pattern, encoder no slower; 2 Xeon
    // cores), and the decoder would add a block per click count. The arena still reuses memory.
    builder = builder
        .with_memory_pattern(false)
        .map_err(|e| rt_err("memory pattern", e))?;
    if shared_arena {
        builder = builder
            .with_env_allocators()
            .map_err(|e| rt_err("shared arena", e))?;
    }
    // Register GPU providers explicitly so a failure is seen (and reported), never silent.
    let (mut provider, mut note) = ("CPU".to_string(), String::new());
    let g = &opts.gpu;
    let cuda = || {
        // SameAsRequested: the arena grows by what a run asks for, not to the next power of two
        // (which took the paper-size encoder's peak from about 8 to 18 GB on an H100)
        let ep = ort::ep::CUDA::default()
            .with_device_id(g.device_id)
            .with_tf32(g.tf32)
            .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
        if g.memory_limit > 0 {
            ep.with_memory_limit(g.memory_limit)
        } else {
            ep
        }
    };
    let attempt = match opts.device {
        Device::Cpu => None,
        Device::Cuda => Some(("CUDA", cuda().register(&mut builder))),
        Device::TensorRt => {
            let mut trt = ort::ep::TensorRT::default()
                .with_device_id(g.device_id)
                .with_fp16(g.fp16);
            if g.memory_limit > 0 {
                trt = trt.with_max_workspace_size(g.memory_limit);
            }
            if let Some(dir) = &g.trt_cache_dir {
                let d = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&d)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&d);
            }
            let res = trt.register(&mut builder);
            // nodes TensorRT does not take run on CUDA rather than on the CPU
            if res.is_ok() {
                if let Err(e) = cuda().register(&mut builder) {
                    note =
                        format!("TensorRT without the CUDA provider for its leftover nodes: {e}");
                }
            }
            Some(("TensorRT", res))
        }
    };
    if let Some((name, res)) = attempt {
        match res {
            Ok(()) => provider = name.to_string(),
            Err(e) => note = format!("{name} unavailable, running on CPU: {e}"),
        }
    }
    // ONNX Runtime sets flush-to-zero on the thread that initialises the process's first session,
    // for good; the host's thread gets its own mode back (`fpmode`)
    let keep_mode = ModeGuard::keep();
    let session = builder.commit_from_file(file);
    drop(keep_mode);
    let session = session.map_err(|e| {
        err(
            Sam3dStatus::BadModel,
            format!(
                "{}: ONNX Runtime cannot load the graph: {e}",
                file.display()
            ),
        )
    })?;
    Ok((session, provider, note))
}

/// Pipeline stages reported to progress callbacks, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Load,
    Resample,
    Encode,
    Decode,
    Paste,
}

/// Coordinate system of a click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coord {
    /// continuous voxel index (i, j, k), voxel centres at integers
    Ijk,
    /// physical point, LPS (ITK), mm
    Lps,
    /// physical point, RAS (NIfTI, 3D Slicer), mm
    Ras,
}

/// An axis-aligned box of voxel indices, [lo, hi) per axis (i, j, k).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoxelBox {
    pub lo: [u64; 3],
    pub hi: [u64; 3],
}

impl VoxelBox {
    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.hi[a] <= self.lo[a])
    }
    pub fn union(&self, o: &VoxelBox) -> VoxelBox {
        if self.is_empty() {
            return *o;
        }
        if o.is_empty() {
            return *self;
        }
        VoxelBox {
            lo: [0, 1, 2].map(|a| self.lo[a].min(o.lo[a])),
            hi: [0, 1, 2].map(|a| self.hi[a].max(o.hi[a])),
        }
    }
}

/// One object's mask, stored as the box the crop could reach.
#[derive(Debug, Clone, Default)]
struct SubMask {
    bbox: VoxelBox,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct ObjectState {
    clicks: Vec<[f64; 3]>,
    undo: Vec<Vec<[f64; 3]>>,
    redo: Vec<Vec<[f64; 3]>>,
    mask: SubMask,
}

struct Region {
    origin: [i64; 3],
    /// per test-time flip, the encoder's outputs by name, in the memory of the model's provider
    caches: Vec<Vec<(String, DynValue)>>,
}

/// What one interaction did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interaction {
    /// voxels in the object's mask
    pub voxels: u64,
    /// the voxels whose value may have changed
    pub changed: VoxelBox,
    /// the encoder ran for this interaction (false: the cached region served it)
    pub encoded: bool,
}

pub type Progress<'a> = &'a mut dyn FnMut(Stage, bool);

/// Segmentation of one volume with one model.
pub struct Segmenter {
    model: Arc<Model>,
    volume: Arc<Volume>,
    map: FrameMap,
    /// source spacing / model spacing along the model axes
    scale: [f64; 3],
    grid: [usize; 3],
    region: Option<Region>,
    objects: Vec<ObjectState>,
    cancel: Arc<AtomicBool>,
    run_options: Arc<RunOptions>,
    replace_nonfinite: bool,
    /// test-time flips averaged per click (`refine`); the package's choice until the host sets it
    flips: usize,
    /// keep only the mask components a click touches
    keep_clicked: bool,
    /// a click stops the model's running warm-up (false for the warm-up's own segmenter)
    preempts_warm_up: bool,
}

/// The memory one click's paste-back takes: the mask of the source box a crop covers (twice, for
/// the clicked-component rule) and each worker's two trilinear passes. Checked against the budget
/// when a session starts: a volume with voxels far smaller than the model's spacing would make one
/// crop cover gigavoxels.
fn check_click_memory(
    crop: usize,
    dims: [usize; 3],
    scale: [f64; 3],
    threads: usize,
) -> Result<()> {
    // source voxels one crop covers along each model axis (its taps reach one more on each side)
    let ext = [0, 1, 2].map(|a| ((crop as f64 / scale[a]).ceil() + 2.0).min(dims[a] as f64));
    let c = crop as f64;
    let mask = ext[0] * ext[1] * ext[2];
    let passes = 4.0 * (c * c * ext[2] + c * ext[1] * ext[2]);
    let bytes = 2.0 * mask + threads as f64 * passes;
    crate::limits::check_budget(
        bytes.min(u64::MAX as f64) as u64,
        &format!(
            "a click on this volume (one crop covers {} x {} x {} of its voxels)",
            ext[0], ext[1], ext[2]
        ),
    )
}

/// Margin (model voxels) that keeps follow-up clicks on the cached region: a click closer than
/// crop/8 to the region's edge re-encodes a region centred as the contract says.
pub fn reuse_margin(crop: usize) -> f64 {
    (crop / 8) as f64
}

impl Segmenter {
    pub fn new(model: Arc<Model>, volume: Arc<Volume>) -> Result<Segmenter> {
        let m = model.manifest();
        let replace_nonfinite = m.intensity.nonfinite == "zero";
        if volume.nonfinite > 0 && !replace_nonfinite {
            return Err(err(
                Sam3dStatus::NonFinite,
                format!(
                    "the volume has {} NaN or infinite voxels (the model's policy is \"error\")",
                    volume.nonfinite
                ),
            ));
        }
        let map = FrameMap::new(model.frame, &volume.geom);
        let spacing = map.spacing(&volume.geom);
        let scale = [0, 1, 2].map(|a| spacing[a] / m.spacing_mm[a]);
        let dims = map.dims();
        let grid = [0, 1, 2].map(|a| model_size(dims[a], scale[a]));
        check_click_memory(model.crop, dims, scale, model.cpu_threads)?;
        let run_options = Arc::new(RunOptions::new().map_err(|e| rt_err("run options", e))?);
        let inference = m.inference.clone();
        Ok(Segmenter {
            model,
            volume,
            map,
            scale,
            grid,
            region: None,
            objects: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            run_options,
            replace_nonfinite,
            flips: inference.test_time_flips as usize,
            keep_clicked: inference.keep_clicked_components,
            preempts_warm_up: true,
        })
    }

    /// Test-time flips and the clicked-component rule for the next interactions (masks already
    /// computed stay as they are). A new flip count drops the cached region: the next click encodes.
    pub fn set_inference(&mut self, flips: u32, keep_clicked: bool) -> Result<()> {
        if !FLIP_COUNTS.contains(&flips) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("test-time flips must be one of {FLIP_COUNTS:?}, not {flips}"),
            ));
        }
        if flips as usize != self.flips {
            self.region = None;
        }
        self.flips = flips as usize;
        self.keep_clicked = keep_clicked;
        Ok(())
    }

    /// (test-time flips, keep clicked components) in force.
    pub fn inference(&self) -> (u32, bool) {
        (self.flips as u32, self.keep_clicked)
    }

    /// Whether this segmenter's clicks stop the model's running warm-up (`warmup`).
    pub(crate) fn set_preempts_warm_up(&mut self, on: bool) {
        self.preempts_warm_up = on;
    }

    /// A handle that cancels the running interaction from another thread (a cancel while none runs
    /// is dropped when the next one starts: a stale cancel does not stop the user's next click).
    pub fn canceller(&self) -> Canceller {
        Canceller {
            flag: self.cancel.clone(),
            run: self.run_options.clone(),
        }
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    pub fn add_object(&mut self) -> usize {
        self.objects.push(ObjectState::default());
        self.objects.len() - 1
    }

    fn object(&mut self, id: usize) -> Result<&mut ObjectState> {
        let n = self.objects.len();
        self.objects.get_mut(id).ok_or_else(|| {
            err(
                Sam3dStatus::InvalidArgument,
                format!("no object {id} (the session has {n})"),
            )
        })
    }

    /// Continuous source index of a click, checked to lie inside the volume.
    pub fn click_index(&self, p: [f64; 3], coord: Coord) -> Result<[f64; 3]> {
        if p.iter().any(|v| !v.is_finite()) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                "click coordinates must be finite",
            ));
        }
        let g = &self.volume.geom;
        let idx = match coord {
            Coord::Ijk => p,
            Coord::Lps => g.lps_to_index(p),
            Coord::Ras => g.lps_to_index(crate::geometry::ras_to_lps(p)),
        };
        for a in 0..3 {
            if !(idx[a] >= -0.5 && idx[a] <= g.dims[a] as f64 - 0.5) {
                return Err(err(
                    Sam3dStatus::OutOfBounds,
                    format!(
                        "click at voxel index ({:.2}, {:.2}, {:.2}) lies outside the volume {:?}",
                        idx[0], idx[1], idx[2], g.dims
                    ),
                ));
            }
        }
        Ok(idx)
    }

    /// Add a positive click to `object` and recompute its mask.
    pub fn click(
        &mut self,
        object: usize,
        p: [f64; 3],
        coord: Coord,
        progress: Progress,
    ) -> Result<Interaction> {
        let idx = self.click_index(p, coord)?;
        let x = self.map.to_model(idx);
        let g = [0, 1, 2].map(|a| (x[a] + 0.5) * self.scale[a] - 0.5);
        let max = self.model.manifest().prompts.max_points;
        let obj = self.object(object)?;
        if obj.clicks.len() >= max {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("the model takes at most {max} clicks per object"),
            ));
        }
        let mut clicks = obj.clicks.clone();
        clicks.push(g);
        self.apply(object, clicks, progress)
    }

    /// Back to the click set before the last click (several levels). The state changes only when
    /// the recomputation succeeds: a cancelled undo leaves everything as it was.
    pub fn undo(&mut self, object: usize, progress: Progress) -> Result<Interaction> {
        self.travel(object, true, progress)
    }

    /// Forward to the click set the last undo left.
    pub fn redo(&mut self, object: usize, progress: Progress) -> Result<Interaction> {
        self.travel(object, false, progress)
    }

    /// Move one step through the object's history (`back`: undo, else redo).
    fn travel(&mut self, object: usize, back: bool, progress: Progress) -> Result<Interaction> {
        let obj = self.object(object)?;
        let from = if back { &obj.undo } else { &obj.redo };
        let target = from.last().cloned().ok_or_else(|| {
            let what = if back { "undo" } else { "redo" };
            err(
                Sam3dStatus::NothingToDo,
                format!("nothing to {what} for object {object}"),
            )
        })?;
        let res = self.recompute(object, target, progress)?;
        let obj = self.object(object)?;
        let (from, to) = if back {
            (&mut obj.undo, &mut obj.redo)
        } else {
            (&mut obj.redo, &mut obj.undo)
        };
        let target = from.pop().expect("checked above");
        to.push(std::mem::replace(&mut obj.clicks, target));
        Ok(res)
    }

    /// Recompute with a new click set and record it (undo history; redo history cleared).
    fn apply(
        &mut self,
        object: usize,
        clicks: Vec<[f64; 3]>,
        progress: Progress,
    ) -> Result<Interaction> {
        let res = self.recompute(object, clicks.clone(), progress)?;
        let obj = self.object(object)?;
        let prev = std::mem::replace(&mut obj.clicks, clicks);
        obj.undo.push(prev);
        obj.redo.clear();
        Ok(res)
    }

    /// Run (encoder if needed,) decoder and paste-back for a click set; replace the object's mask.
    fn recompute(
        &mut self,
        object: usize,
        clicks: Vec<[f64; 3]>,
        progress: Progress,
    ) -> Result<Interaction> {
        self.cancel.store(false, Ordering::SeqCst);
        let _ = self.run_options.unterminate();
        if self.preempts_warm_up {
            // the warm-up holds the sessions this click needs: the user comes first
            self.model.warm.stop();
        }
        if clicks.is_empty() {
            let obj = self.object(object)?;
            let old = std::mem::take(&mut obj.mask);
            return Ok(Interaction {
                voxels: 0,
                changed: old.bbox,
                encoded: false,
            });
        }
        let c = self.model.crop as i64;
        let margin = reuse_margin(self.model.crop);
        let reuse = self.region.as_ref().is_some_and(|r| {
            clicks.iter().all(|p| {
                (0..3).all(|a| {
                    p[a] >= r.origin[a] as f64 + margin
                        && p[a] <= (r.origin[a] + c) as f64 - 1.0 - margin
                })
            })
        });
        let mut encoded = false;
        if !reuse {
            // centre: round-half-up of the midpoint of the clicks' bounding box (the official rule)
            let centre = [0, 1, 2].map(|a| {
                let lo = clicks.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
                let hi = clicks
                    .iter()
                    .map(|p| p[a])
                    .fold(f64::NEG_INFINITY, f64::max);
                ((lo + hi) / 2.0 + 0.5).floor() as i64
            });
            let origin = centre.map(|v| v - c / 2);
            self.region = None;
            self.region = Some(self.encode(origin, progress)?);
            encoded = true;
        }
        let region = self.region.as_ref().expect("region set above");
        let origin = region.origin;
        self.check_cancel()?;
        progress(Stage::Decode, false);
        let cu = self.model.crop;
        // the mean of the flips' probabilities, each flipped back to the crop's own orientation
        let mut prob: Vec<f32> = Vec::new();
        for (b, cache) in region.caches.iter().enumerate() {
            let pts: Vec<f32> = clicks
                .iter()
                .flat_map(|p| {
                    let q = [0, 1, 2].map(|a| p[a] - origin[a] as f64);
                    flip_point(q, cu, b).map(|v| v as f32)
                })
                .collect();
            let p = self.decode(cache, &pts, clicks.len())?;
            if b == 0 {
                prob = p;
            } else {
                let p = flip_cube(&p, cu, b);
                prob.iter_mut().zip(&p).for_each(|(acc, v)| *acc += v);
            }
        }
        let n = region.caches.len() as f32;
        if n > 1.0 {
            prob.iter_mut().for_each(|v| *v /= n);
        }
        progress(Stage::Decode, true);
        self.check_cancel()?;
        progress(Stage::Paste, false);
        let mut mask = self.paste(&prob, origin)?;
        if self.keep_clicked {
            self.keep_clicked_components(&mut mask, &clicks);
        }
        progress(Stage::Paste, true);
        // a cancel from the last progress callback still leaves the object as it was
        self.check_cancel()?;
        let voxels = mask.data.iter().map(|&v| v as u64).sum();
        let obj = self.object(object)?;
        let old = std::mem::replace(&mut obj.mask, mask);
        let changed = old.bbox.union(&obj.mask.bbox);
        Ok(Interaction {
            voxels,
            changed,
            encoded,
        })
    }

    /// One decoder run on one flip's cache: `pts` (n x 3, crop voxels) -> the crop's probabilities.
    fn decode(&self, cache: &[(String, DynValue)], pts: &[f32], n: usize) -> Result<Vec<f32>> {
        let c = self.model.crop as i64;
        let mut dec = self.model.decoder.lock().unwrap_or_else(|p| p.into_inner());
        let mut inputs: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = Vec::new();
        for (name, value) in cache {
            inputs.push((name.clone().into(), value.into()));
        }
        let pt = TensorRef::from_array_view(([1i64, n as i64, 3], pts))
            .map_err(|e| rt_err("points", e))?;
        inputs.push(("points".into(), pt.into()));
        let out = flushing(|| dec.run_with_options(inputs, &self.run_options))
            .map_err(|e| self.run_error("decoder", e))?;
        let (shape, data) = out["prob"]
            .try_extract_tensor::<f32>()
            .map_err(|e| rt_err("decoder output", e))?;
        let want = [1i64, c, c, c];
        if shape[..] != want[..] {
            return Err(err(
                Sam3dStatus::BadModel,
                format!("decoder returned `prob` of shape {shape:?}, expected {want:?}"),
            ));
        }
        Ok(data.to_vec())
    }

    /// Drop the components of `mask` that no click touches (`refine::keep_seeded_components`); a
    /// click is the source voxel nearest to it.
    fn keep_clicked_components(&self, mask: &mut SubMask, clicks: &[[f64; 3]]) {
        if mask.bbox.is_empty() {
            return;
        }
        let dims = self.volume.geom.dims;
        let ext = [0, 1, 2].map(|p| (mask.bbox.hi[p] - mask.bbox.lo[p]) as usize);
        let seeds: Vec<[usize; 3]> = clicks
            .iter()
            .filter_map(|g| {
                // model grid -> model-frame source index -> source index, nearest voxel
                let x = [0, 1, 2].map(|a| (g[a] + 0.5) / self.scale[a] - 0.5);
                let idx = self.map.to_source(x);
                let v: [i64; 3] = [0, 1, 2].map(|p| {
                    ((idx[p] + 0.5).floor() as i64).clamp(0, dims[p] as i64 - 1)
                        - mask.bbox.lo[p] as i64
                });
                (0..3)
                    .all(|p| v[p] >= 0 && (v[p] as usize) < ext[p])
                    .then(|| v.map(|x| x as usize))
            })
            .collect();
        keep_seeded_components(&mut mask.data, ext, &seeds);
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(err(Sam3dStatus::Cancelled, "cancelled"));
        }
        Ok(())
    }

    fn run_error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        if self.cancel.load(Ordering::SeqCst) {
            err(Sam3dStatus::Cancelled, format!("{what} cancelled"))
        } else {
            rt_err(what, e)
        }
    }

    /// Normalised crop at `origin` (model grid), then the encoder: the region cache.
    fn encode(&self, origin: [i64; 3], progress: Progress) -> Result<Region> {
        let m = self.model.manifest();
        let c = self.model.crop;
        self.check_cancel()?;
        progress(Stage::Resample, false);
        let plan = CropPlan::new(origin, c, self.map.dims(), self.scale);
        let (lo, hi) = (m.intensity.clip[0] as f32, m.intensity.clip[1] as f32);
        let (mean, std) = (m.intensity.mean as f32, m.intensity.std as f32);
        let vol = &self.volume;
        let map = &self.map;
        let zero_bad = self.replace_nonfinite;
        // innermost loop along the model axis that reads the source's fastest axis (i, as stored)
        let mut loops = [0usize, 1, 2];
        loops.sort_by_key(|&a| std::cmp::Reverse(map.perm[a]));
        let crop = extract_crop(
            &plan,
            c,
            loops,
            self.model.cpu_threads,
            m.pad_value_normalised as f32,
            |v| (v.clamp(lo, hi) - mean) / std,
            |a, b, e| {
                let s = [
                    map.src_index(0, a),
                    map.src_index(1, b),
                    map.src_index(2, e),
                ];
                let mut idx = [0usize; 3];
                for ax in 0..3 {
                    idx[map.perm[ax]] = s[ax];
                }
                let v = vol.at(idx[0], idx[1], idx[2]);
                if zero_bad && !v.is_finite() {
                    0.0
                } else {
                    v
                }
            },
        );
        progress(Stage::Resample, true);
        self.check_cancel()?;
        progress(Stage::Encode, false);
        // the flips in reverse, so the unflipped crop (flip 0) is encoded last and moved, not copied
        let mut crop = crop;
        let mut caches = Vec::with_capacity(self.flips);
        for b in (0..self.flips).rev() {
            self.check_cancel()?;
            let cube = if b == 0 {
                std::mem::take(&mut crop)
            } else {
                flip_cube(&crop, c, b)
            };
            caches.push(self.encode_crop(cube)?);
        }
        caches.reverse();
        progress(Stage::Encode, true);
        Ok(Region { origin, caches })
    }

    /// One encoder run on a normalised crop: its outputs by name (the region cache of one flip).
    fn encode_crop(&self, crop: Vec<f32>) -> Result<Vec<(String, DynValue)>> {
        let ci = self.model.crop as i64;
        // owned: IoBinding clones a borrowed input first (and ort rc.15 deadlocks doing so)
        let input = ort::value::Tensor::from_array(([1i64, 1, ci, ci, ci], crop))
            .map_err(|e| rt_err("crop", e))?;
        let mut enc = self.model.encoder.lock().unwrap_or_else(|p| p.into_inner());
        // IO binding: the outputs are allocated where the provider computes them (device memory
        // on CUDA/TensorRT) and stay there for the decoder's runs
        let mut binding = enc
            .create_binding()
            .map_err(|e| rt_err("encoder binding", e))?;
        binding
            .bind_input("crop", &input)
            .map_err(|e| rt_err("crop", e))?;
        let mem = self
            .model
            .cache_memory
            .info()
            .map_err(|e| rt_err("cache memory", e))?;
        for name in &self.model.cache_names {
            binding
                .bind_output_to_device(name.as_str(), &mem)
                .map_err(|e| rt_err("encoder output", e))?;
        }
        let mut out = flushing(|| enc.run_binding_with_options(&binding, &self.run_options))
            .map_err(|e| self.run_error("encoder", e))?;
        let mut cache = Vec::new();
        for name in &self.model.cache_names {
            let value = out
                .remove(name.as_str())
                .ok_or_else(|| err(Sam3dStatus::BadModel, format!("encoder gave no `{name}`")))?;
            let ok = matches!(value.dtype(), ort::value::ValueType::Tensor { ty, .. }
                if *ty == ort::value::TensorElementType::Float32);
            if !ok {
                return Err(err(
                    Sam3dStatus::BadModel,
                    format!("encoder output `{name}` is not a float32 tensor"),
                ));
            }
            cache.push((name.clone(), value));
        }
        Ok(cache)
    }

    /// Resample the crop's probabilities (zero elsewhere) back to the source grid, threshold.
    fn paste(&self, prob: &[f32], origin: [i64; 3]) -> Result<SubMask> {
        let c = self.model.crop as i64;
        let thr = self.model.manifest().threshold as f32;
        let dims = self.map.dims();
        let taps: [Vec<_>; 3] = [0, 1, 2].map(|a| {
            back_taps(
                dims[a],
                self.grid[a],
                origin[a].max(0),
                (origin[a] + c).min(self.grid[a] as i64),
            )
        });
        if taps.iter().any(|t| t.is_empty()) {
            return Ok(SubMask::default());
        }
        // box in source index space
        let mut bbox = VoxelBox::default();
        for a in 0..3 {
            let (j0, j1) = (taps[a][0].0, taps[a][taps[a].len() - 1].0);
            let (s0, s1) = (self.map.src_index(a, j0), self.map.src_index(a, j1));
            let p = self.map.perm[a];
            bbox.lo[p] = s0.min(s1) as u64;
            bbox.hi[p] = s0.max(s1) as u64 + 1;
        }
        let ext = [0, 1, 2].map(|p| (bbox.hi[p] - bbox.lo[p]) as usize);
        let mut data =
            crate::limits::filled_vec(ext[0] * ext[1] * ext[2], 0u8, "the click's mask")?;
        // sub-mask offset of each tap along each model axis (source order, flips applied)
        let offs: [Vec<usize>; 3] = [0, 1, 2].map(|a| {
            let (p, stride) = (
                self.map.perm[a],
                [1, ext[0], ext[0] * ext[1]][self.map.perm[a]],
            );
            taps[a]
                .iter()
                .map(|&(j, _)| (self.map.src_index(a, j) - bbox.lo[p] as usize) * stride)
                .collect()
        });
        let t = taps
            .each_ref()
            .map(|v| v.iter().map(|&(_, t)| t).collect::<Vec<_>>());
        // workers split the source's slowest axis (k): each owns whole k-slabs of the sub-mask
        let split = (0..3).find(|&a| self.map.perm[a] == 2).unwrap_or(0);
        paste_threshold(
            prob,
            c as usize,
            origin,
            [&t[0], &t[1], &t[2]],
            [&offs[0], &offs[1], &offs[2]],
            split,
            ext[0] * ext[1],
            thr,
            self.model.cpu_threads,
            &mut data,
        );
        Ok(SubMask { bbox, data })
    }

    /// The object's full mask (i fastest) into `out` (length = voxel count).
    pub fn write_mask(&self, object: usize, out: &mut [u8]) -> Result<()> {
        let n = self.volume.geom.voxel_count()?;
        if out.len() != n {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!(
                    "mask buffer holds {} bytes, the volume has {n} voxels",
                    out.len()
                ),
            ));
        }
        let obj = self
            .objects
            .get(object)
            .ok_or_else(|| err(Sam3dStatus::InvalidArgument, format!("no object {object}")))?;
        out.fill(0);
        let m = &obj.mask;
        if m.bbox.is_empty() {
            return Ok(());
        }
        let [nx, ny, _] = self.volume.geom.dims;
        let ext = [0, 1, 2].map(|p| (m.bbox.hi[p] - m.bbox.lo[p]) as usize);
        let lo = m.bbox.lo.map(|v| v as usize);
        for k in 0..ext[2] {
            for j in 0..ext[1] {
                let src = &m.data[ext[0] * (j + ext[1] * k)..][..ext[0]];
                let dst = lo[0] + nx * ((lo[1] + j) + ny * (lo[2] + k));
                out[dst..dst + ext[0]].copy_from_slice(src);
            }
        }
        Ok(())
    }

    pub fn mask_vec(&self, object: usize) -> Result<Vec<u8>> {
        let n = self.volume.geom.voxel_count()?;
        let mut v = crate::limits::filled_vec(n, 0u8, "the mask")?;
        self.write_mask(object, &mut v)?;
        Ok(v)
    }

    /// Number of clicks of an object (after undo/redo).
    pub fn clicks(&self, object: usize) -> Option<usize> {
        self.objects.get(object).map(|o| o.clicks.len())
    }
}

/// Cancels a segmenter's work from another thread.
#[derive(Clone)]
pub struct Canceller {
    flag: Arc<AtomicBool>,
    run: Arc<RunOptions>,
}

impl Canceller {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.run.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-buffer field's value: a varint or length-delimited bytes.
    #[derive(Clone, Copy)]
    enum F<'a> {
        Int(u64),
        Bytes(&'a [u8]),
    }

    fn field(out: &mut Vec<u8>, number: u64, value: F) {
        fn varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        match value {
            F::Int(v) => {
                varint(out, number << 3);
                varint(out, v);
            }
            F::Bytes(bytes) => {
                varint(out, number << 3 | 2);
                varint(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
    }

    fn message(fields: &[(u64, F)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            field(&mut out, *n, *v);
        }
        out
    }

    /// ONNX model `y = x * x`, x and y float32 of shape (4,) (onnx.proto field numbers).
    fn square_model() -> Vec<u8> {
        let dim = message(&[(1, F::Int(4))]); // Dimension.dim_value
        let shape = message(&[(1, F::Bytes(&dim))]); // TensorShapeProto.dim
        let tensor = message(&[(1, F::Int(1)), (2, F::Bytes(&shape))]); // elem_type FLOAT, shape
        let ty = message(&[(1, F::Bytes(&tensor))]); // TypeProto.tensor_type
        let info = |name: &[u8]| message(&[(1, F::Bytes(name)), (2, F::Bytes(&ty))]);
        let node = message(&[
            (1, F::Bytes(b"x")),
            (1, F::Bytes(b"x")),
            (2, F::Bytes(b"y")),
            (4, F::Bytes(b"Mul")),
        ]);
        let graph = message(&[
            (1, F::Bytes(&node)),
            (2, F::Bytes(b"square")),
            (11, F::Bytes(&info(b"x"))),
            (12, F::Bytes(&info(b"y"))),
        ]);
        let opset = message(&[(2, F::Int(13))]);
        message(&[(1, F::Int(8)), (7, F::Bytes(&graph)), (8, F::Bytes(&opset))])
    }

    /// A run flushes subnormals on the calling thread, whichever thread that is, and leaves the
    /// thread's mode as it was; ONNX Runtime alone does not (the premise, checked too). One
    /// intra-op thread, so the calling thread computes the product.
    #[test]
    fn runs_flush_subnormals_on_the_calling_thread() {
        let Ok(rt) = crate::runtime::load(None) else {
            panic!("ONNX Runtime: run `make ort` and set SAM3D_ORT_LIBRARY");
        };
        let file = std::env::temp_dir().join(format!("sam3d-square-{}.onnx", std::process::id()));
        std::fs::write(&file, square_model()).unwrap();
        let opts = ModelOptions {
            threads: 1,
            ..Default::default()
        };
        let made = make_session(&rt, &file, &opts, false);
        std::fs::remove_file(&file).ok();
        let (mut session, _, _) = made.unwrap();
        std::thread::spawn(move || {
            let before = crate::fpmode::mode();
            let x = [1e-20f32, 2e-20, 3e-20, 1.0];
            let mut square = |flush: bool| -> Vec<f32> {
                let input = TensorRef::from_array_view(([4i64], &x[..])).unwrap();
                let run = || {
                    session.run(ort::inputs!["x" => input]).unwrap()["y"]
                        .try_extract_tensor::<f32>()
                        .unwrap()
                        .1
                        .to_vec()
                };
                if flush {
                    flushing(run)
                } else {
                    run()
                }
            };
            let plain = square(false);
            assert!(
                plain[0] > 0.0 && plain[0] < f32::MIN_POSITIVE,
                "premise: subnormal {plain:?}"
            );
            assert_eq!(square(true), vec![0.0, 0.0, 0.0, 1.0]);
            assert_eq!(
                crate::fpmode::mode(),
                before,
                "the thread's mode is restored"
            );
        })
        .join()
        .unwrap();
    }
}
