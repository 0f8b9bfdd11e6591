//! One interaction's work: the crop around the clicks resampled to the model's grid, the encoder
//! (only for a new region), the decoder per test-time flip, the probabilities pasted back onto the
//! volume's grid and thresholded, the clicked-component rule.

use std::sync::atomic::Ordering;

use half::f16;
use ort::value::{DynValue, TensorRef};

use super::segmenter::{reuse_margin, Region, SubMask};
use super::{flushing, rt_err, Interaction, Progress, Segmenter, Stage, VoxelBox};
use crate::error::{err, Error, Result, Sam3dStatus};
use crate::refine::{flip_cube, flip_point, keep_seeded_components};
use crate::resample::{back_taps, extract_crop, paste_threshold, CropPlan};

impl Segmenter {
    /// Run (encoder if needed,) decoder and paste-back for a click set; replace the object's mask.
    pub(super) fn recompute(
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
    pub(super) fn decode(
        &self,
        cache: &[(String, DynValue)],
        pts: &[f32],
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

    /// Drop the components of `mask` that no click touches (`refine::keep_seeded_components`); a
    /// click is the source voxel nearest to it.
    pub(super) fn keep_clicked_components(&self, mask: &mut SubMask, clicks: &[[f64; 3]]) {
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

    /// Normalised crop at `origin` (model grid), then the encoder: the region cache.
    pub(super) fn encode(&self, origin: [i64; 3], progress: Progress) -> Result<Region> {
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

    /// Resample the crop's probabilities (zero elsewhere) back to the source grid, threshold.
    pub(super) fn paste(&self, prob: &[f32], origin: [i64; 3]) -> Result<SubMask> {
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
}
