//! Masks stored as the box of the volume they can be non-zero in, and the ways interactions combine
//! them: a finer zoom level laid over a coarser one, a prediction added to a starting segment, a
//! mask clipped to a box prompt.

use super::VoxelBox;
use crate::error::Result;

/// One object's mask: `data` (0/1, i fastest) over `bbox`; zero everywhere else.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubMask {
    pub(crate) bbox: VoxelBox,
    pub(crate) data: Vec<u8>,
}

impl VoxelBox {
    fn extent(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.hi[a].saturating_sub(self.lo[a]) as usize)
    }

    fn contains(&self, v: [u64; 3]) -> bool {
        (0..3).all(|a| v[a] >= self.lo[a] && v[a] < self.hi[a])
    }

    /// The voxels in both boxes.
    pub fn intersect(&self, o: &VoxelBox) -> VoxelBox {
        VoxelBox {
            lo: [0, 1, 2].map(|a| self.lo[a].max(o.lo[a])),
            hi: [0, 1, 2].map(|a| self.hi[a].min(o.hi[a])),
        }
    }
}

impl SubMask {
    /// The value at source voxel `v` (0 outside the box).
    fn at(&self, v: [u64; 3]) -> u8 {
        if !self.bbox.contains(v) {
            return 0;
        }
        let e = self.bbox.extent();
        let l = [0, 1, 2].map(|a| (v[a] - self.bbox.lo[a]) as usize);
        self.data[l[0] + e[0] * (l[1] + e[1] * l[2])]
    }

    /// A mask over `bbox` whose voxel `v` is `f(v)`.
    fn build(bbox: VoxelBox, f: impl Fn([u64; 3]) -> u8) -> Result<SubMask> {
        if bbox.is_empty() {
            return Ok(SubMask::default());
        }
        let e = bbox.extent();
        let mut data = crate::limits::filled_vec(e[0] * e[1] * e[2], 0u8, "the object's mask")?;
        let mut n = 0;
        for k in 0..e[2] as u64 {
            for j in 0..e[1] as u64 {
                for i in 0..e[0] as u64 {
                    data[n] = f([bbox.lo[0] + i, bbox.lo[1] + j, bbox.lo[2] + k]);
                    n += 1;
                }
            }
        }
        Ok(SubMask { bbox, data })
    }

    /// A full-volume mask (i fastest, any non-zero byte inside) stored as its non-zero box.
    pub(crate) fn from_full(full: &[u8], dims: [usize; 3]) -> Result<SubMask> {
        let mut lo = dims.map(|d| d as u64);
        let mut hi = [0u64; 3];
        let mut n = 0;
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                let row = &full[n..n + dims[0]];
                n += dims[0];
                let (Some(first), Some(last)) = (
                    row.iter().position(|&v| v != 0),
                    row.iter().rposition(|&v| v != 0),
                ) else {
                    continue;
                };
                let v = [first as u64, j as u64, k as u64];
                for a in 0..3 {
                    lo[a] = lo[a].min(v[a]);
                }
                hi = [
                    hi[0].max(last as u64 + 1),
                    hi[1].max(j as u64 + 1),
                    hi[2].max(k as u64 + 1),
                ];
            }
        }
        let bbox = VoxelBox { lo, hi };
        let nx = dims[0] as u64;
        let ny = dims[1] as u64;
        Self::build(bbox, |v| {
            (full[(v[0] + nx * (v[1] + ny * v[2])) as usize] != 0) as u8
        })
    }

    /// `self` with `top` laid over it inside `cover` (a finer level's prediction where it has one).
    pub(crate) fn overlay(&self, top: &SubMask, cover: VoxelBox) -> Result<SubMask> {
        let bbox = self.bbox.union(&top.bbox.intersect(&cover));
        Self::build(bbox, |v| {
            if cover.contains(v) {
                top.at(v)
            } else {
                self.at(v)
            }
        })
    }

    /// The voxels set in either mask.
    pub(crate) fn union(&self, o: &SubMask) -> Result<SubMask> {
        Self::build(self.bbox.union(&o.bbox), |v| self.at(v) | o.at(v))
    }

    /// The mask with every voxel outside `keep` cleared.
    pub(crate) fn clip(&self, keep: VoxelBox) -> Result<SubMask> {
        Self::build(self.bbox.intersect(&keep), |v| self.at(v))
    }

    pub(crate) fn voxels(&self) -> u64 {
        self.data.iter().map(|&v| v as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(m: &SubMask, dims: [usize; 3]) -> Vec<u8> {
        let mut out = vec![0u8; dims[0] * dims[1] * dims[2]];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    out[i + dims[0] * (j + dims[1] * k)] = m.at([i as u64, j as u64, k as u64]);
                }
            }
        }
        out
    }

    fn random_mask(dims: [usize; 3], seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..dims[0] * dims[1] * dims[2])
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33).is_multiple_of(5) as u8
            })
            .collect()
    }

    #[test]
    fn combinations_match_whole_volume_arithmetic() {
        let dims = [7, 5, 6];
        let n = dims[0] * dims[1] * dims[2];
        let a_full = random_mask(dims, 1);
        let mut b_full = random_mask(dims, 2);
        // b only inside a smaller box, so its stored box differs from a's
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    if !(1..5).contains(&i) || !(2..4).contains(&j) {
                        b_full[i + dims[0] * (j + dims[1] * k)] = 0;
                    }
                }
            }
        }
        let a = SubMask::from_full(&a_full, dims).unwrap();
        let b = SubMask::from_full(&b_full, dims).unwrap();
        assert_eq!(full(&a, dims), a_full);
        assert_eq!(full(&b, dims), b_full);
        let inside = |i: usize, j: usize, k: usize, bx: &VoxelBox| {
            bx.contains([i as u64, j as u64, k as u64])
        };
        let cover = VoxelBox {
            lo: [2, 0, 1],
            hi: [6, 4, 5],
        };
        let over = full(&a.overlay(&b, cover).unwrap(), dims);
        let uni = full(&a.union(&b).unwrap(), dims);
        let clip = full(&a.clip(cover).unwrap(), dims);
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let x = i + dims[0] * (j + dims[1] * k);
                    let c = inside(i, j, k, &cover);
                    assert_eq!(over[x], if c { b_full[x] } else { a_full[x] });
                    assert_eq!(uni[x], a_full[x] | b_full[x]);
                    assert_eq!(clip[x], if c { a_full[x] } else { 0 });
                }
            }
        }
        assert_eq!(a.voxels(), a_full.iter().map(|&v| v as u64).sum::<u64>());
        let empty = SubMask::from_full(&vec![0u8; n], dims).unwrap();
        assert!(empty.bbox.is_empty() && empty.data.is_empty());
        assert_eq!(full(&empty.union(&b).unwrap(), dims), b_full);
    }
}
