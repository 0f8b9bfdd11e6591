//! Warm-up: one click's work on a synthetic volume, so that the host's first real click does not
//! pay for a session's first runs. ONNX Runtime grows its arena during them and the process
//! page-faults that memory (a paper-size encoder's first pass is seconds slower than later ones,
//! docs/performance.md); on CUDA, kernel selection and lazy module loading happen there.
//!
//! A host calls it right after opening a model, on a worker thread, while the user picks a volume.
//! A click on any session of the model stops a running warm-up (it would otherwise wait for the
//! sessions the warm-up holds), and so does `cancel_warm_up`.

use std::sync::{Arc, Mutex};

use super::{Canceller, Coord, Model, Progress, Segmenter};
use crate::error::{err, Result, Sam3dStatus};
use crate::geometry::Geometry;
use crate::volume::Volume;

/// The model's running warm-up, if one runs.
#[derive(Default)]
pub struct WarmUpSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// the running warm-up's canceller
    running: Option<Canceller>,
    /// asked to stop: also seen at the warm-up's next stage, since a click's start clears its
    /// segmenter's cancel flag (a stop that came just before would be lost)
    stopped: bool,
}

impl WarmUpSlot {
    /// Stop the running warm-up, if any (its call returns `Cancelled`).
    pub fn stop(&self) {
        let mut s = self.lock();
        if let Some(c) = s.running.as_ref() {
            c.cancel();
            s.stopped = true;
        }
    }

    fn stopped(&self) -> bool {
        self.lock().stopped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Clears the slot when the warm-up ends, however it ends.
struct Running<'a>(&'a WarmUpSlot);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.lock() = SlotState::default();
    }
}

impl Model {
    /// One click at the centre of a synthetic crop-sized volume (the intensity mean everywhere),
    /// with the package's inference settings; nothing of it is kept but ONNX Runtime's memory and
    /// state. `Cancelled` when a click or `cancel_warm_up` stopped it; `InvalidArgument` when a
    /// warm-up of this model is already running.
    pub fn warm_up(self: &Arc<Model>) -> Result<()> {
        self.warm_up_with(&mut |_, _| {})
    }

    /// `warm_up` with a progress callback (called as for a click).
    pub fn warm_up_with(self: &Arc<Model>, progress: Progress) -> Result<()> {
        let m = self.manifest();
        let c = self.crop;
        let geom = Geometry::new([c; 3], m.spacing_mm, [0.0; 3], IDENTITY)?;
        let volume = Volume::new(geom, vec![m.intensity.mean as f32; c * c * c])?;
        let mut seg = Segmenter::new(self.clone(), Arc::new(volume))?;
        seg.set_preempts_warm_up(false);
        let canceller = seg.canceller();
        {
            let mut slot = self.warm.lock();
            if slot.running.is_some() {
                return Err(err(
                    Sam3dStatus::InvalidArgument,
                    "a warm-up of this model is already running",
                ));
            }
            slot.running = Some(canceller.clone());
        }
        let _running = Running(&self.warm);
        let object = seg.add_object();
        let centre = [(c / 2) as f64; 3];
        let mut stages = |stage, done| {
            if self.warm.stopped() {
                canceller.cancel();
            }
            progress(stage, done)
        };
        match seg.click(object, centre, Coord::Ijk, &mut stages) {
            Ok(_) => Ok(()),
            Err(e) if e.status == Sam3dStatus::Cancelled => Err(err(
                Sam3dStatus::Cancelled,
                "warm-up stopped before it finished (a click needed the model, or it was cancelled)",
            )),
            Err(e) => Err(e),
        }
    }

    /// Stop this model's running warm-up, if any; callable from any thread.
    pub fn cancel_warm_up(&self) {
        self.warm.stop();
    }
}

const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
