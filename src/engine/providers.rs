//! ONNX Runtime sessions for one graph on the execution provider asked for (CPU, CUDA, TensorRT),
//! with the session settings the engine relies on; a provider that cannot be had falls back to the
//! CPU with the reason recorded, never silently.

use std::path::Path;

use ort::ep::ExecutionProvider;
use ort::session::{builder::GraphOptimizationLevel, Session};

use super::rt_err;
use super::{Device, ModelOptions};
use crate::error::{err, Result, Sam3dStatus};
use crate::fpmode::ModeGuard;
use crate::runtime::Runtime;

/// A session for one graph; `shared_arena`: its CPU memory comes from the environment's arena
/// (`arena`), which the caller holds a lease on.
pub(super) fn make_session(
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
