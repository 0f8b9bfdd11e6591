//! The inference pipeline of the model-package contract: a `Model` (two ONNX Runtime sessions,
//! shared by any number of `Segmenter`s on any threads) and a `Segmenter` (one volume, a cached
//! encoder region, several objects with their clicks, undo and redo).
//!
//! Files: `model` (a package loaded, its options, the thread policy), `providers` (ONNX Runtime
//! sessions per execution provider), `segmenter` (a volume's objects, their clicks and history,
//! masks, prompts), `submask` (masks stored as boxes and how interactions combine them), `pipeline`
//! (one interaction: crop, encoder, decoder, paste-back, zoom-out), `warmup` (a model's
//! first runs before the user's first click).

mod model;
mod pipeline;
mod providers;
mod segmenter;
mod submask;
mod warmup;

pub use model::{Device, GpuOptions, Model, ModelOptions};
pub use providers::cpu_has_bf16;
pub use segmenter::{
    Canceller, Coord, Interaction, Progress, Segmenter, Stage, VoxelBox, ZOOM_LEVELS,
};

use crate::error::{err, Error, Sam3dStatus};
use crate::fpmode::ModeGuard;

/// `run` (one ONNX Runtime run) with subnormals flushed on the calling thread as on ONNX Runtime's
/// own pool threads (`with_flush_to_zero` in `make_session`), whichever thread the host calls from;
/// the thread's mode is restored afterwards (`fpmode`).
pub(crate) fn flushing<R>(run: impl FnOnce() -> R) -> R {
    let _mode = ModeGuard::flush_subnormals();
    run()
}

pub(crate) fn rt_err(what: &str, e: impl std::fmt::Display) -> Error {
    err(Sam3dStatus::Runtime, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests;
