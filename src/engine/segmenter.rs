//! A `Segmenter`: one volume with one model, its objects, their clicks and history, and masks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ort::session::RunOptions;
use ort::value::DynValue;

use super::{rt_err, Model};
use crate::error::{err, Result, Sam3dStatus};
use crate::frame::FrameMap;
use crate::refine::FLIP_COUNTS;
use crate::resample::model_size;
use crate::volume::Volume;

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
pub(super) struct SubMask {
    pub(super) bbox: VoxelBox,
    pub(super) data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ObjectState {
    pub(super) clicks: Vec<[f64; 3]>,
    pub(super) undo: Vec<Vec<[f64; 3]>>,
    pub(super) redo: Vec<Vec<[f64; 3]>>,
    pub(super) mask: SubMask,
}

pub(super) struct Region {
    pub(super) origin: [i64; 3],
    /// per test-time flip, the encoder's outputs by name, in the memory of the model's provider
    pub(super) caches: Vec<Vec<(String, DynValue)>>,
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
    pub(super) model: Arc<Model>,
    pub(super) volume: Arc<Volume>,
    pub(super) map: FrameMap,
    /// source spacing / model spacing along the model axes
    pub(super) scale: [f64; 3],
    pub(super) grid: [usize; 3],
    pub(super) region: Option<Region>,
    pub(super) objects: Vec<ObjectState>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) run_options: Arc<RunOptions>,
    pub(super) replace_nonfinite: bool,
    /// test-time flips averaged per click (`refine`); the package's choice until the host sets it
    pub(super) flips: usize,
    /// keep only the mask components a click touches
    pub(super) keep_clicked: bool,
    /// a click stops the model's running warm-up (false for the warm-up's own segmenter)
    pub(super) preempts_warm_up: bool,
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
        for a in 0..3 {
            let extent = dims[a] as f64 * scale[a];
            if extent > crate::limits::MAX_MODEL_EXTENT {
                return Err(err(
                    Sam3dStatus::TooLarge,
                    format!(
                        "the volume spans {extent:e} of the model's voxels along an axis (its \
                         spacing {:?} mm against the model's {:?} mm); the limit is {:e}",
                        spacing,
                        m.spacing_mm,
                        crate::limits::MAX_MODEL_EXTENT
                    ),
                ));
            }
        }
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

    pub(super) fn object(&mut self, id: usize) -> Result<&mut ObjectState> {
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
