//! NIfTI-1 reading (`nifti_read`) and writing with ITK's geometry rules.
//!
//! * Masks are written as uint8 with the same matrix in the qform and the sform (both code 1), so
//!   every reader agrees, through a temporary file renamed into place.

use std::path::{Path, PathBuf};

use ndarray::{ArrayView3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;

use crate::error::{err, Result, Sam3dStatus};
use crate::geometry::{det3, Geometry};

pub use crate::nifti_read::{read, read_bytes};

/// Quaternion (b, c, d), qfac of a rotation-with-reflection matrix (NIfTI convention).
fn quaternion(rot: &[[f64; 3]; 3]) -> ([f64; 3], f64) {
    let mut r = *rot;
    let qfac = if det3(&r) < 0.0 { -1.0 } else { 1.0 };
    for row in r.iter_mut() {
        row[2] *= qfac;
    }
    let tr = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d);
    if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        a = 0.25 * s;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        a = (r[2][1] - r[1][2]) / s;
        b = 0.25 * s;
        c = (r[0][1] + r[1][0]) / s;
        d = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        a = (r[0][2] - r[2][0]) / s;
        b = (r[0][1] + r[1][0]) / s;
        c = 0.25 * s;
        d = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        a = (r[1][0] - r[0][1]) / s;
        b = (r[0][2] + r[2][0]) / s;
        c = (r[1][2] + r[2][1]) / s;
        d = 0.25 * s;
    }
    // NIfTI stores a >= 0
    let sgn = if a < 0.0 { -1.0 } else { 1.0 };
    ([b * sgn, c * sgn, d * sgn], qfac)
}

/// Header for a uint8 mask on `geom`: qform = sform (code 1), RAS.
fn mask_header(geom: &Geometry) -> NiftiHeader {
    let mut h = NiftiHeader::default();
    let mut ras = geom.direction;
    for c in 0..3 {
        ras[0][c] = -ras[0][c];
        ras[1][c] = -ras[1][c];
    }
    let o = [-geom.origin[0], -geom.origin[1], geom.origin[2]];
    let (q, qfac) = quaternion(&ras);
    h.dim = [
        3,
        geom.dims[0] as u16,
        geom.dims[1] as u16,
        geom.dims[2] as u16,
        1,
        1,
        1,
        1,
    ];
    h.qform_code = 1;
    h.sform_code = 1;
    h.quatern_b = q[0] as f32;
    h.quatern_c = q[1] as f32;
    h.quatern_d = q[2] as f32;
    h.quatern_x = o[0] as f32;
    h.quatern_y = o[1] as f32;
    h.quatern_z = o[2] as f32;
    h.pixdim = [
        qfac as f32,
        geom.spacing[0] as f32,
        geom.spacing[1] as f32,
        geom.spacing[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    let row = |r: usize| -> [f32; 4] {
        [
            (ras[r][0] * geom.spacing[0]) as f32,
            (ras[r][1] * geom.spacing[1]) as f32,
            (ras[r][2] * geom.spacing[2]) as f32,
            o[r] as f32,
        ]
    };
    h.srow_x = row(0);
    h.srow_y = row(1);
    h.srow_z = row(2);
    h.xyzt_units = 2; // mm
    h
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = if name.ends_with(".nii.gz") {
        ".nii.gz"
    } else {
        ".nii"
    };
    // no dot before the suffix: the nifti crate replaces the last extension of the name it is
    // given (".m.nii.tmp-1.nii" would become ".m.nii.nii", and the rename would find no file)
    let stem = name.strip_suffix(suffix).unwrap_or(&name).replace('.', "_");
    path.with_file_name(format!(".{}-tmp-{}{}", stem, std::process::id(), suffix))
}

/// Write a uint8 mask (i fastest) on `geom` atomically: a temporary file in the same directory is
/// renamed into place, so a failure never leaves a truncated file at `path`.
pub fn write_mask(path: &Path, geom: &Geometry, mask: &[u8]) -> Result<()> {
    let n = geom.voxel_count()?;
    if mask.len() != n {
        return Err(err(
            Sam3dStatus::InvalidArgument,
            format!("mask has {} voxels, geometry {}", mask.len(), n),
        ));
    }
    if geom.dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(err(
            Sam3dStatus::TooLarge,
            format!("dimensions {:?} exceed NIfTI-1's limit of 32767", geom.dims),
        ));
    }
    let name = path.to_string_lossy();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        return Err(err(
            Sam3dStatus::InvalidArgument,
            format!("{name}: output must end in .nii or .nii.gz"),
        ));
    }
    // a view of the caller's mask: no whole-volume copy
    let arr = ArrayView3::from_shape((geom.dims[0], geom.dims[1], geom.dims[2]).f(), mask)
        .map_err(|e| err(Sam3dStatus::Internal, e.to_string()))?;
    let header = mask_header(geom);
    let tmp = temp_path(path);
    let mut options = WriterOptions::new(&tmp).reference_header(&header);
    if name.ends_with(".gz") {
        // gzip level 2: with flate2's zlib-rs backend, level 1 is its "quick" strategy, slower
        // here and 7 times larger than level 2, which is also faster than level 6 for masks
        // (docs/performance.md). Set for .gz alone: the writer
        // compresses whatever the name when a level is given.
        options = options.compression_level(flate2::Compression::new(2));
    }
    let res = options.write_nifti(&arr);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(
            Sam3dStatus::Io,
            format!("{}: cannot write: {e}", path.display()),
        ));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(
            Sam3dStatus::Io,
            format!(
                "{}: cannot move the written file into place: {e}",
                path.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nifti_read::{header_geometry, Header};

    /// The reader's view of a header the writer made.
    fn parsed(h: &NiftiHeader) -> Header {
        Header {
            big_endian: false,
            dim: h.dim.map(|d| d as i16),
            datatype: h.datatype,
            pixdim: h.pixdim,
            vox_offset: h.vox_offset,
            scl_slope: h.scl_slope,
            scl_inter: h.scl_inter,
            qform_code: h.qform_code,
            sform_code: h.sform_code,
            quatern: [h.quatern_b, h.quatern_c, h.quatern_d],
            qoffset: [h.quatern_x, h.quatern_y, h.quatern_z],
            srow: [h.srow_x, h.srow_y, h.srow_z],
            magic: *b"n+1\0",
        }
    }

    #[test]
    fn quaternion_round_trip_including_reflection() {
        let a: f64 = 0.4;
        for flip in [1.0, -1.0] {
            let rot = [
                [a.cos(), -a.sin(), 0.0],
                [a.sin(), a.cos(), 0.0],
                [0.0, 0.0, flip],
            ];
            let geom = Geometry::new([4, 5, 6], [0.5, 0.7, 2.0], [1.0, 2.0, 3.0], rot).unwrap();
            let h = mask_header(&geom);
            let mut qh = h.clone();
            qh.sform_code = 0;
            let g = header_geometry(&parsed(&qh)).unwrap();
            let s = header_geometry(&parsed(&h)).unwrap();
            for r in 0..3 {
                for c in 0..3 {
                    assert!(
                        (g.direction[r][c] - geom.direction[r][c]).abs() < 1e-6,
                        "{flip} {r} {c}"
                    );
                    assert!((s.direction[r][c] - geom.direction[r][c]).abs() < 1e-6);
                }
                assert!((g.origin[r] - geom.origin[r]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn written_mask_reads_back_with_geometry() {
        let dir = std::env::temp_dir().join(format!("sam3d-nifti-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let geom = Geometry::new(
            [3, 4, 5],
            [1.0, 2.0, 3.0],
            [-5.0, 6.0, 7.0],
            [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        let mask: Vec<u8> = (0..60).map(|i| (i % 3 == 0) as u8).collect();
        // compressed and plain, names with dots in them too
        for name in ["m.nii.gz", "m.nii", "mask.v2.nii", "mask.v2.nii.gz"] {
            let p = dir.join(name);
            write_mask(&p, &geom, &mask).unwrap();
            let v = read(&p).unwrap();
            assert_eq!(v.geom.dims, geom.dims);
            for (a, b) in v.to_vec().iter().zip(mask.iter()) {
                assert_eq!(*a, *b as f32);
            }
            for r in 0..3 {
                assert!((v.geom.origin[r] - geom.origin[r]).abs() < 1e-5);
            }
        }
        // nothing else left behind (no temporary files)
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["m.nii", "m.nii.gz", "mask.v2.nii", "mask.v2.nii.gz"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
