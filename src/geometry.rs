//! Image geometry as ITK has it: physical point (LPS, mm) = origin + direction * diag(spacing) * index,
//! index (i, j, k) with i fastest in memory.

use crate::error::{err, Result, Sam3dStatus};

/// Largest number of voxels a volume may have (4 Gi voxels: a 1600^3 volume); larger headers are
/// refused before anything is allocated.
pub const MAX_VOXELS: u64 = 1 << 32;

/// How far a direction column's length may be from 1 (float32 headers, rounding in callers).
const UNIT_TOLERANCE: f64 = 1e-3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    /// `direction[r][c]`: component r (L, P, S) of the unit vector of index axis c.
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    pub fn new(
        dims: [usize; 3],
        spacing: [f64; 3],
        origin: [f64; 3],
        direction: [[f64; 3]; 3],
    ) -> Result<Self> {
        let g = Geometry {
            dims,
            spacing,
            origin,
            direction,
        };
        g.validate()?;
        Ok(g)
    }

    pub fn validate(&self) -> Result<()> {
        if self.dims.contains(&0) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("volume dimensions {:?} contain a zero", self.dims),
            ));
        }
        self.voxel_count()?;
        if self.spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("spacing {:?} must be finite and positive", self.spacing),
            ));
        }
        if self.origin.iter().any(|o| !o.is_finite()) {
            return Err(err(Sam3dStatus::InvalidArgument, "origin is not finite"));
        }
        let d = &self.direction;
        if d.iter().flatten().any(|v| !v.is_finite()) {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("direction matrix {d:?} is not finite"),
            ));
        }
        // ITK's direction columns are unit vectors (the spacing is separate); a looser check let
        // matrices like 1e200 * I through, whose determinant is infinite
        for c in 0..3 {
            let len = (0..3).map(|r| d[r][c] * d[r][c]).sum::<f64>().sqrt();
            if (len - 1.0).abs() > UNIT_TOLERANCE {
                return Err(err(
                    Sam3dStatus::InvalidArgument,
                    format!(
                        "direction column {c} has length {len}: columns must be unit vectors \
                         (the voxel size goes in spacing)"
                    ),
                ));
            }
        }
        if det3(d).abs() < 1e-6 {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("direction matrix {d:?} is singular"),
            ));
        }
        Ok(())
    }

    /// Voxel count with overflow and size checks.
    pub fn voxel_count(&self) -> Result<usize> {
        let n = self
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        match n {
            Some(n) if n <= MAX_VOXELS => Ok(n as usize),
            _ => Err(err(
                Sam3dStatus::TooLarge,
                format!(
                    "volume of {:?} voxels exceeds the limit of {} voxels",
                    self.dims, MAX_VOXELS
                ),
            )),
        }
    }

    /// Physical LPS point of a continuous index.
    pub fn index_to_lps(&self, idx: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            for c in 0..3 {
                *pr += self.direction[r][c] * self.spacing[c] * idx[c];
            }
        }
        p
    }

    /// Continuous index of a physical LPS point.
    pub fn lps_to_index(&self, p: [f64; 3]) -> [f64; 3] {
        let inv = inv3(&self.direction);
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let mut idx = [0.0; 3];
        for c in 0..3 {
            let v: f64 = (0..3).map(|r| inv[c][r] * d[r]).sum();
            idx[c] = v / self.spacing[c];
        }
        idx
    }

    /// 4x4 index-to-LPS matrix (row-major).
    pub fn index_to_lps_matrix(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = self.direction[r][c] * self.spacing[c];
            }
            m[r][3] = self.origin[r];
        }
        m[3][3] = 1.0;
        m
    }
}

pub fn ras_to_lps(p: [f64; 3]) -> [f64; 3] {
    [-p[0], -p[1], p[2]]
}

pub fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

pub fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let d = det3(m);
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let (a, b) = ((j + 1) % 3, (j + 2) % 3);
            let (c, e) = ((i + 1) % 3, (i + 2) % 3);
            r[i][j] = (m[a][c] * m[b][e] - m[a][e] * m[b][c]) / d;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_world_round_trip_oblique() {
        let a: f64 = 0.3;
        let dir = [
            [a.cos(), -a.sin(), 0.0],
            [a.sin(), a.cos(), 0.0],
            [0.0, 0.0, -1.0],
        ];
        let g = Geometry::new([10, 20, 30], [0.5, 0.7, 2.0], [1.0, -2.0, 3.0], dir).unwrap();
        let idx = [3.25, 7.5, 12.0];
        let back = g.lps_to_index(g.index_to_lps(idx));
        for c in 0..3 {
            assert!((back[c] - idx[c]).abs() < 1e-9);
        }
        let inv = inv3(&dir);
        let mut id = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                id[i][j] = (0..3).map(|k| dir[i][k] * inv[k][j]).sum();
                assert!((id[i][j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let e = Geometry::new([1 << 20, 1 << 20, 1 << 20], [1.0; 3], [0.0; 3], eye).unwrap_err();
        assert_eq!(e.status, Sam3dStatus::TooLarge);
        let e = Geometry::new([0, 1, 1], [1.0; 3], [0.0; 3], eye).unwrap_err();
        assert_eq!(e.status, Sam3dStatus::InvalidArgument);
        let e = Geometry::new([1, 1, 1], [f64::NAN, 1.0, 1.0], [0.0; 3], eye).unwrap_err();
        assert_eq!(e.status, Sam3dStatus::InvalidArgument);
        // directions whose determinant overflows, or that are scaled, singular or NaN
        let scaled = eye.map(|r| r.map(|v| v * 1e200));
        let mut half = eye;
        half[1][1] = 0.5;
        // unit columns, all the same axis
        let flat = [[1.0, 1.0, 1.0], [0.0; 3], [0.0; 3]];
        let mut nan = eye;
        nan[0][1] = f64::NAN;
        for d in [scaled, half, nan, flat] {
            let e = Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3], d).unwrap_err();
            assert_eq!(e.status, Sam3dStatus::InvalidArgument, "{d:?}");
        }
        // an oblique direction with float32 rounding stays valid
        let c = (0.3f32.cos()) as f64;
        let s = (0.3f32.sin()) as f64;
        Geometry::new(
            [2, 2, 2],
            [1.0; 3],
            [0.0; 3],
            [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
    }
}
