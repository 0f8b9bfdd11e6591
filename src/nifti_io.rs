//! NIfTI-1 reading and writing with ITK's geometry rules.
//!
//! * Which transform: the sform when `sform_code` is 1 (scanner), else the qform when its code is
//!   non-zero, else the sform when its code is non-zero, else none — what ITK / SimpleITK /
//!   3D Slicer read (nibabel prefers the sform whenever it is set). As in ITK, the spacing always
//!   comes from pixdim; the transform gives the direction (normalised columns) and the origin.
//! * NIfTI's world frame is RAS; ITK's and ours is LPS: the first two rows change sign.
//! * Masks are written as uint8 with the same matrix in the qform and the sform (both code 1), so
//!   every reader agrees, through a temporary file renamed into place.

use std::path::{Path, PathBuf};

use ndarray::{Array3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::{NiftiHeader, NiftiObject, NiftiType, ReaderOptions};

use crate::error::{err, Result, Sam3dStatus};
use crate::geometry::{det3, Geometry};
use crate::volume::Volume;

fn bad(path: &Path, msg: impl std::fmt::Display) -> crate::error::Error {
    err(
        Sam3dStatus::BadVolume,
        format!("{}: {}", path.display(), msg),
    )
}

/// Geometry of a header (ITK's choice of transform), refusing absurd sizes before any allocation.
pub fn header_geometry(h: &NiftiHeader, path: &Path) -> Result<Geometry> {
    let nd = h.dim[0] as usize;
    if !(1..=7).contains(&nd) {
        return Err(bad(
            path,
            format!("dim[0] = {} is not a valid dimensionality", h.dim[0]),
        ));
    }
    let mut dims = [1usize; 3];
    for a in 0..nd.min(3) {
        dims[a] = h.dim[a + 1] as usize;
    }
    if (4..=nd).any(|a| h.dim[a] > 1) {
        return Err(bad(
            path,
            format!(
                "a {}-D image with more than one volume is not supported",
                nd
            ),
        ));
    }
    let pix = |a: usize| {
        let v = h.pixdim[a + 1].abs() as f64;
        if v > 0.0 && v.is_finite() {
            v
        } else {
            1.0
        }
    };
    // ITK takes the spacing from pixdim whatever the transform, and only the direction (the
    // normalised columns) and the origin from the chosen matrix.
    let spacing = [pix(0), pix(1), pix(2)];
    let (rot, origin) = if h.sform_code == 1 || (h.qform_code <= 0 && h.sform_code > 0) {
        let rows = [h.srow_x, h.srow_y, h.srow_z];
        let mut m = [[0.0; 3]; 3];
        for c in 0..3 {
            let col: Vec<f64> = (0..3).map(|r| rows[r][c] as f64).collect();
            let n = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
            if n == 0.0 || !n.is_finite() {
                return Err(bad(path, "sform has a zero or non-finite column"));
            }
            for r in 0..3 {
                m[r][c] = col[r] / n;
            }
        }
        (m, [rows[0][3] as f64, rows[1][3] as f64, rows[2][3] as f64])
    } else if h.qform_code > 0 {
        let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let mut m = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        for row in m.iter_mut() {
            row[2] *= qfac;
        }
        (
            m,
            [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
        )
    } else {
        (
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
        )
    };
    // RAS -> LPS
    let mut dir = rot;
    for c in 0..3 {
        dir[0][c] = -dir[0][c];
        dir[1][c] = -dir[1][c];
    }
    let origin = [-origin[0], -origin[1], origin[2]];
    Geometry::new(dims, spacing, origin, dir).map_err(|e| match e.status {
        // a header claiming an absurd size keeps its own status: refused before allocating
        Sam3dStatus::TooLarge => err(
            Sam3dStatus::TooLarge,
            format!("{}: {}", path.display(), e.message),
        ),
        _ => bad(path, e.message),
    })
}

/// Read a `.nii` / `.nii.gz` file as float32 (scl_slope / scl_inter applied), i fastest.
pub fn read(path: &Path) -> Result<Volume> {
    if !path.exists() {
        return Err(err(
            Sam3dStatus::Io,
            format!("{}: no such file", path.display()),
        ));
    }
    let header = NiftiHeader::from_file(path)
        .map_err(|e| bad(path, format!("not a readable NIfTI-1 header: {e}")))?;
    let geom = header_geometry(&header, path)?;
    let n = geom.voxel_count()?;
    let dtype = header
        .data_type()
        .map_err(|e| bad(path, format!("unsupported datatype: {e}")))?;
    // refused before the data is read: the datatypes `voxels_f32` decodes are the supported ones
    let unsupported = || bad(path, format!("datatype {dtype:?} is not supported"));
    if voxels_f32(&[], dtype, false, 1.0, 0.0).is_none() {
        return Err(unsupported());
    }
    // A compressed file cannot be sized up front; an uncompressed one that is too short is refused
    // before reading (the header may claim far more data than the file holds).
    let is_gz = path.extension().is_some_and(|e| e == "gz");
    if !is_gz {
        let need = header.vox_offset as u64 + (n as u64) * dtype.size_of() as u64;
        let have = std::fs::metadata(path)
            .map_err(|e| err(Sam3dStatus::Io, format!("{}: {e}", path.display())))?
            .len();
        if have < need {
            return Err(bad(
                path,
                format!("truncated: header needs {need} bytes, file has {have}"),
            ));
        }
    }
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| bad(path, format!("cannot read voxel data: {e}")))?;
    let big_endian = header.endianness == nifti::Endianness::Big;
    let raw = obj.into_volume().into_raw_data();
    if raw.len() != n * dtype.size_of() {
        return Err(bad(
            path,
            format!(
                "holds {} bytes of voxel data, header says {}",
                raw.len(),
                n * dtype.size_of()
            ),
        ));
    }
    let data = voxels_f32(&raw, dtype, big_endian, header.scl_slope, header.scl_inter)
        .ok_or_else(unsupported)?;
    Volume::new(geom, data)
}

/// The scaling a reader applies (value * slope + inter): none when `scl_slope` is 0 (NIfTI-1) or
/// not finite (nibabel; multiplying by it would turn every voxel into NaN); a non-finite
/// `scl_inter` with a valid slope counts as 0, as ITK reads it (nibabel refuses such a file).
/// ITK differs where the slope is 0 or not finite: it still adds `scl_inter`.
fn scaling(slope: f32, inter: f32) -> Option<(f64, f64)> {
    if slope == 0.0 || !slope.is_finite() {
        return None;
    }
    let inter = if inter.is_finite() { inter as f64 } else { 0.0 };
    Some((slope as f64, inter))
}

/// Voxel values as float32 from the file's raw bytes (its byte order, NIfTI's i-fastest order kept),
/// scaled in float64 as nibabel's `get_fdata` does, in one pass over the data (the nifti crate's
/// conversion made two more copies: 0.3 s for a 512x512x300 CT). None for a datatype not handled.
fn voxels_f32(
    raw: &[u8],
    dtype: NiftiType,
    big_endian: bool,
    slope: f32,
    inter: f32,
) -> Option<Vec<f32>> {
    let scale = scaling(slope, inter);
    /// Decode `S`-byte values with `value`, then scale (one monomorphic loop per type, byte
    /// order and scaling, which the compiler vectorises).
    fn each<const S: usize>(
        raw: &[u8],
        scale: Option<(f64, f64)>,
        value: impl Fn([u8; S]) -> f64,
    ) -> Vec<f32> {
        let bytes = raw.chunks_exact(S).map(|c| {
            let mut b = [0u8; S];
            b.copy_from_slice(c);
            value(b)
        });
        match scale {
            Some((s, i)) => bytes.map(|v| (v * s + i) as f32).collect(),
            None => bytes.map(|v| v as f32).collect(),
        }
    }
    macro_rules! decode {
        ($t:ty) => {
            if big_endian {
                each(raw, scale, |b| <$t>::from_be_bytes(b) as f64)
            } else {
                each(raw, scale, |b| <$t>::from_le_bytes(b) as f64)
            }
        };
    }
    Some(match dtype {
        NiftiType::Uint8 => decode!(u8),
        NiftiType::Int8 => decode!(i8),
        NiftiType::Uint16 => decode!(u16),
        NiftiType::Int16 => decode!(i16),
        NiftiType::Uint32 => decode!(u32),
        NiftiType::Int32 => decode!(i32),
        NiftiType::Uint64 => decode!(u64),
        NiftiType::Int64 => decode!(i64),
        NiftiType::Float32 => decode!(f32),
        NiftiType::Float64 => decode!(f64),
        _ => return None,
    })
}

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
    let arr = Array3::from_shape_vec(
        (geom.dims[0], geom.dims[1], geom.dims[2]).f(),
        mask.to_vec(),
    )
    .map_err(|e| err(Sam3dStatus::Internal, e.to_string()))?;
    let header = mask_header(geom);
    let tmp = temp_path(path);
    let mut options = WriterOptions::new(&tmp).reference_header(&header);
    if name.ends_with(".gz") {
        // gzip level 2: with flate2's zlib-rs backend, level 1 is its "quick" strategy, slower
        // here and 7x larger (a 512x512x300 mask with a sphere: 0.041 s / 798 KB; level 2:
        // 0.026 s / 107 KB; level 6: 0.038 s / 90 KB). Set for .gz alone: the writer
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

    /// Each datatype decoded from both byte orders equals the values written, scaled in float64
    /// (float32 arithmetic rounds some of these differently), and invalid scalings leave the values.
    #[test]
    fn voxels_decode_every_datatype_in_both_byte_orders() {
        macro_rules! check {
            ($t:ty, $dtype:expr, $vals:expr) => {{
                let vals: Vec<$t> = $vals;
                let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
                let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
                let want: Vec<f32> = vals.iter().map(|&v| v as f64 as f32).collect();
                assert_eq!(voxels_f32(&le, $dtype, false, 1.0, 0.0).unwrap(), want);
                assert_eq!(voxels_f32(&be, $dtype, true, 1.0, 0.0).unwrap(), want);
                if std::mem::size_of::<$t>() > 1 {
                    assert_ne!(voxels_f32(&be, $dtype, false, 1.0, 0.0).unwrap(), want);
                }
                let scaled: Vec<f32> = vals
                    .iter()
                    .map(|&v| (v as f64 * 0.1f32 as f64 + 0.7f32 as f64) as f32)
                    .collect();
                assert_eq!(voxels_f32(&le, $dtype, false, 0.1, 0.7).unwrap(), scaled);
                for slope in [0.0, f32::NAN, f32::INFINITY] {
                    assert_eq!(voxels_f32(&le, $dtype, false, slope, 5.0).unwrap(), want);
                }
                let times2: Vec<f32> = vals.iter().map(|&v| (v as f64 * 2.0) as f32).collect();
                assert_eq!(
                    voxels_f32(&le, $dtype, false, 2.0, f32::NAN).unwrap(),
                    times2
                );
            }};
        }
        check!(u8, NiftiType::Uint8, vec![0, 1, 3, 254, 255]);
        check!(i8, NiftiType::Int8, vec![-128, -3, 0, 1, 127]);
        check!(u16, NiftiType::Uint16, vec![0, 3, 258, 65535, 1000]);
        check!(i16, NiftiType::Int16, vec![-32768, -1024, 3, 258, 32767]);
        check!(u32, NiftiType::Uint32, vec![0, 3, 65536 + 7, u32::MAX, 5]);
        check!(
            i32,
            NiftiType::Int32,
            vec![i32::MIN, -70000, 3, 258, i32::MAX]
        );
        check!(u64, NiftiType::Uint64, vec![0, 3, 1 << 40, u64::MAX, 9]);
        check!(
            i64,
            NiftiType::Int64,
            vec![i64::MIN, -(1 << 40), 3, 258, i64::MAX]
        );
        check!(
            f32,
            NiftiType::Float32,
            vec![-1.5, 0.1, 3.0e30, f32::MIN_POSITIVE, 2.25]
        );
        check!(
            f64,
            NiftiType::Float64,
            vec![-1.5, 0.1, 3.0e30, 1e-300, 2.25]
        );
        assert!(voxels_f32(&[0; 8], NiftiType::Complex64, false, 1.0, 0.0).is_none());
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
            let g = header_geometry(&qh, Path::new("x")).unwrap();
            let s = header_geometry(&h, Path::new("x")).unwrap();
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
