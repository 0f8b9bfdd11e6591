//! The manifest's inference refinements (the optional `inference` block, contract in docs/model-package.md):
//! test-time flips of the crop, and keeping only the mask components that a click touches.
//! The reference for both is `onnx/sam3d_onnx/evaluation/reference_pipeline.py`.

/// Flip counts a package or a host may ask for: flip number `b` (0..n) reverses every crop axis `a`
/// (D, H, W) whose bit `a` is set in `b`, so 2 flips D, 4 flips D and H, 8 all three.
pub(crate) const FLIP_COUNTS: [u32; 4] = [1, 2, 4, 8];

/// Whether test-time flip number `b` reverses crop axis `a`.
#[inline]
pub fn flips_axis(b: usize, a: usize) -> bool {
    (b >> a) & 1 == 1
}

/// `cube` (c^3 values, D slowest, W fastest) reversed along the axes flip `b` names. Its own inverse.
pub fn flip_cube(cube: &[f32], c: usize, b: usize) -> Vec<f32> {
    debug_assert_eq!(cube.len(), c * c * c);
    let idx = |i: usize, a: usize| if flips_axis(b, a) { c - 1 - i } else { i };
    let mut out = Vec::with_capacity(cube.len());
    for d in 0..c {
        for h in 0..c {
            let row = &cube[(idx(d, 0) * c + idx(h, 1)) * c..][..c];
            if flips_axis(b, 2) {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

/// A click (continuous crop coordinates, voxel centres at integers) under flip `b`.
pub fn flip_point(p: [f64; 3], c: usize, b: usize) -> [f64; 3] {
    [0, 1, 2].map(|a| {
        if flips_axis(b, a) {
            (c - 1) as f64 - p[a]
        } else {
            p[a]
        }
    })
}

/// Keep only the 26-connected components of `mask` (0/1, extent `ext`, axis 0 fastest) that contain
/// one of `seeds` (voxel indices inside the extent). When no seed lies on the mask, the mask stays as
/// it is: the model disagreed with every click, and an empty answer would hide what it found.
/// Returns the number of voxels removed.
pub fn keep_seeded_components(mask: &mut [u8], ext: [usize; 3], seeds: &[[usize; 3]]) -> u64 {
    debug_assert_eq!(mask.len(), ext[0] * ext[1] * ext[2]);
    let at = |v: [usize; 3]| v[0] + ext[0] * (v[1] + ext[1] * v[2]);
    // flood fill from the seeds, marking reached voxels 2; then 1 -> 0 and 2 -> 1
    let mut stack: Vec<[usize; 3]> = seeds
        .iter()
        .copied()
        .filter(|&s| (0..3).all(|a| s[a] < ext[a]) && mask[at(s)] == 1)
        .collect();
    if stack.is_empty() {
        return 0;
    }
    for &s in &stack {
        mask[at(s)] = 2;
    }
    while let Some(v) = stack.pop() {
        let lo = v.map(|x| x.saturating_sub(1));
        let hi = [0, 1, 2].map(|a| (v[a] + 1).min(ext[a] - 1));
        for z in lo[2]..=hi[2] {
            for y in lo[1]..=hi[1] {
                for x in lo[0]..=hi[0] {
                    let i = at([x, y, z]);
                    if mask[i] == 1 {
                        mask[i] = 2;
                        stack.push([x, y, z]);
                    }
                }
            }
        }
    }
    let mut removed = 0;
    for m in mask.iter_mut() {
        removed += (*m == 1) as u64;
        *m = (*m == 2) as u8;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn flips_reverse_the_named_axes_and_undo_themselves() {
        let c = 3;
        let cube: Vec<f32> = (0..27).map(|v| v as f32).collect();
        for b in 0..8 {
            let f = flip_cube(&cube, c, b);
            for d in 0..c {
                for h in 0..c {
                    for w in 0..c {
                        let q =
                            flip_point([d as f64, h as f64, w as f64], c, b).map(|v| v as usize);
                        // the flipped cube at the flipped position holds the original value
                        assert_eq!(f[(q[0] * c + q[1]) * c + q[2]], cube[(d * c + h) * c + w]);
                    }
                }
            }
            assert_eq!(flip_cube(&f, c, b), cube);
        }
        assert_eq!(flip_cube(&cube, c, 4)[..3], [2.0, 1.0, 0.0]);
        assert_eq!(flip_cube(&cube, c, 1)[..3], [18.0, 19.0, 20.0]);
    }

    /// Brute-force labelling: repeat "a voxel joins when a 26-neighbour is in" until nothing changes.
    fn reference(mask: &[u8], ext: [usize; 3], seeds: &[[usize; 3]]) -> Vec<u8> {
        let at = |x: usize, y: usize, z: usize| x + ext[0] * (y + ext[1] * z);
        let mut inn = vec![false; mask.len()];
        for s in seeds {
            if mask[at(s[0], s[1], s[2])] == 1 {
                inn[at(s[0], s[1], s[2])] = true;
            }
        }
        if !inn.iter().any(|&v| v) {
            return mask.to_vec();
        }
        loop {
            let mut changed = false;
            for z in 0..ext[2] {
                for y in 0..ext[1] {
                    for x in 0..ext[0] {
                        if mask[at(x, y, z)] == 0 || inn[at(x, y, z)] {
                            continue;
                        }
                        let mut near = false;
                        for dz in -1i64..=1 {
                            for dy in -1i64..=1 {
                                for dx in -1i64..=1 {
                                    let (a, b, c) = (x as i64 + dx, y as i64 + dy, z as i64 + dz);
                                    if a >= 0
                                        && b >= 0
                                        && c >= 0
                                        && (a as usize) < ext[0]
                                        && (b as usize) < ext[1]
                                        && (c as usize) < ext[2]
                                        && inn[at(a as usize, b as usize, c as usize)]
                                    {
                                        near = true;
                                    }
                                }
                            }
                        }
                        if near {
                            inn[at(x, y, z)] = true;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                return inn.iter().map(|&v| v as u8).collect();
            }
        }
    }

    #[test]
    fn seeded_components_match_brute_force_labelling() {
        let mut seed = 7u64;
        for trial in 0..40 {
            let ext = [
                3 + (lcg(&mut seed) % 9) as usize,
                3 + (lcg(&mut seed) % 7) as usize,
                2 + (lcg(&mut seed) % 6) as usize,
            ];
            let n = ext[0] * ext[1] * ext[2];
            let density = 25 + trial % 40; // percent: from scattered islands to one big blob
            let mask: Vec<u8> = (0..n)
                .map(|_| (lcg(&mut seed) % 100 < density as u64) as u8)
                .collect();
            let seeds: Vec<[usize; 3]> = (0..1 + trial % 3)
                .map(|_| [0, 1, 2].map(|a| (lcg(&mut seed) as usize) % ext[a]))
                .collect();
            let want = reference(&mask, ext, &seeds);
            let mut got = mask.clone();
            let removed = keep_seeded_components(&mut got, ext, &seeds);
            assert_eq!(got, want, "trial {trial}");
            let before: u64 = mask.iter().map(|&v| v as u64).sum();
            let after: u64 = got.iter().map(|&v| v as u64).sum();
            assert_eq!(removed, before - after);
        }
    }

    #[test]
    fn diagonal_neighbours_join_and_an_unseeded_mask_is_kept() {
        // two voxels touching only at a corner are one component; a far voxel is another
        let ext = [4, 4, 4];
        let at = |x: usize, y: usize, z: usize| x + 4 * (y + 4 * z);
        let mut m = vec![0u8; 64];
        m[at(0, 0, 0)] = 1;
        m[at(1, 1, 1)] = 1;
        m[at(3, 3, 3)] = 1;
        let mut a = m.clone();
        assert_eq!(keep_seeded_components(&mut a, ext, &[[0, 0, 0]]), 1);
        assert_eq!(a[at(1, 1, 1)], 1);
        assert_eq!(a[at(3, 3, 3)], 0);
        // a seed off the mask (or outside the extent): nothing removed
        let mut b = m.clone();
        assert_eq!(
            keep_seeded_components(&mut b, ext, &[[2, 0, 0], [9, 9, 9]]),
            0
        );
        assert_eq!(b, m);
    }
}
