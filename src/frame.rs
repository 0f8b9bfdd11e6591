//! The model frame: which source index axis (and direction) each model axis (D, H, W) reads.
//!
//! "orient": permutation + flips (exact, no interpolation) so that D, H, W increase towards the
//! manifest's orientation code; a volume flipped or permuted on disk gives the same model-frame array.
//! "array": the file's (i, j, k) array transposed as the official code does (no reorientation).

use crate::geometry::Geometry;
use crate::manifest::FrameMode;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMap {
    /// model axis a reads source index axis `perm[a]` ...
    pub perm: [usize; 3],
    /// ... reversed when `flip[a]`.
    pub flip: [bool; 3],
    /// source dimensions (i, j, k)
    pub src_dims: [usize; 3],
}

const PERMS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

impl FrameMap {
    pub fn new(mode: FrameMode, geom: &Geometry) -> FrameMap {
        match mode {
            FrameMode::Array(t) => FrameMap {
                perm: t,
                flip: [false; 3],
                src_dims: geom.dims,
            },
            FrameMode::Orient(targets) => {
                // the permutation whose axes best align with the targets (oblique volumes: largest
                // total |cosine|), then flip each axis that points away from its target
                let dot = |c: usize, t: &[f64; 3]| {
                    (0..3).map(|r| geom.direction[r][c] * t[r]).sum::<f64>()
                };
                let best = PERMS
                    .iter()
                    .max_by(|p, q| {
                        let s = |p: &[usize; 3]| {
                            (0..3).map(|a| dot(p[a], &targets[a]).abs()).sum::<f64>()
                        };
                        s(p).partial_cmp(&s(q)).unwrap_or(std::cmp::Ordering::Equal)
                    })
                    .copied()
                    .unwrap_or([0, 1, 2]);
                let flip = [0, 1, 2].map(|a| dot(best[a], &targets[a]) < 0.0);
                FrameMap {
                    perm: best,
                    flip,
                    src_dims: geom.dims,
                }
            }
        }
    }

    /// Dimensions of the model-frame array.
    pub fn dims(&self) -> [usize; 3] {
        self.perm.map(|p| self.src_dims[p])
    }

    /// Source spacing along the model axes.
    pub fn spacing(&self, geom: &Geometry) -> [f64; 3] {
        self.perm.map(|p| geom.spacing[p])
    }

    /// Continuous source index (i, j, k) -> continuous model-frame index (voxel centres at integers).
    pub fn to_model(self, idx: [f64; 3]) -> [f64; 3] {
        [0, 1, 2].map(|a| {
            let n = self.src_dims[self.perm[a]] as f64;
            let x = idx[self.perm[a]];
            if self.flip[a] {
                n - 1.0 - x
            } else {
                x
            }
        })
    }

    /// Continuous model-frame index -> continuous source index (i, j, k): the inverse of `to_model`.
    pub fn to_source(self, x: [f64; 3]) -> [f64; 3] {
        let mut idx = [0.0; 3];
        for a in 0..3 {
            let p = self.perm[a];
            let n = self.src_dims[p] as f64;
            idx[p] = if self.flip[a] { n - 1.0 - x[a] } else { x[a] };
        }
        idx
    }

    /// Model-frame index along axis `a` -> source index along axis `perm[a]`.
    #[inline]
    pub fn src_index(&self, a: usize, m: usize) -> usize {
        if self.flip[a] {
            self.src_dims[self.perm[a]] - 1 - m
        } else {
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(dir: [[f64; 3]; 3]) -> Geometry {
        Geometry::new([4, 5, 6], [1.0, 2.0, 3.0], [0.0; 3], dir).unwrap()
    }

    #[test]
    fn orient_to_ras_from_lps_and_permuted_volumes() {
        let ras = FrameMode::Orient([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
        // LPS identity: i -> L, j -> P, k -> S: D and H flipped, no permutation
        let m = FrameMap::new(
            ras,
            &geom([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        );
        assert_eq!(m.perm, [0, 1, 2]);
        assert_eq!(m.flip, [true, true, false]);
        assert_eq!(m.to_model([0.0, 0.0, 2.0]), [3.0, 4.0, 2.0]);
        // i -> S, j -> R, k -> A (a permuted file): D reads j, H reads k, W reads i
        let m = FrameMap::new(
            ras,
            &geom([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
        );
        assert_eq!(m.perm, [1, 2, 0]);
        assert_eq!(m.flip, [false, false, false]);
        assert_eq!(m.dims(), [5, 6, 4]);
        assert_eq!(
            m.spacing(&geom([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])),
            [2.0, 3.0, 1.0]
        );
    }

    #[test]
    fn array_mode_transposes_only() {
        let m = FrameMap::new(
            FrameMode::Array([2, 1, 0]),
            &geom([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        );
        assert_eq!(m.perm, [2, 1, 0]);
        assert_eq!(m.flip, [false; 3]);
        assert_eq!(m.to_model([1.0, 2.0, 3.0]), [3.0, 2.0, 1.0]);
    }
}
