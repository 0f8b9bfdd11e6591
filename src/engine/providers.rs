//! ONNX Runtime sessions for one graph on the execution provider asked for (CPU, CUDA, TensorRT,
//! OpenVINO),
//! with the session settings the engine relies on; a provider that cannot be had falls back to the
//! CPU with the reason recorded, never silently.

use std::path::Path;

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
use ort::memory::DeviceType;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use super::rt_err;
use super::{Device, ModelOptions};
use crate::error::{err, Result, Sam3dStatus};
use crate::fpmode::ModeGuard;
use crate::runtime::{Runtime, OPENVINO_EP};

/// A session for one graph; `shared_arena`: its CPU memory comes from the environment's arena
/// (`arena`), which the caller holds a lease on.
pub(super) fn make_session(
    runtime: &Runtime,
    file: &Path,
    opts: &ModelOptions,
    shared_arena: bool,
) -> Result<(Session, String, String)> {
    let (session, provider, note) = with_provider(runtime, file, opts, shared_arena)?;
    match session {
        Ok(session) => Ok((session, provider, note)),
        // a provider that takes the options but fails on the graph itself (OpenVINO compiles it
        // here): the CPU provider, with the reason, as when it is missing
        Err(e) if provider != "CPU" => {
            let cpu = ModelOptions {
                device: Device::Cpu,
                ..opts.clone()
            };
            let (session, _, _) = with_provider(runtime, file, &cpu, shared_arena)?;
            let session = session.map_err(|e| load_error(file, e))?;
            Ok((session, "CPU".to_string(), fallback_note(&provider, e)))
        }
        Err(e) => Err(load_error(file, e)),
    }
}

fn load_error(file: &Path, e: ort::Error) -> crate::error::Error {
    err(
        Sam3dStatus::BadModel,
        format!(
            "{}: ONNX Runtime cannot load the graph: {e}",
            file.display()
        ),
    )
}

/// The session for `file` on the provider asked for (or the CPU when it cannot be registered), the
/// provider and a note; the session is Err when ONNX Runtime or the provider fails on the graph.
#[allow(clippy::type_complexity)]
fn with_provider(
    runtime: &Runtime,
    file: &Path,
    opts: &ModelOptions,
    shared_arena: bool,
) -> Result<(std::result::Result<Session, ort::Error>, String, String)> {
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
    // ONNX Runtime's intra-op workers spin after each run by default, which takes the cores from
    // the next short run and from the engine's own loops on small machines (a demo click took
    // almost twice as long, docs/performance.md). SAM3D_INTRA_OP_SPINNING=1 restores the default.
    let spin = std::env::var("SAM3D_INTRA_OP_SPINNING").is_ok_and(|v| v == "1");
    builder = builder
        .with_intra_op_spinning(spin)
        .map_err(|e| rt_err("spinning", e))?;
    // Subnormal floats as zero in ONNX Runtime's worker threads. The shifted-window blocks add the
    // official -100 mask inside the attention logits, so the flash-attention loop rescales by
    // exp(-100) ~ 4e-44, a subnormal: on Intel cores each such operation takes a microcode assist
    // (the paper-size encoder ran about twice as long without this; AMD showed no such cost;
    // docs/performance.md). Only values below 1.2e-38 change, and those to 0. This covers ONNX
    // Runtime's pool threads; `flushing` covers the thread that calls a run.
    builder = builder
        .with_flush_to_zero()
        .map_err(|e| rt_err("denormals as zero", e))?;
    // No memory pattern. With it, ONNX Runtime serves a graph's first run from its arena piece by
    // piece, then plans one block of the whole run's size for every later run with the same input
    // shapes while the arena keeps the first run's pieces: the paper-size engine's peak RSS almost
    // doubled at the second encoding (docs/performance.md), and the decoder would add a block per
    // click count. Without it the encoder is no slower, and the arena still reuses memory.
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
        // (which more than doubled the paper-size encoder's peak GPU memory)
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
    if opts.device == Device::OpenVino {
        match openvino(runtime, builder, opts) {
            Ok((b, label, n)) => (builder, provider, note) = (b, label, n),
            Err((b, why)) => (builder, note) = (b, fallback_note("OpenVINO", why)),
        }
    }
    let attempt = match opts.device {
        Device::Cpu | Device::OpenVino => None,
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
            Err(e) => note = fallback_note(name, e),
        }
    }
    // ONNX Runtime sets flush-to-zero on the thread that initialises the process's first session,
    // for good; the host's thread gets its own mode back (`fpmode`)
    let keep_mode = ModeGuard::keep();
    let session = builder.commit_from_file(file);
    drop(keep_mode);
    if session.is_ok() && provider.starts_with("OpenVINO") && uses_onnxruntime_operators(file) {
        let more = format!(
            "{} has ONNX Runtime's own operators (com.microsoft), which OpenVINO leaves to the CPU \
             provider (slower, more memory); the package's standard-operator variant runs whole on \
             OpenVINO (python -m sam3d_onnx quantize PACKAGE OUT --precision standard)",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        note = join_notes(note, more);
    }
    Ok((session, provider, note))
}

/// The note of a provider that cannot be had: the model runs on the CPU provider, and why.
fn fallback_note(provider: &str, why: impl std::fmt::Display) -> String {
    format!("{provider} unavailable, running on CPU: {why}")
}

/// Two notes as one ("a; b"), either possibly empty.
pub(super) fn join_notes(a: String, b: String) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b,
        (false, false) => format!("{a}; {b}"),
    }
}

/// Whether a graph file uses ONNX Runtime's `com.microsoft` operator domain (the exporter's fused
/// attention and GELU): the domain's name appears in the file's operator-set imports only then. The
/// graph file holds no weights when they are external, and is read whole otherwise (the package's
/// hash check read it already).
fn uses_onnxruntime_operators(file: &Path) -> bool {
    const DOMAIN: &[u8] = b"com.microsoft";
    std::fs::read(file).is_ok_and(|bytes| bytes.windows(DOMAIN.len()).any(|w| w == DOMAIN))
}

/// Both graphs on OpenVINO's CPU device: the builder with OpenVINO appended, the provider as
/// reported ("OpenVINO fp32" or "OpenVINO bf16") and a note; or the builder untouched and why
/// OpenVINO cannot be had (the caller falls back to the CPU provider).
///
/// Two ways in, tried in this order: an ONNX Runtime built with the OpenVINO provider (the
/// `onnxruntime-openvino` wheel, `make ort ORT_FLAVOR=openvino`), which takes any x86-64 CPU
/// OpenVINO supports; else Intel's plugin execution provider registered beside a stock ONNX
/// Runtime (`make ort ORT_OPENVINO=1`), which offers only Intel CPUs.
#[allow(clippy::result_large_err)]
fn openvino(
    runtime: &Runtime,
    mut builder: SessionBuilder,
    opts: &ModelOptions,
) -> std::result::Result<(SessionBuilder, String, String), (SessionBuilder, String)> {
    let (bf16, note) = match (opts.bf16, cpu_has_bf16()) {
        (true, false) => (
            false,
            "bf16 asked for, but this CPU has neither AMX-BF16 nor AVX512-BF16: fp32".to_string(),
        ),
        (b, _) => (b, String::new()),
    };
    let label = format!("OpenVINO {}", if bf16 { "bf16" } else { "fp32" });
    // OpenVINO's CPU settings: the precision it computes in (it would pick bf16 by itself on a
    // CPU with AMX; exact fp32 is the default here), one stream for the lowest latency, and the
    // engine's thread count
    let mut cpu = vec![
        format!(
            "\"INFERENCE_PRECISION_HINT\": \"{}\"",
            if bf16 { "bf16" } else { "f32" }
        ),
        "\"PERFORMANCE_HINT\": \"LATENCY\"".to_string(),
        // subnormals as zero in OpenVINO's own threads, as the CPU provider's are (the shifted
        // windows' exp(-100) factors would otherwise take microcode assists on Intel cores)
        "\"CPU_DENORMALS_OPTIMIZATION\": \"YES\"".to_string(),
    ];
    if opts.threads > 0 {
        cpu.push(format!("\"INFERENCE_NUM_THREADS\": \"{}\"", opts.threads));
    }
    let load_config = format!("{{\"CPU\": {{{}}}}}", cpu.join(", "));
    let cache_dir = opts.cache_dir.as_ref().map(|d| d.display().to_string());

    if runtime.has_built_in_openvino() {
        let mut ep = ort::ep::OpenVINO::default()
            .with_device_type("CPU")
            .with_arbitrary_config("load_config", &load_config);
        if opts.threads > 0 {
            ep = ep.with_num_threads(opts.threads);
        }
        if let Some(dir) = &cache_dir {
            ep = ep.with_cache_dir(dir);
        }
        return match ep.register(&mut builder) {
            Ok(()) => Ok((builder, label, note)),
            Err(e) => Err((
                builder,
                format!("the OpenVINO provider refused the session options: {e}"),
            )),
        };
    }

    if let Err(why) = runtime.openvino_plugin() {
        return Err((
            builder,
            format!("this ONNX Runtime has no OpenVINO provider built in, and {why}"),
        ));
    }
    let env = runtime.environment();
    let devices: Vec<_> = env
        .devices()
        .filter(|d| {
            d.ep().is_ok_and(|ep| ep == OPENVINO_EP) && d.hardware_device().ty() == DeviceType::CPU
        })
        .collect();
    if devices.is_empty() {
        // the plugin offers only devices of its vendor (Intel): an AMD CPU gets none
        let vendor = env
            .devices()
            .find(|d| d.hardware_device().ty() == DeviceType::CPU)
            .and_then(|d| d.hardware_device().vendor().ok().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        return Err((
            builder,
            format!(
                "the OpenVINO plugin offers no device for this CPU (vendor {vendor}); it takes \
                 Intel CPUs (an ONNX Runtime built with OpenVINO, `make ort ORT_FLAVOR=openvino`, \
                 takes others)"
            ),
        ));
    }
    let mut options = vec![(format!("{OPENVINO_EP}.load_config"), load_config)];
    if let Some(dir) = cache_dir {
        options.push((format!("{OPENVINO_EP}.cache_dir"), dir));
    }
    match builder.with_devices(devices, Some(&options)) {
        Ok(b) => Ok((b, label, note)),
        Err(e) => {
            let why = format!("the OpenVINO provider refused the session options: {e}");
            Err((e.recover(), why))
        }
    }
}

/// Whether the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16), as the kernel reports
/// its flags (what `lscpu` shows).
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .take(1)
            .any(|l| {
                l.split_whitespace()
                    .any(|f| f == "amx_bf16" || f == "avx512_bf16")
            })
    })
}
