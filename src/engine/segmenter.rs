//! A `Segmenter`: one volume with one model, its objects, their clicks and history, and masks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ort::session::RunOptions;
use ort::value::DynValue;

use super::{rt_err, Model};
use crate::error::{err, Result, Sam3dStatus};
use crate::frame::FrameMap;
use crate::refine::FLIP_COUNTS;
use crate::volume::Volume;

pub(super) use super::submask::SubMask;

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

/// A click in the model grid of zoom level 1 (continuous, voxel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Click {
    pub(super) g: [f64; 3],
    pub(super) positive: bool,
}

/// A box prompt: its corners in the model grid of zoom level 1, the source voxels the mask is
/// clipped to, and the zoom at which the box fits the crop with a margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct BoxPrompt {
    pub(super) lo: [f64; 3],
    pub(super) hi: [f64; 3],
    pub(super) clip: VoxelBox,
    pub(super) zoom: f64,
}

/// Everything the user gave an object; its mask is a function of this alone (undo and redo move
/// between prompts and recompute).
#[derive(Debug, Clone, Default)]
pub(super) struct Prompt {
    pub(super) clicks: Vec<Click>,
    pub(super) bx: Option<BoxPrompt>,
    /// a segment the host started from (`set_mask`)
    pub(super) start: Option<Arc<SubMask>>,
}

impl Prompt {
    /// A positive click or a box: something the model can answer.
    pub(super) fn has_positive(&self) -> bool {
        self.bx.is_some() || self.clicks.iter().any(|c| c.positive)
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct ObjectState {
    pub(super) prompt: Prompt,
    pub(super) undo: Vec<Prompt>,
    pub(super) redo: Vec<Prompt>,
    pub(super) mask: SubMask,
    /// the zoom of the coarsest level that contributed to the mask (0: no prediction)
    pub(super) zoom: f64,
}

pub(super) struct Region {
    /// model spacing multiple this region was resampled at (1: the package's spacing)
    pub(super) zoom: f64,
    pub(super) origin: [i64; 3],
    /// the normalised crop the encoder saw (unflipped; D, H, W, W fastest)
    pub(super) crop: Vec<f32>,
    /// per test-time flip, the encoder's outputs by name, in the memory of the model's provider
    /// (None: not encoded yet; a coarser level's probe encodes the unflipped crop alone)
    pub(super) caches: Vec<Option<Vec<(String, DynValue)>>>,
    /// interaction count when it was last used (the least recently used region goes first)
    pub(super) used: u64,
}

/// Regions kept per session: one per automatic zoom level and one for a box.
pub(super) const MAX_REGIONS: usize = 4;

/// Automatic zoom-out levels a session may use: 1 (off), 2 or 4 times the model's spacing.
pub const ZOOM_LEVELS: [u32; 3] = [1, 2, 4];

/// What one interaction did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interaction {
    /// voxels in the object's mask
    pub voxels: u64,
    /// the voxels whose value may have changed
    pub changed: VoxelBox,
    /// the encoder ran for this interaction (false: the cached regions served it)
    pub encoded: bool,
    /// the model spacing multiple of the coarsest region that answered: 1 the package's spacing,
    /// 2 or 4 after automatic zoom-out, the box's zoom for a box prompt; 0 when no model ran
    pub zoom: f64,
}

pub type Progress<'a> = &'a mut dyn FnMut(Stage, bool);

/// Segmentation of one volume with one model.
pub struct Segmenter {
    pub(super) model: Arc<Model>,
    pub(super) volume: Arc<Volume>,
    pub(super) map: FrameMap,
    /// source spacing / model spacing along the model axes
    pub(super) scale: [f64; 3],
    pub(super) regions: Vec<Region>,
    /// interactions so far (the regions' use clock)
    pub(super) tick: u64,
    /// the largest automatic zoom-out (`ZOOM_LEVELS`)
    pub(super) max_zoom: u32,
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
/// when a session starts (at the package's spacing; coarser levels are checked before they run): a
/// volume with voxels far smaller than the model's spacing would make one crop cover gigavoxels.
pub(super) fn check_click_memory(
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
        check_click_memory(model.crop, dims, scale, model.cpu_threads)?;
        let run_options = Arc::new(RunOptions::new().map_err(|e| rt_err("run options", e))?);
        let inference = m.inference.clone();
        Ok(Segmenter {
            model,
            volume,
            map,
            scale,
            regions: Vec::new(),
            tick: 0,
            max_zoom: 4,
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
            self.regions.clear();
        }
        self.flips = flips as usize;
        self.keep_clicked = keep_clicked;
        Ok(())
    }

    /// (test-time flips, keep clicked components) in force.
    pub fn inference(&self) -> (u32, bool) {
        (self.flips as u32, self.keep_clicked)
    }

    /// The largest automatic zoom-out for the next interactions: 1 (off), 2 or 4 times the model's
    /// spacing (`ZOOM_LEVELS`). Masks already computed stay as they are.
    pub fn set_zoom_out(&mut self, max_zoom: u32) -> Result<()> {
        Self::check_zoom_out(max_zoom)?;
        self.max_zoom = max_zoom;
        Ok(())
    }

    /// A largest zoom-out value `set_zoom_out` takes (`ZOOM_LEVELS`).
    pub fn check_zoom_out(max_zoom: u32) -> Result<()> {
        if !ZOOM_LEVELS.contains(&max_zoom) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("the largest zoom-out must be one of {ZOOM_LEVELS:?}, not {max_zoom}"),
            ));
        }
        Ok(())
    }

    /// The largest automatic zoom-out in force.
    pub fn zoom_out(&self) -> u32 {
        self.max_zoom
    }

    /// The zoom of the region that answered the object's last interaction (`Interaction::zoom`).
    pub fn object_zoom(&self, object: usize) -> Option<f64> {
        self.objects.get(object).map(|o| o.zoom)
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

    /// Continuous source index of a point given in `coord` (not checked against the volume).
    fn to_index(&self, p: [f64; 3], coord: Coord) -> [f64; 3] {
        let g = &self.volume.geom;
        match coord {
            Coord::Ijk => p,
            Coord::Lps => g.lps_to_index(p),
            Coord::Ras => g.lps_to_index(crate::geometry::ras_to_lps(p)),
        }
    }

    /// The volume's voxel count, when a mask buffer of `len` bytes (one per voxel) matches it.
    pub fn check_mask_buffer(&self, len: usize) -> Result<usize> {
        let n = self.volume.geom.voxel_count()?;
        if len != n {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("mask buffer holds {len} bytes, the volume has {n} voxels"),
            ));
        }
        Ok(n)
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
        let idx = self.to_index(p, coord);
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
        self.click_labeled(object, p, coord, true, progress)
    }

    /// What the package accepts, for messages.
    fn prompts_accepted(&self) -> String {
        let p = &self.model.manifest().prompts;
        let mut kinds = vec!["positive clicks"];
        if p.negative_points {
            kinds.push("negative clicks");
        }
        kinds.push("boxes (placed by the engine)");
        kinds.push("a starting segment");
        kinds.join(", ")
    }

    /// Add a click to `object` (`positive` false: a negative click, "not this", where the package
    /// accepts them) and recompute its mask.
    pub fn click_labeled(
        &mut self,
        object: usize,
        p: [f64; 3],
        coord: Coord,
        positive: bool,
        progress: Progress,
    ) -> Result<Interaction> {
        if !positive && !self.model.manifest().prompts.negative_points {
            return Err(err(
                Sam3dStatus::Unsupported,
                format!(
                    "the model package `{}` was trained without negative clicks; it accepts {}",
                    self.model.manifest().name,
                    self.prompts_accepted()
                ),
            ));
        }
        let idx = self.click_index(p, coord)?;
        let g = self.to_grid(idx);
        let max = self.model.manifest().prompts.max_points;
        let obj = self.object(object)?;
        // a box's centre may be one of the decoder's points
        if obj.prompt.clicks.len() + obj.prompt.bx.is_some() as usize >= max {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("the model takes at most {max} clicks per object"),
            ));
        }
        let mut prompt = obj.prompt.clone();
        prompt.clicks.push(Click { g, positive });
        self.apply(object, prompt, progress)
    }

    /// Source index -> model grid of zoom level 1.
    fn to_grid(&self, idx: [f64; 3]) -> [f64; 3] {
        let x = self.map.to_model(idx);
        [0, 1, 2].map(|a| (x[a] + 0.5) * self.scale[a] - 0.5)
    }

    /// Give `object` a box (two opposite corners in `coord`): the crop is placed on the box and
    /// resampled so that the box fits with a margin; the box's centre is the positive prompt while
    /// the object has no positive click; the mask is clipped to the box. Replaces an earlier box.
    pub fn set_box(
        &mut self,
        object: usize,
        a: [f64; 3],
        b: [f64; 3],
        coord: Coord,
        progress: Progress,
    ) -> Result<Interaction> {
        let bx = self.box_prompt(a, b, coord)?;
        let mut prompt = self.object(object)?.prompt.clone();
        prompt.bx = Some(bx);
        self.apply(object, prompt, progress)
    }

    /// A box's corners -> its prompt: the box of source indices its corners span (all eight, for
    /// physical corners of an oblique volume), clipped to the volume.
    fn box_prompt(&self, a: [f64; 3], b: [f64; 3], coord: Coord) -> Result<BoxPrompt> {
        if a.iter().chain(&b).any(|v| !v.is_finite()) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                "box corners must be finite",
            ));
        }
        let g = &self.volume.geom;
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for n in 0..8 {
            let c = [0, 1, 2].map(|ax| if (n >> ax) & 1 == 1 { b[ax] } else { a[ax] });
            let idx = self.to_index(c, coord);
            for ax in 0..3 {
                lo[ax] = lo[ax].min(idx[ax]);
                hi[ax] = hi[ax].max(idx[ax]);
            }
        }
        if lo.iter().chain(&hi).any(|v| !v.is_finite()) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                "the box's corners lie too far outside the volume to be placed",
            ));
        }
        // the voxels whose centres lie in the box, clipped to the volume
        let mut clip = VoxelBox::default();
        for ax in 0..3 {
            let d = g.dims[ax] as f64;
            let first = (lo[ax] - 1e-9).ceil().max(0.0);
            let last = (hi[ax] + 1e-9).floor().min(d - 1.0);
            if hi[ax] - lo[ax] < 1.0 {
                return Err(err(
                    Sam3dStatus::InvalidArgument,
                    format!(
                        "the box spans {:.2} voxels along axis {ax}: a box must be 3D, at least \
                         one voxel deep on every axis",
                        hi[ax] - lo[ax]
                    ),
                ));
            }
            if last < first {
                return Err(err(
                    Sam3dStatus::OutOfBounds,
                    format!(
                        "the box from voxel index ({:.2}, {:.2}, {:.2}) to ({:.2}, {:.2}, {:.2}) \
                         lies outside the volume {:?}",
                        lo[0], lo[1], lo[2], hi[0], hi[1], hi[2], g.dims
                    ),
                ));
            }
            clip.lo[ax] = first as u64;
            clip.hi[ax] = last as u64 + 1;
            // the part inside the volume places and sizes the crop
            lo[ax] = lo[ax].max(-0.5);
            hi[ax] = hi[ax].min(d - 0.5);
        }
        let (ga, gb) = (self.to_grid(lo), self.to_grid(hi));
        let glo = [0, 1, 2].map(|ax| ga[ax].min(gb[ax]));
        let ghi = [0, 1, 2].map(|ax| ga[ax].max(gb[ax]));
        // fit the box in the crop less a margin of crop/8 on each side, with one voxel to spare
        // for the centre's rounding, so that clicks refining it reuse the box's region
        let room = self.model.crop as f64 - 2.0 * reuse_margin(self.model.crop) - 2.0;
        let zoom = (0..3)
            .map(|ax| (ghi[ax] - glo[ax] + 1.0) / room)
            .fold(1.0, f64::max);
        // a box's coarser crop covers more source voxels: its paste-back is checked as a session's is
        let scale = self.scale.map(|s| s / zoom);
        check_click_memory(
            self.model.crop,
            self.map.dims(),
            scale,
            self.model.cpu_threads,
        )?;
        Ok(BoxPrompt {
            lo: glo,
            hi: ghi,
            clip,
            zoom,
        })
    }

    /// Start `object` from a segment of the host's (`full`: one byte per voxel, i fastest, non-zero
    /// inside): it becomes the object's mask, positive clicks add the model's answer to it and a
    /// negative click removes the segment's 26-connected part it lies in. Replaces the object's
    /// clicks and box; undo returns to what was there before.
    pub fn set_mask(
        &mut self,
        object: usize,
        full: &[u8],
        progress: Progress,
    ) -> Result<Interaction> {
        let dims = self.volume.geom.dims;
        self.check_mask_buffer(full.len())?;
        self.object(object)?;
        let start = SubMask::from_full(full, dims)?;
        let prompt = Prompt {
            start: Some(Arc::new(start)),
            ..Prompt::default()
        };
        self.apply(object, prompt, progress)
    }

    /// Back to the prompt before the last interaction (several levels). The state changes only when
    /// the recomputation succeeds: a cancelled undo leaves everything as it was.
    pub fn undo(&mut self, object: usize, progress: Progress) -> Result<Interaction> {
        self.travel(object, true, progress)
    }

    /// Forward to the prompt the last undo left.
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
        to.push(std::mem::replace(&mut obj.prompt, target));
        Ok(res)
    }

    /// Recompute with a new prompt and record it (undo history; redo history cleared).
    fn apply(&mut self, object: usize, prompt: Prompt, progress: Progress) -> Result<Interaction> {
        let res = self.recompute(object, prompt.clone(), progress)?;
        let obj = self.object(object)?;
        let prev = std::mem::replace(&mut obj.prompt, prompt);
        obj.undo.push(prev);
        obj.redo.clear();
        Ok(res)
    }

    /// The object's full mask (i fastest) into `out` (length = voxel count).
    pub fn write_mask(&self, object: usize, out: &mut [u8]) -> Result<()> {
        self.check_mask_buffer(out.len())?;
        let dims = self.volume.geom.dims.map(|d| d as u64);
        self.write_mask_box(object, [0; 3], dims, out)
    }

    /// `object`'s mask inside the box [lo, hi) (within the volume) into `out`: the box's voxel
    /// count, uint8 0/1, i fastest. What a host that keeps its own copy of the mask needs after an
    /// interaction: its changed box, without copying the whole volume.
    pub fn write_mask_box(
        &self,
        object: usize,
        lo: [u64; 3],
        hi: [u64; 3],
        out: &mut [u8],
    ) -> Result<()> {
        let dims = self.volume.geom.dims;
        for a in 0..3 {
            if lo[a] > hi[a] || hi[a] > dims[a] as u64 {
                return Err(err(
                    Sam3dStatus::OutOfBounds,
                    format!(
                        "box [{lo:?}, {hi:?}) is not inside the volume of {dims:?} voxels (lo <= hi <= dims on each axis)"
                    ),
                ));
            }
        }
        let ext = [0, 1, 2].map(|a| (hi[a] - lo[a]) as usize);
        let n = ext[0] * ext[1] * ext[2]; // within the volume's voxel count, which fits a usize
        if out.len() != n {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!(
                    "mask buffer holds {} bytes, the box has {n} voxels",
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
        // the part of the box the object's stored mask covers
        let a = [0, 1, 2].map(|p| lo[p].max(m.bbox.lo[p]));
        let b = [0, 1, 2].map(|p| hi[p].min(m.bbox.hi[p]));
        if (0..3).any(|p| a[p] >= b[p]) {
            return Ok(());
        }
        let mext = [0, 1, 2].map(|p| (m.bbox.hi[p] - m.bbox.lo[p]) as usize);
        let run = (b[0] - a[0]) as usize;
        for k in a[2]..b[2] {
            for j in a[1]..b[1] {
                let (mj, mk) = ((j - m.bbox.lo[1]) as usize, (k - m.bbox.lo[2]) as usize);
                let src = &m.data[(a[0] - m.bbox.lo[0]) as usize + mext[0] * (mj + mext[1] * mk)..]
                    [..run];
                let dst = (a[0] - lo[0]) as usize
                    + ext[0] * ((j - lo[1]) as usize + ext[1] * (k - lo[2]) as usize);
                out[dst..dst + run].copy_from_slice(src);
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
        self.objects.get(object).map(|o| o.prompt.clicks.len())
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
