//! Resampling exactly as the official pipeline does with PyTorch `F.interpolate` (trilinear,
//! `align_corners=False`), computed only where it is needed:
//!
//! * to the model spacing (`scale_factor` s): output size floor(n * s), source coordinate of output
//!   index j = (j + 0.5) / s - 0.5, negative clamped to 0, upper neighbour clamped to n - 1;
//! * back to the original grid (`size` n): source coordinate (j + 0.5) * m / n - 0.5, same clamps.
//!
//! Trilinear is separable, so each axis gets its own (index, index, weight) taps.

/// One output sample along one axis: source indices x0, x1 and the weight of x1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
    pub x0: usize,
    pub x1: usize,
    pub w1: f32,
}

/// PyTorch's linear source index for output `j` with ratio `inv_scale` (input / output).
#[inline]
pub fn tap(j: usize, inv_scale: f64, n_in: usize) -> Tap {
    let src = ((j as f64 + 0.5) * inv_scale - 0.5).max(0.0);
    let x0 = (src.floor() as usize).min(n_in - 1);
    let x1 = if x0 + 1 < n_in { x0 + 1 } else { x0 };
    Tap {
        x0,
        x1,
        w1: (src - x0 as f64) as f32,
    }
}

/// Trilinear interpolation with one tap per axis (W innermost, as PyTorch's kernel orders it).
#[inline]
pub fn trilinear(td: Tap, th: Tap, tw: Tap, read: &impl Fn(usize, usize, usize) -> f32) -> f32 {
    let lerp_w = |a: usize, b: usize| {
        let v0 = read(a, b, tw.x0);
        v0 + (read(a, b, tw.x1) - v0) * tw.w1
    };
    let lerp_hw = |a: usize| {
        let v0 = lerp_w(a, th.x0);
        v0 + (lerp_w(a, th.x1) - v0) * th.w1
    };
    let v0 = lerp_hw(td.x0);
    v0 + (lerp_hw(td.x1) - v0) * td.w1
}

/// `trilinear` at every combination of per-axis taps, over a block `vals` of `dims` (D, H, W; W
/// fastest) whose first voxel sits at grid index `origin`, zero outside it: calls
/// `emit(kd, kh, kw, value)`. Separable (lerps along W for the block's rows, then H, then D), so each
/// output costs three lerps instead of seven plus eight reads, with the very same arithmetic as
/// `trilinear` (same operands, same order: the results are bit-identical, asserted by a test).
///
/// `only_above: Some(t)` (t > 0) leaves out outputs that cannot exceed t: a trilinear value is a
/// convex combination of its 8 corners, so an output whose corner rows (along W) all stay below
/// `t - margin` is at most t; the margin (16 ulp of the block's largest magnitude) covers what the
/// three lerps' rounding can add. Only the rows such outputs need are resampled, so paste-back of a
/// small object in a large crop costs a fraction of the whole grid; every emitted value is still
/// bit-identical to `trilinear`'s.
pub fn trilinear_grid(
    vals: &[f32],
    dims: [usize; 3],
    origin: [i64; 3],
    taps: [&[Tap]; 3],
    only_above: Option<f32>,
    mut emit: impl FnMut(usize, usize, usize, f32),
) {
    debug_assert_eq!(vals.len(), dims[0] * dims[1] * dims[2]);
    // block-local index of grid index x along axis a, None outside the block (value 0)
    let local = |a: usize, x: usize| {
        let q = x as i64 - origin[a];
        (0..dims[a] as i64).contains(&q).then_some(q as usize)
    };
    let [c0, c1, c2] = dims;
    let lerp = |v0: f32, v1: f32, w: f32| v0 + (v1 - v0) * w;
    let [td, th, tw] = taps;
    let (nh, nw) = (th.len(), tw.len());
    let need = RowsNeeded::new(vals, dims, only_above, [td, th], &local);
    let w_idx: Vec<(Option<usize>, Option<usize>)> = tw
        .iter()
        .map(|t| (local(2, t.x0), local(2, t.x1)))
        .collect();
    // along W, for every row of the block that is needed: a[(d * c1 + h) * nw + kw]
    let mut a = vec![0f32; c0 * c1 * nw];
    for ((row, out), _) in vals
        .chunks_exact(c2.max(1))
        .zip(a.chunks_exact_mut(nw.max(1)))
        .zip(&need.a)
        .filter(|(_, &n)| n)
    {
        for ((t, &(i0, i1)), o) in tw.iter().zip(&w_idx).zip(out.iter_mut()) {
            let get = |i: Option<usize>| i.map_or(0.0, |i| row[i]);
            *o = lerp(get(i0), get(i1), t.w1);
        }
    }
    // along H: b[(d * nh + kh) * nw + kw]
    let mut b = vec![0f32; c0 * nh * nw];
    let zeros = vec![0f32; nw];
    for d in 0..c0 {
        for (kh, t) in th.iter().enumerate() {
            if !need.b[d * nh + kh] {
                continue;
            }
            let row = |x: usize| local(1, x).map_or(&zeros[..], |h| &a[(d * c1 + h) * nw..][..nw]);
            let (r0, r1) = (row(t.x0), row(t.x1));
            let out = &mut b[(d * nh + kh) * nw..][..nw];
            for ((o, &v0), &v1) in out.iter_mut().zip(r0).zip(r1) {
                *o = lerp(v0, v1, t.w1);
            }
        }
    }
    // along D, emitted
    let plane_len = nh * nw;
    let zero_plane = vec![0f32; plane_len];
    for (kd, t) in td.iter().enumerate() {
        let plane =
            |x: usize| local(0, x).map_or(&zero_plane[..], |d| &b[d * plane_len..][..plane_len]);
        let (p0, p1) = (plane(t.x0), plane(t.x1));
        for kh in 0..nh {
            if !need.emit[kd * nh + kh] {
                continue;
            }
            for kw in 0..nw {
                let i = kh * nw + kw;
                emit(kd, kh, kw, lerp(p0[i], p1[i], t.w1));
            }
        }
    }
}

/// Which rows `trilinear_grid` computes: `a` block rows (d, h) resampled along W, `b` rows (d, kh)
/// resampled along H, `emit` output rows (kd, kh). All true without a threshold.
struct RowsNeeded {
    a: Vec<bool>,
    b: Vec<bool>,
    emit: Vec<bool>,
}

impl RowsNeeded {
    fn new(
        vals: &[f32],
        dims: [usize; 3],
        only_above: Option<f32>,
        [td, th]: [&[Tap]; 2],
        local: &impl Fn(usize, usize) -> Option<usize>,
    ) -> RowsNeeded {
        let [c0, c1, c2] = dims;
        let (nd, nh) = (td.len(), th.len());
        let cut = only_above.map(|t| {
            let largest = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            t - 16.0 * f32::EPSILON * largest.max(t.abs())
        });
        // zeros outside the block must lie below the cut for the bound to hold
        let Some(cut) = cut.filter(|&c| c > 0.0) else {
            return RowsNeeded {
                a: vec![true; c0 * c1],
                b: vec![true; c0 * nh],
                emit: vec![true; nd * nh],
            };
        };
        let live_a: Vec<bool> = vals
            .chunks_exact(c2.max(1))
            .map(|row| row.iter().any(|&v| v > cut))
            .collect();
        let at = |v: &[bool], axis: usize, x: usize, base: usize| {
            local(axis, x).is_some_and(|i| v[base + i])
        };
        let mut live_b = vec![false; c0 * nh];
        for d in 0..c0 {
            for (kh, t) in th.iter().enumerate() {
                live_b[d * nh + kh] = at(&live_a, 1, t.x0, d * c1) || at(&live_a, 1, t.x1, d * c1);
            }
        }
        let (mut emit, mut b, mut a) = (
            vec![false; nd * nh],
            vec![false; c0 * nh],
            vec![false; c0 * c1],
        );
        for (kd, t) in td.iter().enumerate() {
            for kh in 0..nh {
                let live = |x: usize| local(0, x).is_some_and(|d| live_b[d * nh + kh]);
                if live(t.x0) || live(t.x1) {
                    emit[kd * nh + kh] = true;
                    for d in [t.x0, t.x1].into_iter().filter_map(|x| local(0, x)) {
                        b[d * nh + kh] = true;
                    }
                }
            }
        }
        for d in 0..c0 {
            for (kh, t) in th.iter().enumerate() {
                if b[d * nh + kh] {
                    for h in [t.x0, t.x1].into_iter().filter_map(|x| local(1, x)) {
                        a[d * c1 + h] = true;
                    }
                }
            }
        }
        RowsNeeded { a, b, emit }
    }
}

/// Paste-back: threshold (`> thr`) the trilinear resampling of a C^3 probability block whose first
/// voxel sits at model-grid index `origin` (zero outside it) at the per-axis taps, setting
/// `data[offs[0][kd] + offs[1][kh] + offs[2][kw]] = 1`. Tap k of axis `split` must write only into
/// slab `offs[split][k] / slab` of `data` (`slab`-long runs, one per tap: the mask's slowest axis),
/// so `threads` workers can each own a run of slabs; each resamples only the block planes its taps
/// read, with `trilinear_grid`'s arithmetic, so the mask does not depend on `threads` (tested).
#[allow(clippy::too_many_arguments)]
pub fn paste_threshold(
    prob: &[f32],
    c: usize,
    origin: [i64; 3],
    taps: [&[Tap]; 3],
    offs: [&[usize]; 3],
    split: usize,
    slab: usize,
    thr: f32,
    threads: usize,
    data: &mut [u8],
) {
    debug_assert_eq!(data.len() % slab.max(1), 0);
    let fill = |first: usize, part: &mut [u8]| {
        let slabs = first..first + part.len() / slab;
        let mine: Vec<usize> = (0..taps[split].len())
            .filter(|&k| slabs.contains(&(offs[split][k] / slab)))
            .collect();
        if mine.is_empty() {
            return;
        }
        // the block planes along `split` these taps read, clipped to the block
        let local = |x: usize| x as i64 - origin[split];
        let lo = mine
            .iter()
            .map(|&k| local(taps[split][k].x0))
            .min()
            .unwrap()
            .max(0);
        let hi = mine
            .iter()
            .map(|&k| local(taps[split][k].x1))
            .max()
            .unwrap()
            .min(c as i64 - 1);
        // (none inside the block: an empty block, every value 0)
        let (lo, n) = if hi >= lo {
            (lo, (hi - lo + 1) as usize)
        } else {
            (0, 0)
        };
        let mut dims = [c; 3];
        dims[split] = n;
        let mut sub_origin = origin;
        sub_origin[split] += lo;
        let sub = sub_block(prob, c, split, lo as usize, n);
        let my_taps: Vec<Tap> = mine.iter().map(|&k| taps[split][k]).collect();
        let my_offs: Vec<usize> = mine
            .iter()
            .map(|&k| offs[split][k] - first * slab)
            .collect();
        let mut t = taps;
        let mut o = offs;
        t[split] = &my_taps;
        o[split] = &my_offs;
        trilinear_grid(&sub, dims, sub_origin, t, Some(thr), |kd, kh, kw, v| {
            if v > thr {
                part[o[0][kd] + o[1][kh] + o[2][kw]] = 1;
            }
        });
    };
    par_chunks(data, slab, threads, fill);
}

/// Planes [lo, lo + n) along `axis` of a C^3 block (D, H, W; W fastest), as a block of their own.
fn sub_block(vals: &[f32], c: usize, axis: usize, lo: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * c * c);
    for d in 0..c {
        for h in 0..c {
            let row = &vals[(d * c + h) * c..][..c];
            match axis {
                0 if (lo..lo + n).contains(&d) => out.extend_from_slice(row),
                1 if (lo..lo + n).contains(&h) => out.extend_from_slice(row),
                2 => out.extend_from_slice(&row[lo..lo + n]),
                _ => {}
            }
        }
    }
    out
}

/// Model-grid size along one axis: floor(n * s) (at least 1).
pub fn model_size(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).floor() as usize).max(1)
}

/// Fill the normalised crop (C^3, model axes D, H, W, W fastest) whose first voxel sits at model-grid
/// index `origin`. `fetch` reads the source at model-frame indices; `scale` = spacing / target per
/// axis; voxels outside the model grid get `pad`.
pub struct CropPlan {
    pub taps: [Vec<Option<Tap>>; 3],
}

impl CropPlan {
    pub fn new(origin: [i64; 3], crop: usize, frame_dims: [usize; 3], scale: [f64; 3]) -> CropPlan {
        let taps = [0, 1, 2].map(|a| {
            let m = model_size(frame_dims[a], scale[a]) as i64;
            (0..crop as i64)
                .map(|q| {
                    let j = origin[a] + q;
                    (0..m)
                        .contains(&j)
                        .then(|| tap(j as usize, 1.0 / scale[a], frame_dims[a]))
                })
                .collect()
        });
        CropPlan { taps }
    }
}

/// Trilinear crop extraction; `read(i0, i1, i2)` returns the source voxel at model-frame indices.
/// `loops` names the model axes from the outermost loop to the innermost. The innermost should be
/// the axis along which the source is contiguous, so that neighbouring outputs read neighbouring
/// memory (several times faster for a CT in RAS, where W, the model's innermost axis, is the
/// source's slowest). Each output is computed on its own, so the order changes no value (asserted
/// by a test).
/// `threads` workers each fill a run of whole D planes of the crop (same loops, same values).
pub fn extract_crop(
    plan: &CropPlan,
    crop: usize,
    loops: [usize; 3],
    threads: usize,
    pad: f32,
    post: impl Fn(f32) -> f32 + Sync,
    read: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = vec![pad; crop * crop * crop];
    let plane = crop * crop;
    let stride = [plane, crop, 1];
    let [a0, a1, a2] = loops;
    let fill = |first: usize, part: &mut [f32]| {
        // this part holds D planes first..first + n: axis 0's loop covers only those
        let n = part.len() / plane;
        let range = |a: usize| if a == 0 { first..first + n } else { 0..crop };
        for i0 in range(a0) {
            let Some(t0) = plan.taps[a0][i0] else {
                continue;
            };
            for i1 in range(a1) {
                let Some(t1) = plan.taps[a1][i1] else {
                    continue;
                };
                for i2 in range(a2) {
                    let Some(t2) = plan.taps[a2][i2] else {
                        continue;
                    };
                    let mut t = [t0; 3];
                    (t[a1], t[a2]) = (t1, t2);
                    let o = i0 * stride[a0] + i1 * stride[a1] + i2 * stride[a2] - first * plane;
                    part[o] = post(trilinear(t[0], t[1], t[2], &read));
                }
            }
        }
    };
    par_chunks(&mut out, plane, threads, fill);
    out
}

/// Run `f(first_unit, part)` on `threads` consecutive parts of `data`, each a whole number of
/// `unit`-long units (the first unit's index is passed), in scoped threads (inline for one part).
pub fn par_chunks<T: Send>(
    data: &mut [T],
    unit: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let units = data.len() / unit.max(1);
    let per = units.div_ceil(threads.clamp(1, units.max(1))).max(1);
    if per >= units {
        f(0, data);
        return;
    }
    std::thread::scope(|s| {
        for (i, part) in data.chunks_mut(per * unit).enumerate() {
            let f = &f;
            s.spawn(move || f(i * per, part));
        }
    });
}

/// For one axis: the original (model-frame) indices whose resampled value can be non-zero when only
/// model-grid indices [lo, hi) are, with their taps.
pub fn back_taps(n_orig: usize, m_model: usize, lo: i64, hi: i64) -> Vec<(usize, Tap)> {
    let inv = m_model as f64 / n_orig as f64;
    (0..n_orig)
        .map(|j| (j, tap(j, inv, m_model)))
        .filter(|(_, t)| {
            let inside = |x: usize| (lo..hi).contains(&(x as i64));
            inside(t.x0) || (t.w1 > 0.0 && inside(t.x1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_pytorch_half_pixel_rules() {
        // x2 upsampling of 4 samples: PyTorch sources -0.25(->0), 0.25, 0.75, 1.25, ..., 3.25 (x1 clamped)
        let t: Vec<Tap> = (0..8).map(|j| tap(j, 0.5, 4)).collect();
        assert_eq!(
            t[0],
            Tap {
                x0: 0,
                x1: 1,
                w1: 0.0
            }
        );
        assert_eq!(
            t[1],
            Tap {
                x0: 0,
                x1: 1,
                w1: 0.25
            }
        );
        assert_eq!(
            t[7],
            Tap {
                x0: 3,
                x1: 3,
                w1: 0.25
            }
        );
        assert_eq!(model_size(48, 5.0 / 1.0), 240);
        assert_eq!(model_size(512, 0.7), 358);
    }

    /// A C^3 block of seeded values in [0, 1).
    fn random_block(c: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..c * c * c)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// Taps back to an n-voxel axis from an m-voxel model grid where a C^3 block sits at `origin`
    /// (clipped to the grid), and a reader of the block at grid indices (zero outside it).
    fn block_taps(
        vals: &[f32],
        c: usize,
        origin: [i64; 3],
        m: usize,
        n: usize,
    ) -> (Vec<Vec<Tap>>, impl Fn(usize, usize, usize) -> f32 + '_) {
        let taps = (0..3)
            .map(|a| {
                let hi = (origin[a] + c as i64).min(m as i64);
                back_taps(n, m, origin[a].max(0), hi)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect()
            })
            .collect();
        let read = move |d: usize, h: usize, w: usize| {
            let q = [d, h, w].map(|x| x as i64);
            let l = [0, 1, 2].map(|a| q[a] - origin[a]);
            if l.iter().all(|&v| (0..c as i64).contains(&v)) {
                vals[((l[0] as usize * c) + l[1] as usize) * c + l[2] as usize]
            } else {
                0.0
            }
        };
        (taps, read)
    }

    #[test]
    fn separable_grid_is_bit_identical_to_trilinear() {
        // a block inside a 40-voxel grid, taps of an 0.8x resampling back to 50 voxels, some
        // straddling the block's edges (where the outside counts as zero)
        let c = 8;
        let vals = random_block(c, 12345);
        let origin = [3i64, 30, 17];
        let (taps, read) = block_taps(&vals, c, origin, 40, 50);
        let emitted = grid_against_trilinear(&vals, c, origin, &taps, &read, None);
        let count = emitted.iter().filter(|&&e| e).count();
        assert_eq!(count, taps[0].len() * taps[1].len() * taps[2].len());
        assert!(count > 500);
    }

    /// `trilinear_grid` over the block, each emitted value asserted bit-identical to per-voxel
    /// `trilinear`; which outputs were emitted (index (kd * nh + kh) * nw + kw).
    fn grid_against_trilinear(
        vals: &[f32],
        c: usize,
        origin: [i64; 3],
        taps: &[Vec<Tap>],
        read: &impl Fn(usize, usize, usize) -> f32,
        only_above: Option<f32>,
    ) -> Vec<bool> {
        let (nh, nw) = (taps[1].len(), taps[2].len());
        let mut emitted = vec![false; taps[0].len() * nh * nw];
        trilinear_grid(
            vals,
            [c; 3],
            origin,
            [&taps[0], &taps[1], &taps[2]],
            only_above,
            |kd, kh, kw, v| {
                let want = trilinear(taps[0][kd], taps[1][kh], taps[2][kw], read);
                assert_eq!(v.to_bits(), want.to_bits(), "at {kd} {kh} {kw}");
                emitted[(kd * nh + kh) * nw + kw] = true;
            },
        );
        emitted
    }

    #[test]
    fn rows_below_the_threshold_are_skipped_exactly() {
        // a 16^3 block of low values with a blob that crosses 0.5, values a hair below and at 0.5
        // next to it, pasted back at 0.5: the outputs left out all lie at or below 0.5 by the
        // per-voxel `trilinear`, the emitted ones are bit-identical, and most are left out
        let c = 16;
        let mut vals: Vec<f32> = random_block(c, 7).iter().map(|v| v * 0.3).collect();
        for (i, v) in vals.iter_mut().enumerate() {
            let (d, h, w) = (i / (c * c), i / c % c, i % c);
            let r2 = (d as f32 - 5.0).powi(2) + (h as f32 - 6.0).powi(2) + (w as f32 - 7.0).powi(2);
            if r2 < 6.0 {
                *v = 0.9 - 0.06 * r2;
            }
            if (d, h) == (12, 3) {
                *v = if w % 2 == 0 { 0.5 } else { 0.5 - f32::EPSILON };
            }
        }
        let origin = [2i64, 20, 0];
        let (taps, read) = block_taps(&vals, c, origin, 40, 50);
        let total = taps[0].len() * taps[1].len() * taps[2].len();
        let seen = grid_against_trilinear(&vals, c, origin, &taps, &read, Some(0.5));
        let index =
            |kd: usize, kh: usize, kw: usize| (kd * taps[1].len() + kh) * taps[2].len() + kw;
        for (kd, &td) in taps[0].iter().enumerate() {
            for (kh, &th) in taps[1].iter().enumerate() {
                for (kw, &tw) in taps[2].iter().enumerate() {
                    if !seen[index(kd, kh, kw)] {
                        assert!(
                            trilinear(td, th, tw, &read) <= 0.5,
                            "left out {kd} {kh} {kw}"
                        );
                    }
                }
            }
        }
        let emitted = seen.iter().filter(|&&s| s).count();
        assert!(emitted * 4 < total, "{emitted} of {total} emitted");
        // and paste-back with any number of workers (each skipping in its own slabs) gives the
        // per-voxel mask
        let n = [taps[0].len(), taps[1].len(), taps[2].len()];
        let offs: Vec<Vec<usize>> = (0..3)
            .map(|a| (0..n[a]).map(|k| k * [n[1] * n[2], n[2], 1][a]).collect())
            .collect();
        let want: Vec<u8> = (0..total)
            .map(|i| {
                let (kd, kh, kw) = (i / (n[1] * n[2]), i / n[2] % n[1], i % n[2]);
                (trilinear(taps[0][kd], taps[1][kh], taps[2][kw], &read) > 0.5) as u8
            })
            .collect();
        assert!(want.contains(&1), "the blob crosses the threshold");
        for threads in [1, 3, 64] {
            let mut got = vec![0u8; total];
            paste_threshold(
                &vals,
                c,
                origin,
                [&taps[0], &taps[1], &taps[2]],
                [&offs[0], &offs[1], &offs[2]],
                0,
                n[1] * n[2],
                0.5,
                threads,
                &mut got,
            );
            assert!(got == want, "threads {threads}");
        }
    }

    #[test]
    fn paste_does_not_depend_on_the_workers() {
        // an 8^3 block in a 40-voxel model grid pasted back to 50 voxels, for several source layouts
        // (model axis -> source axis, one axis flipped): every worker count gives the mask that
        // per-voxel `trilinear` + threshold gives
        let c = 8;
        let vals = random_block(c, 99);
        let origin = [35i64, 0, 17]; // overhangs the grid's end along D
        let (taps, read) = block_taps(&vals, c, origin, 40, 50);
        for (perm, flip) in [
            ([0, 1, 2], 1),
            ([2, 1, 0], 0),
            ([1, 2, 0], 2),
            ([2, 0, 1], 0),
        ] {
            let mut ext = [0usize; 3];
            for a in 0..3 {
                ext[perm[a]] = taps[a].len();
            }
            let stride = [1, ext[0], ext[0] * ext[1]];
            let offs: Vec<Vec<usize>> = (0..3)
                .map(|a| {
                    let len = taps[a].len();
                    (0..len)
                        .map(|k| if a == flip { len - 1 - k } else { k } * stride[perm[a]])
                        .collect()
                })
                .collect();
            let mut want = vec![0u8; ext[0] * ext[1] * ext[2]];
            for (kd, &td) in taps[0].iter().enumerate() {
                for (kh, &th) in taps[1].iter().enumerate() {
                    for (kw, &tw) in taps[2].iter().enumerate() {
                        if trilinear(td, th, tw, &read) > 0.5 {
                            want[offs[0][kd] + offs[1][kh] + offs[2][kw]] = 1;
                        }
                    }
                }
            }
            assert!(want.contains(&0) && want.contains(&1));
            let split = (0..3).find(|&a| perm[a] == 2).unwrap();
            for threads in [1, 2, 3, 7, 64] {
                let mut got = vec![0u8; want.len()];
                paste_threshold(
                    &vals,
                    c,
                    origin,
                    [&taps[0], &taps[1], &taps[2]],
                    [&offs[0], &offs[1], &offs[2]],
                    split,
                    ext[0] * ext[1],
                    0.5,
                    threads,
                    &mut got,
                );
                assert!(got == want, "perm {perm:?} threads {threads}");
            }
        }
    }

    #[test]
    fn crop_values_do_not_depend_on_the_loop_order() {
        let n = [23usize, 19, 29];
        let read =
            |a: usize, b: usize, e: usize| ((a * 31 + b * 17 + e * 7) % 13) as f32 * 0.37 - 1.0;
        // a crop that overhangs the grid on one side (pad) at a 0.8 / 1.3 / 1.0 scale
        let plan = CropPlan::new([-3, 4, 10], 12, n, [0.8, 1.3, 1.0]);
        let first = extract_crop(&plan, 12, [0, 1, 2], 1, -7.0, |v| v * 2.0, read);
        assert!(first.contains(&-7.0) && first.iter().any(|&v| v != -7.0));
        // every loop order, one to more workers than D planes
        for (loops, threads) in [
            ([2, 1, 0], 1),
            ([1, 2, 0], 3),
            ([0, 2, 1], 5),
            ([0, 1, 2], 20),
        ] {
            let other = extract_crop(&plan, 12, loops, threads, -7.0, |v| v * 2.0, read);
            assert!(
                first
                    .iter()
                    .zip(&other)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{loops:?} {threads}"
            );
        }
    }

    #[test]
    fn constant_volume_stays_constant() {
        let plan = CropPlan::new([-2, 0, 3], 8, [5, 6, 7], [1.5, 0.8, 2.0]);
        let c = extract_crop(&plan, 8, [0, 1, 2], 2, -1.0, |v| v, |_, _, _| 3.0);
        assert!(c[..].iter().all(|&v| v == 3.0 || v == -1.0));
        assert_eq!(c[0], -1.0); // d = -2 is outside
        assert_eq!(c[2 * 64], 3.0);
    }
}
