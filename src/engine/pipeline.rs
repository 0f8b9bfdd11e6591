//! One interaction's work: the crop around the clicks resampled to the model's grid, the encoder
//! (only for a new region), the decoder per test-time flip, the probabilities pasted back onto the
//! volume's grid and thresholded, the clicked-component rule.

use std::sync::atomic::Ordering;

use half::f16;
use ort::value::{DynValue, TensorRef};

use super::segmenter::{
    check_click_memory, reuse_margin, Click, Prompt, Region, SubMask, MAX_REGIONS,
};
use super::{flushing, rt_err, Interaction, Progress, Segmenter, Stage, VoxelBox};
use crate::error::{err, Error, Result, Sam3dStatus};
use crate::refine::{flip_cube, flip_point, keep_seeded_components};
use crate::resample::{back_taps, extract_crop, model_size, paste_threshold, CropPlan};

/// Where one level's answer lies in its crop.
struct Reach {
    /// its bounding box's first and last voxel centres, in the zoom-1 grid
    lo: [f64; 3],
    hi: [f64; 3],
    /// it reaches a crop face behind which the model grid goes on
    open_face: bool,
    /// the answer in the crop (D, H, W; W fastest)
    mask: Vec<u8>,
}

/// A prompt's prediction: the levels combined, the zoom that answered, and whether any encoder ran.
pub(super) struct Prediction {
    pub(super) mask: SubMask,
    pub(super) zoom: f64,
    pub(super) encoded: bool,
}

/// How many times larger (bounding-box volume) a coarser answer must be than the finer one to
/// replace it (`outgrows`).
const OUTGROW: f64 = 4.0;

/// The largest intensity spread and median shift (`one_tissue`, in the package's normalised units:
/// 0.2 is 16 HU for a CT package normalised by 80 HU, about the faintest lesion contrast the demo
/// was trained on) at which a coarser answer may replace a finer one.
const MAX_SPREAD: f64 = 0.2;

/// A point of the model grid of zoom level 1 in the grid of `zoom` (same physical position).
fn at_zoom(g: [f64; 3], zoom: f64) -> [f64; 3] {
    g.map(|v| (v + 0.5) / zoom - 0.5)
}

impl Segmenter {
    /// Compute an object's mask from its prompt and replace it (the object is unchanged on error).
    pub(super) fn recompute(
        &mut self,
        object: usize,
        prompt: Prompt,
        progress: Progress,
    ) -> Result<Interaction> {
        self.cancel.store(false, Ordering::SeqCst);
        let _ = self.run_options.unterminate();
        if self.preempts_warm_up {
            // the warm-up holds the sessions this click needs: the user comes first
            self.model.warm.stop();
        }
        self.object(object)?;
        self.tick += 1;
        // the model answers a prompt with something positive in it (a positive click or a box);
        // negative clicks alone say only what is not wanted
        let modelled = prompt.has_positive();
        let pred = if modelled {
            Some(self.predict(&prompt, progress)?)
        } else {
            None
        };
        let (encoded, zoom) = pred.as_ref().map_or((false, 0.0), |p| (p.encoded, p.zoom));
        // the host's segment, less its parts a negative click lies in; the model's answer adds to it
        let start = match &prompt.start {
            Some(s) => Some(self.start_less_negatives(s, &prompt.clicks)?),
            None => None,
        };
        let mask = match (start, pred) {
            (None, None) => SubMask::default(),
            (Some(s), None) => s,
            (None, Some(p)) => p.mask,
            (Some(s), Some(p)) => s.union(&p.mask)?,
        };
        if modelled {
            progress(Stage::Paste, true);
        }
        // a cancel from the last progress callback still leaves the object as it was
        self.check_cancel()?;
        let voxels = mask.voxels();
        let obj = self.object(object)?;
        let old = std::mem::replace(&mut obj.mask, mask);
        obj.zoom = zoom;
        let changed = old.bbox.union(&obj.mask.bbox);
        Ok(Interaction {
            voxels,
            changed,
            encoded,
            zoom,
        })
    }

    /// The model's answer to a non-empty prompt, ending inside the `Paste` stage.
    ///
    /// With a box: one level, at the box's zoom, clipped to the box. Without: the package's spacing
    /// first, then (up to the session's largest zoom-out) the next level at twice the spacing, on a
    /// region that holds the points and the finer answer. The coarser level answers when the finer
    /// answer reaches a crop face behind which the volume goes on (the lesion continues past the
    /// crop: the finer answer is kept where it covers), or when the coarser answer outgrows the
    /// finer crop (`outgrows`) over tissue as homogeneous as one lesion (`one_tissue`): the finer
    /// crop sat inside a lesion too large to see as one, and its answer is dropped. Otherwise the
    /// finer level answers alone.
    fn predict(&mut self, prompt: &Prompt, progress: Progress) -> Result<Prediction> {
        // the decoder's points: the clicks, and a box's centre while no click is positive
        let mut pts = prompt.clicks.clone();
        if let Some(b) = &prompt.bx {
            if !pts.iter().any(|c| c.positive) {
                let g = [0, 1, 2].map(|a| (b.lo[a] + b.hi[a]) / 2.0);
                pts.insert(0, Click { g, positive: true });
            }
        }
        // what the region must hold (zoom level 1): the points and the box's corners
        let mut need: Vec<[f64; 3]> = pts.iter().map(|c| c.g).collect();
        if let Some(b) = &prompt.bx {
            need.extend([b.lo, b.hi]);
        }
        let seeds: Vec<[f64; 3]> = pts.iter().filter(|c| c.positive).map(|c| c.g).collect();
        let mut zoom = prompt.bx.map_or(1.0, |b| b.zoom);
        let mut encoded = false;
        // a level's answer from its first `flips` test-time flips: all of them for an answer that
        // may be kept, the unflipped crop alone for a coarser level's probe
        let mut run =
            |me: &mut Self, zoom: f64, need: &[[f64; 3]], flips: usize, progress: Progress| {
                let (prob, origin, enc) = me.probabilities(zoom, &pts, need, flips, progress)?;
                encoded |= enc;
                Ok::<_, Error>((prob, origin))
            };
        let all = self.flips;
        let mut cur = run(self, zoom, &need, all, progress)?;
        // (level's probabilities, origin, zoom, kept under the coarser one)
        let mut finer: Vec<(Vec<f32>, [i64; 3], f64)> = Vec::new();
        while prompt.bx.is_none() && zoom * 2.0 <= self.max_zoom as f64 {
            let next = zoom * 2.0;
            let scale = self.scale.map(|s| s / next);
            if check_click_memory(
                self.model.crop,
                self.map.dims(),
                scale,
                self.model.cpu_threads,
            )
            .is_err()
            {
                // this volume's voxels are too fine for a coarser level within the budget
                break;
            }
            // nothing found here: a coarser level could neither continue nor outgrow it
            let Some(answer) = self.answer_reach(&cur.0, cur.1, zoom, &seeds) else {
                break;
            };
            let next_need: Vec<[f64; 3]> = pts
                .iter()
                .map(|c| c.g)
                .chain([answer.lo, answer.hi])
                .collect();
            let coarse = run(self, next, &next_need, 1, progress)?;
            let beyond = self
                .answer_reach(&coarse.0, coarse.1, next, &seeds)
                .is_some_and(|a| {
                    self.outgrows(&answer, &a, cur.1, zoom)
                        && self.one_tissue(&answer, &a, coarse.1, next)
                });
            if !answer.open_face && !beyond {
                break;
            }
            // the coarser level answers: with every flip (the same region, its other flips encoded
            // now)
            let coarse = if all > 1 {
                run(self, next, &next_need, all, progress)?
            } else {
                coarse
            };
            let (prob, origin) = std::mem::replace(&mut cur, coarse);
            if answer.open_face {
                finer.push((prob, origin, zoom));
            } else {
                finer.clear();
            }
            zoom = next;
        }
        self.check_cancel()?;
        progress(Stage::Paste, false);
        let (mut mask, _) = self.paste(&cur.0, cur.1, zoom)?;
        // each kept finer level laid over the coarser answer where it covers, coarsest first
        for (prob, origin, z) in finer.iter().rev() {
            let (m, c) = self.paste(prob, *origin, *z)?;
            mask = mask.overlay(&m, c)?;
        }
        if let Some(b) = &prompt.bx {
            mask = mask.clip(b.clip)?;
        }
        if self.keep_clicked {
            self.keep_clicked_components(&mut mask, &seeds);
        }
        Ok(Prediction {
            mask,
            zoom,
            encoded,
        })
    }

    /// The crop's probabilities at `zoom` for the points (zoom-1 grid), the mean over the first
    /// `flips` test-time flips: from the cached region of that zoom when it holds `need` away from
    /// its edges, else from a region encoded around them (centre: round-half-up of the midpoint of
    /// their bounding box, the official rule). Flips the region lacks are encoded first. Returns
    /// (probabilities, region origin, whether the encoder ran).
    fn probabilities(
        &mut self,
        zoom: f64,
        pts: &[Click],
        need: &[[f64; 3]],
        flips: usize,
        progress: Progress,
    ) -> Result<(Vec<f32>, [i64; 3], bool)> {
        let c = self.model.crop as i64;
        let margin = reuse_margin(self.model.crop);
        let need: Vec<[f64; 3]> = need.iter().map(|&g| at_zoom(g, zoom)).collect();
        let holds = |r: &Region| {
            r.zoom == zoom
                && need.iter().all(|p| {
                    (0..3).all(|a| {
                        p[a] >= r.origin[a] as f64 + margin
                            && p[a] <= (r.origin[a] + c) as f64 - 1.0 - margin
                    })
                })
        };
        let mut encoded = false;
        let at = match self.regions.iter().position(holds) {
            Some(i) => i,
            None => {
                let centre = [0, 1, 2].map(|a| {
                    let lo = need.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
                    let hi = need.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max);
                    ((lo + hi) / 2.0 + 0.5).floor() as i64
                });
                let origin = centre.map(|v| v - c / 2);
                // one region per zoom, and at most MAX_REGIONS: the old one goes before the new
                // one is allocated
                self.regions.retain(|r| r.zoom != zoom);
                if self.regions.len() >= MAX_REGIONS {
                    let lru = (0..self.regions.len())
                        .min_by_key(|&i| self.regions[i].used)
                        .expect("not empty");
                    self.regions.remove(lru);
                }
                let region = self.encode(origin, zoom, flips, progress)?;
                self.regions.push(region);
                encoded = true;
                self.regions.len() - 1
            }
        };
        encoded |= self.fill_flips(at, flips, progress)?;
        self.regions[at].used = self.tick;
        let region = &self.regions[at];
        let origin = region.origin;
        self.check_cancel()?;
        progress(Stage::Decode, false);
        let cu = self.model.crop;
        let labels: Vec<f32> = pts.iter().map(|p| p.positive as u8 as f32).collect();
        let labels = self.model.takes_labels.then_some(&labels[..]);
        // the mean of the flips' probabilities, each flipped back to the crop's own orientation
        let mut prob: Vec<f32> = Vec::new();
        for (b, cache) in region.caches[..flips].iter().enumerate() {
            let cache = cache.as_ref().expect("filled above");
            let coords: Vec<f32> = pts
                .iter()
                .flat_map(|p| {
                    let g = at_zoom(p.g, zoom);
                    let q = [0, 1, 2].map(|a| g[a] - origin[a] as f64);
                    flip_point(q, cu, b).map(|v| v as f32)
                })
                .collect();
            let p = self.decode(cache, &coords, labels, pts.len())?;
            if b == 0 {
                prob = p;
            } else {
                let p = flip_cube(&p, cu, b);
                prob.iter_mut().zip(&p).for_each(|(acc, v)| *acc += v);
            }
        }
        let n = flips as f32;
        if n > 1.0 {
            prob.iter_mut().for_each(|v| *v /= n);
        }
        progress(Stage::Decode, true);
        Ok((prob, origin, encoded))
    }

    /// The thresholded answer in the crop (its clicked components, under that rule): its bounding
    /// box in the zoom-1 grid, and whether it reaches a crop face behind which the model grid goes
    /// on. None for an empty answer.
    fn answer_reach(
        &self,
        prob: &[f32],
        origin: [i64; 3],
        zoom: f64,
        seeds: &[[f64; 3]],
    ) -> Option<Reach> {
        let c = self.model.crop;
        let thr = self.model.manifest().threshold as f32;
        let mut mask: Vec<u8> = prob.iter().map(|&p| (p > thr) as u8).collect();
        if self.keep_clicked {
            // crop axes (D, H, W) -> the rule's extent order (axis 0 fastest): W, H, D
            let seeds: Vec<[usize; 3]> = seeds
                .iter()
                .filter_map(|&g| {
                    let q = at_zoom(g, zoom);
                    let v = [0, 1, 2].map(|a| (q[a] - origin[a] as f64 + 0.5).floor() as i64);
                    (0..3)
                        .all(|a| (0..c as i64).contains(&v[a]))
                        .then(|| [v[2] as usize, v[1] as usize, v[0] as usize])
                })
                .collect();
            keep_seeded_components(&mut mask, [c; 3], &seeds);
        }
        let grid = self.grid_at(zoom);
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        for (n, &m) in mask.iter().enumerate() {
            if m == 1 {
                let v = [n / (c * c), (n / c) % c, n % c];
                for a in 0..3 {
                    lo[a] = lo[a].min(v[a]);
                    hi[a] = hi[a].max(v[a]);
                }
            }
        }
        if lo[0] == usize::MAX {
            return None;
        }
        let open_face = (0..3).any(|a| {
            (lo[a] == 0 && origin[a] > 0)
                || (hi[a] == c - 1 && origin[a] + (c as i64) < grid[a] as i64)
        });
        let to1 =
            |v: [usize; 3]| [0, 1, 2].map(|a| (origin[a] as f64 + v[a] as f64 + 0.5) * zoom - 0.5);
        Some(Reach {
            lo: to1(lo),
            hi: to1(hi),
            open_face,
            mask,
        })
    }

    /// Whether the coarser level's answer `coarse` shows a lesion the finer crop (at `origin`,
    /// `zoom`) cannot see as one: the coarser answer's box does not fit in the finer crop's interior
    /// (less crop/8 on each side where the finer crop ends inside the volume), and it is at least `OUTGROW` times the finer answer's box in
    /// volume. Leaks of a coarser answer around a lesion the finer crop holds stay below that ratio;
    /// a finer answer inside a lesion larger than its crop finds only a fragment of it.
    fn outgrows(&self, fine: &Reach, coarse: &Reach, origin: [i64; 3], zoom: f64) -> bool {
        let c = self.model.crop as i64;
        let margin = reuse_margin(self.model.crop);
        let grid = self.grid_at(zoom);
        let (lo, hi) = (at_zoom(coarse.lo, zoom), at_zoom(coarse.hi, zoom));
        // only on sides where the finer crop ends inside the volume
        let outside = (0..3).any(|a| {
            (origin[a] > 0 && lo[a] < origin[a] as f64 + margin)
                || (origin[a] + c < grid[a] as i64 && hi[a] > (origin[a] + c - 1) as f64 - margin)
        });
        let volume = |r: &Reach| {
            let (lo, hi) = (at_zoom(r.lo, zoom), at_zoom(r.hi, zoom));
            (0..3).map(|a| hi[a] - lo[a] + 1.0).product::<f64>()
        };
        outside && volume(coarse) >= OUTGROW * volume(fine)
    }

    /// Whether the coarser answer covers one homogeneous tissue, read in the coarser level's crop:
    /// its core (its voxels inside the finer answer's box) has an intensity spread below
    /// `MAX_SPREAD`, and the median of its extension (its other voxels) lies within `MAX_SPREAD` of
    /// the core's median. True for a lesion larger than the finer crop; false for the usual leak of
    /// a coarser answer into the organ around a small lesion.
    fn one_tissue(&self, fine: &Reach, coarse: &Reach, origin: [i64; 3], zoom: f64) -> bool {
        let Some(region) = self.regions.iter().find(|r| r.zoom == zoom) else {
            return false;
        };
        let c = self.model.crop;
        let (lo, hi) = (at_zoom(fine.lo, zoom), at_zoom(fine.hi, zoom));
        let (mut core, mut ext) = (Vec::new(), Vec::new());
        for (i, &m) in coarse.mask.iter().enumerate() {
            if m != 1 {
                continue;
            }
            let v = [i / (c * c), (i / c) % c, i % c];
            let g = [0, 1, 2].map(|a| (origin[a] + v[a] as i64) as f64);
            let x = region.crop[i] as f64;
            if (0..3).all(|a| g[a] >= lo[a] - 0.5 && g[a] <= hi[a] + 0.5) {
                core.push(x);
            } else {
                ext.push(x);
            }
        }
        if core.is_empty() || ext.is_empty() {
            return false;
        }
        let n = core.len() as f64;
        let mean = core.iter().sum::<f64>() / n;
        let spread = (core.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        spread < MAX_SPREAD && (median(&mut core) - median(&mut ext)).abs() < MAX_SPREAD
    }

    /// The model grid's size at `zoom` (the package's spacing times `zoom`).
    fn grid_at(&self, zoom: f64) -> [usize; 3] {
        let dims = self.map.dims();
        [0, 1, 2].map(|a| model_size(dims[a], self.scale[a] / zoom))
    }

    /// One decoder run on one flip's cache: `pts` (n x 3, crop voxels) -> the crop's probabilities.
    pub(super) fn decode(
        &self,
        cache: &[(String, DynValue)],
        pts: &[f32],
        labels: Option<&[f32]>,
        n: usize,
    ) -> Result<Vec<f32>> {
        let c = self.model.crop as i64;
        let mut dec = self.model.decoder.lock().unwrap_or_else(|p| p.into_inner());
        let mut inputs: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = Vec::new();
        for (name, value) in cache {
            inputs.push((name.clone().into(), value.into()));
        }
        let pt = TensorRef::from_array_view(([1i64, n as i64, 3], pts))
            .map_err(|e| rt_err("points", e))?;
        inputs.push(("points".into(), pt.into()));
        if let Some(l) = labels {
            let lt = TensorRef::from_array_view(([1i64, n as i64], l))
                .map_err(|e| rt_err("labels", e))?;
            inputs.push(("labels".into(), lt.into()));
        }
        let out = flushing(|| dec.run_with_options(inputs, &self.run_options))
            .map_err(|e| self.run_error("decoder", e))?;
        let prob = &out["prob"];
        let (shape, data): (Vec<i64>, Vec<f32>) = if self.model.prob_f16 {
            let (shape, halves) = prob
                .try_extract_tensor::<f16>()
                .map_err(|e| rt_err("decoder output", e))?;
            (shape.to_vec(), halves.iter().map(|h| h.to_f32()).collect())
        } else {
            let (shape, data) = prob
                .try_extract_tensor::<f32>()
                .map_err(|e| rt_err("decoder output", e))?;
            (shape.to_vec(), data.to_vec())
        };
        let want = [1i64, c, c, c];
        if shape[..] != want[..] {
            return Err(err(
                Sam3dStatus::BadModel,
                format!("decoder returned `prob` of shape {shape:?}, expected {want:?}"),
            ));
        }
        Ok(data)
    }

    /// The source voxels nearest to clicks (zoom-1 grid), as offsets inside `bbox` (clicks whose
    /// voxel lies outside it are left out).
    fn click_voxels(&self, clicks: &[[f64; 3]], bbox: &VoxelBox) -> Vec<[usize; 3]> {
        let dims = self.volume.geom.dims;
        let ext = [0, 1, 2].map(|p| bbox.hi[p].saturating_sub(bbox.lo[p]) as usize);
        clicks
            .iter()
            .filter_map(|g| {
                // model grid -> model-frame source index -> source index, nearest voxel
                let x = [0, 1, 2].map(|a| (g[a] + 0.5) / self.scale[a] - 0.5);
                let idx = self.map.to_source(x);
                let v: [i64; 3] = [0, 1, 2].map(|p| {
                    ((idx[p] + 0.5).floor() as i64).clamp(0, dims[p] as i64 - 1) - bbox.lo[p] as i64
                });
                (0..3)
                    .all(|p| v[p] >= 0 && (v[p] as usize) < ext[p])
                    .then(|| v.map(|x| x as usize))
            })
            .collect()
    }

    /// Drop the components of `mask` that no click touches (`refine::keep_seeded_components`); a
    /// click is the source voxel nearest to it.
    pub(super) fn keep_clicked_components(&self, mask: &mut SubMask, clicks: &[[f64; 3]]) {
        if mask.bbox.is_empty() {
            return;
        }
        let ext = [0, 1, 2].map(|p| (mask.bbox.hi[p] - mask.bbox.lo[p]) as usize);
        let seeds = self.click_voxels(clicks, &mask.bbox);
        keep_seeded_components(&mut mask.data, ext, &seeds);
    }

    /// A copy of the host's starting segment (within the memory budget) without its 26-connected
    /// parts that a negative click lies in.
    fn start_less_negatives(&self, start: &SubMask, clicks: &[Click]) -> Result<SubMask> {
        let mut out = start.clip(start.bbox)?;
        let neg: Vec<[f64; 3]> = clicks.iter().filter(|c| !c.positive).map(|c| c.g).collect();
        if neg.is_empty() || out.bbox.is_empty() {
            return Ok(out);
        }
        let ext = [0, 1, 2].map(|p| (out.bbox.hi[p] - out.bbox.lo[p]) as usize);
        let at = |v: [usize; 3]| v[0] + ext[0] * (v[1] + ext[1] * v[2]);
        let seeds: Vec<[usize; 3]> = self
            .click_voxels(&neg, &out.bbox)
            .into_iter()
            .filter(|&v| out.data[at(v)] == 1)
            .collect();
        if seeds.is_empty() {
            return Ok(out);
        }
        // the parts the negative clicks touch, then the segment less those
        let mut touched = out.data.clone();
        keep_seeded_components(&mut touched, ext, &seeds);
        out.data
            .iter_mut()
            .zip(&touched)
            .for_each(|(m, &t)| *m &= 1 - t);
        Ok(out)
    }

    pub(super) fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(err(Sam3dStatus::Cancelled, "cancelled"));
        }
        Ok(())
    }

    pub(super) fn run_error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        if self.cancel.load(Ordering::SeqCst) {
            err(Sam3dStatus::Cancelled, format!("{what} cancelled"))
        } else {
            rt_err(what, e)
        }
    }

    /// Encode the flips in `0..n` region `at` lacks; true when the encoder ran.
    fn fill_flips(&mut self, at: usize, n: usize, progress: Progress) -> Result<bool> {
        let c = self.model.crop;
        let missing: Vec<usize> = (0..n)
            .filter(|&b| self.regions[at].caches[b].is_none())
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        self.check_cancel()?;
        progress(Stage::Encode, false);
        for b in missing {
            self.check_cancel()?;
            let cube = flip_cube(&self.regions[at].crop, c, b);
            let cache = self.encode_crop(cube)?;
            self.regions[at].caches[b] = Some(cache);
        }
        progress(Stage::Encode, true);
        Ok(true)
    }

    /// Normalised crop at `origin` (model grid), then the encoder on its first `flips` test-time
    /// flips (the others are encoded when an answer needs them): the region cache.
    pub(super) fn encode(
        &self,
        origin: [i64; 3],
        zoom: f64,
        flips: usize,
        progress: Progress,
    ) -> Result<Region> {
        let m = self.model.manifest();
        let c = self.model.crop;
        self.check_cancel()?;
        progress(Stage::Resample, false);
        let scale = self.scale.map(|s| s / zoom);
        let plan = CropPlan::new(origin, c, self.map.dims(), scale);
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
        // the unflipped crop is kept with the region: later flips and zoom-out's tissue test read it
        let mut caches: Vec<Option<_>> = (0..self.flips).map(|_| None).collect();
        for (b, slot) in caches.iter_mut().enumerate().take(flips.min(self.flips)) {
            self.check_cancel()?;
            let cube = if b == 0 {
                crop.clone()
            } else {
                flip_cube(&crop, c, b)
            };
            *slot = Some(self.encode_crop(cube)?);
        }
        progress(Stage::Encode, true);
        Ok(Region {
            zoom,
            origin,
            crop,
            caches,
            used: self.tick,
        })
    }

    /// One encoder run on a normalised crop: its outputs by name (the region cache of one flip).
    pub(super) fn encode_crop(&self, crop: Vec<f32>) -> Result<Vec<(String, DynValue)>> {
        let ci = self.model.crop as i64;
        // owned: IoBinding clones a borrowed input first (and ort rc.15 deadlocks doing so)
        let shape = [1i64, 1, ci, ci, ci];
        let input: DynValue = if self.model.crop_f16 {
            let halves: Vec<f16> = crop.iter().map(|&v| f16::from_f32(v)).collect();
            ort::value::Tensor::from_array((shape, halves)).map(|t| t.into_dyn())
        } else {
            ort::value::Tensor::from_array((shape, crop)).map(|t| t.into_dyn())
        }
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
            use ort::value::TensorElementType as T;
            let ok = matches!(value.dtype(), ort::value::ValueType::Tensor { ty, .. }
                if *ty == T::Float32 || *ty == T::Float16);
            if !ok {
                return Err(err(
                    Sam3dStatus::BadModel,
                    format!("encoder output `{name}` is not a float32 or float16 tensor"),
                ));
            }
            cache.push((name.clone(), value));
        }
        Ok(cache)
    }

    /// Resample the crop's probabilities at `zoom` (zero elsewhere) back to the source grid,
    /// threshold; with the box of source voxels whose taps all lie inside the crop.
    pub(super) fn paste(
        &self,
        prob: &[f32],
        origin: [i64; 3],
        zoom: f64,
    ) -> Result<(SubMask, VoxelBox)> {
        let c = self.model.crop as i64;
        let thr = self.model.manifest().threshold as f32;
        let dims = self.map.dims();
        let grid = self.grid_at(zoom);
        let (lo, hi) = (
            origin.map(|v| v.max(0)),
            [0, 1, 2].map(|a| (origin[a] + c).min(grid[a] as i64)),
        );
        let taps: [Vec<_>; 3] = [0, 1, 2].map(|a| back_taps(dims[a], grid[a], lo[a], hi[a]));
        if taps.iter().any(|t| t.is_empty()) {
            return Ok((SubMask::default(), VoxelBox::default()));
        }
        // covered: both taps inside (the first and last such source indices along each axis)
        let mut cover = VoxelBox::default();
        for a in 0..3 {
            let inside = |x: usize| (lo[a]..hi[a]).contains(&(x as i64));
            let full: Vec<usize> = taps[a]
                .iter()
                .filter(|(_, t)| inside(t.x0) && (t.w1 == 0.0 || inside(t.x1)))
                .map(|&(j, _)| self.map.src_index(a, j))
                .collect();
            let p = self.map.perm[a];
            if let (Some(&mn), Some(&mx)) = (full.iter().min(), full.iter().max()) {
                cover.lo[p] = mn as u64;
                cover.hi[p] = mx as u64 + 1;
            }
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
        Ok((SubMask { bbox, data }, cover))
    }
}
