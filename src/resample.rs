//! Resampling exactly as the official pipeline does with PyTorch `F.interpolate` (trilinear,
//! `align_corners=False`), computed only where it is needed:
//! * to the model spacing (`scale_factor` s): output size floor(n * s), source coordinate of output
//!   index j = (j + 0.5) / s - 0.5, negative clamped to 0, upper neighbour clamped to n - 1;
//! * back to the original grid (`size` n): source coordinate (j + 0.5) * m / n - 0.5, same clamps.
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
pub fn extract_crop(
    plan: &CropPlan,
    crop: usize,
    pad: f32,
    post: impl Fn(f32) -> f32,
    read: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let mut out = vec![pad; crop * crop * crop];
    for (d, td) in plan.taps[0].iter().enumerate() {
        let Some(td) = td else { continue };
        for (h, th) in plan.taps[1].iter().enumerate() {
            let Some(th) = th else { continue };
            let row = &mut out[(d * crop + h) * crop..(d * crop + h + 1) * crop];
            for (w, tw) in plan.taps[2].iter().enumerate() {
                let Some(tw) = tw else { continue };
                row[w] = post(trilinear(*td, *th, *tw, &read));
            }
        }
    }
    out
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

    #[test]
    fn constant_volume_stays_constant() {
        let plan = CropPlan::new([-2, 0, 3], 8, [5, 6, 7], [1.5, 0.8, 2.0]);
        let c = extract_crop(&plan, 8, -1.0, |v| v, |_, _, _| 3.0);
        assert!(c[..].iter().all(|&v| v == 3.0 || v == -1.0));
        assert_eq!(c[0], -1.0); // d = -2 is outside
        assert_eq!(c[2 * 64], 3.0);
    }
}
