//! Reading NIfTI-1 images: `.nii`, `.nii.gz`, and two-file `.hdr`/`.img` pairs, with ITK's
//! geometry rules.
//!
//! The header is parsed here, field by field, rather than by the nifti crate, so that every check
//! can name the field and the value as the file holds it, and so that nothing is allocated before
//! the header has been checked against the memory budget (`limits`):
//! * Only regular files are opened (a FIFO would block the reader forever).
//! * gzip is recognised by its magic bytes; the stream is inflated no further than the header's
//!   declared data (plus a small allowance for trailing bytes, so that gzip's CRC-32 and length
//!   can be checked at the end of the stream). A corrupt stream is `BAD_VOLUME`, never data.
//! * Extensions are skipped, not parsed: the voxels start at `vox_offset`.
//! * The voxels are decoded chunk by chunk straight into the float32 array (no raw copy).
//! * Which transform: the sform when `sform_code` is 1 (scanner), else the qform when its code is
//!   non-zero, else the sform when its code is non-zero, else none — what ITK / SimpleITK /
//!   3D Slicer read (nibabel prefers the sform whenever it is set). As in ITK, the spacing always
//!   comes from pixdim; the transform gives the direction (normalised columns) and the origin.
//! * NIfTI's world frame is RAS; ITK's and ours is LPS: the first two rows change sign.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;

use crate::error::{err, Error, Result, Sam3dStatus};
use crate::geometry::Geometry;
use crate::limits;
use crate::volume::Volume;

/// Size of a NIfTI-1 header.
const HEADER_SIZE: usize = 348;

/// Decompressed bytes tolerated after the declared voxel data of a gzip stream, read only to reach
/// gzip's CRC-32 and length check; a stream with more is refused (it would be inflated for nothing).
const TRAILING_ALLOWANCE: u64 = 1 << 20;

/// Bytes decoded per chunk (a multiple of every voxel size).
const CHUNK: usize = 1 << 20;

/// Most bytes between the header and the voxels (extensions) the reader passes over: in a gzip
/// stream they must be inflated, so a huge `vox_offset` in a small file would cost minutes.
const MAX_SKIP: u64 = 256 << 20;

/// Voxel datatypes the reader decodes (NIfTI-1 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Datatype {
    /// The datatype of a NIfTI-1 code; an error names codes that exist but are not read.
    fn from_code(code: i16) -> std::result::Result<Datatype, String> {
        Ok(match code {
            2 => Datatype::U8,
            256 => Datatype::I8,
            512 => Datatype::U16,
            4 => Datatype::I16,
            768 => Datatype::U32,
            8 => Datatype::I32,
            1280 => Datatype::U64,
            1024 => Datatype::I64,
            16 => Datatype::F32,
            64 => Datatype::F64,
            _ => {
                let name = match code {
                    1 => " (binary)",
                    32 => " (complex64)",
                    128 => " (RGB24)",
                    1536 => " (float128)",
                    1792 => " (complex128)",
                    2048 => " (complex256)",
                    2304 => " (RGBA32)",
                    _ => "",
                };
                return Err(format!(
                    "datatype = {code}{name} is not a supported voxel type"
                ));
            }
        })
    }

    pub fn size(self) -> usize {
        match self {
            Datatype::U8 | Datatype::I8 => 1,
            Datatype::U16 | Datatype::I16 => 2,
            Datatype::U32 | Datatype::I32 | Datatype::F32 => 4,
            Datatype::U64 | Datatype::I64 | Datatype::F64 => 8,
        }
    }
}

/// The header fields the reader uses, as the file holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub big_endian: bool,
    pub dim: [i16; 8],
    pub datatype: i16,
    pub pixdim: [f32; 8],
    pub vox_offset: f32,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub qform_code: i16,
    pub sform_code: i16,
    /// quatern_b, quatern_c, quatern_d
    pub quatern: [f32; 3],
    /// qoffset_x, qoffset_y, qoffset_z
    pub qoffset: [f32; 3],
    pub srow: [[f32; 4]; 3],
    pub magic: [u8; 4],
}

/// What the header's magic says about where the voxels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// "n+1": header and voxels in one file
    Single,
    /// "ni1": the voxels are in the `.img` file beside the `.hdr`
    Pair,
}

impl Header {
    /// Parse the 348 header bytes. The byte order is the one in which `sizeof_hdr` reads 348.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> std::result::Result<Header, String> {
        let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let big_endian = match (le, be) {
            (348, _) => false,
            (_, 348) => true,
            (540, _) | (_, 540) => {
                return Err("a NIfTI-2 header (sizeof_hdr = 540): only NIfTI-1 is read".into())
            }
            _ => {
                return Err(format!(
                    "not a NIfTI-1 file: sizeof_hdr = {le} (348 expected, in either byte order)"
                ))
            }
        };
        let i16_at = |o: usize| {
            let v = [b[o], b[o + 1]];
            if big_endian {
                i16::from_be_bytes(v)
            } else {
                i16::from_le_bytes(v)
            }
        };
        let f32_at = |o: usize| {
            let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if big_endian {
                f32::from_be_bytes(v)
            } else {
                f32::from_le_bytes(v)
            }
        };
        Ok(Header {
            big_endian,
            dim: std::array::from_fn(|a| i16_at(40 + 2 * a)),
            datatype: i16_at(70),
            pixdim: std::array::from_fn(|a| f32_at(76 + 4 * a)),
            vox_offset: f32_at(108),
            scl_slope: f32_at(112),
            scl_inter: f32_at(116),
            qform_code: i16_at(252),
            sform_code: i16_at(254),
            quatern: std::array::from_fn(|a| f32_at(256 + 4 * a)),
            qoffset: std::array::from_fn(|a| f32_at(268 + 4 * a)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f32_at(280 + 16 * r + 4 * c))),
            magic: [b[344], b[345], b[346], b[347]],
        })
    }

    fn layout(&self) -> std::result::Result<Layout, String> {
        match &self.magic {
            b"n+1\0" => Ok(Layout::Single),
            b"ni1\0" => Ok(Layout::Pair),
            m => Err(format!(
                "magic = {:?} is not NIfTI-1's \"n+1\" or \"ni1\": an Analyze 7.5 header, which is \
                 not supported (its orientation is ambiguous; convert it to NIfTI)",
                String::from_utf8_lossy(m).trim_end_matches('\0')
            )),
        }
    }

    /// The voxel grid's size (refusing 4-D images and bad dims), before anything is allocated.
    fn dims(&self) -> std::result::Result<[usize; 3], String> {
        let nd = self.dim[0];
        if !(1..=7).contains(&nd) {
            return Err(format!("dim[0] = {nd} is not a dimensionality from 1 to 7"));
        }
        let nd = nd as usize;
        for a in 1..=nd {
            if self.dim[a] <= 0 {
                return Err(format!("dim[{a}] = {} must be positive", self.dim[a]));
            }
        }
        if let Some(a) = (4..=nd).find(|&a| self.dim[a] > 1) {
            return Err(format!(
                "dim[{a}] = {}: a {nd}-D image with more than one volume is not supported",
                self.dim[a]
            ));
        }
        Ok(std::array::from_fn(|a| {
            if a < nd {
                self.dim[a + 1] as usize
            } else {
                1
            }
        }))
    }

    /// Voxel size along each axis from pixdim (sign ignored, as ITK). An axis of one voxel may
    /// leave it unset (0 or NaN, common for single slices): it then counts as 1 mm.
    fn spacing(&self, dims: [usize; 3]) -> std::result::Result<[f64; 3], String> {
        let mut s = [1.0; 3];
        for a in 0..3 {
            let v = self.pixdim[a + 1];
            if v.is_finite() && v != 0.0 {
                s[a] = v.abs() as f64;
            } else if dims[a] > 1 {
                return Err(format!(
                    "pixdim[{}] = {v} is not a voxel size (axis of {} voxels)",
                    a + 1,
                    dims[a]
                ));
            }
        }
        Ok(s)
    }

    /// Direction (RAS, normalised columns) and origin (RAS) of the transform ITK chooses.
    fn transform(&self) -> std::result::Result<([[f64; 3]; 3], [f64; 3]), String> {
        if self.sform_code == 1 || (self.qform_code <= 0 && self.sform_code > 0) {
            let mut m = [[0.0; 3]; 3];
            for c in 0..3 {
                let col: [f64; 3] = std::array::from_fn(|r| self.srow[r][c] as f64);
                let n = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
                if n == 0.0 || !n.is_finite() {
                    return Err(format!(
                        "sform column {c} ({}, {}, {}) is zero or not finite",
                        col[0], col[1], col[2]
                    ));
                }
                for r in 0..3 {
                    m[r][c] = col[r] / n;
                }
            }
            Ok((m, std::array::from_fn(|r| self.srow[r][3] as f64)))
        } else if self.qform_code > 0 {
            let [mut b, mut c, mut d] = self.quatern.map(|v| v as f64);
            if ![b, c, d].iter().all(|v| v.is_finite()) {
                return Err(format!(
                    "qform quaternion (quatern_b, quatern_c, quatern_d) = ({b}, {c}, {d}) is not \
                     finite"
                ));
            }
            // nifticlib's rule (ITK reads with it): when b^2 + c^2 + d^2 reaches 1, (b, c, d) is
            // normalised and a = 0 (a rotation by 180 degrees)
            let norm2 = b * b + c * c + d * d;
            let a = if 1.0 - norm2 < 1e-7 {
                let s = 1.0 / norm2.sqrt();
                (b, c, d) = (b * s, c * s, d * s);
                0.0
            } else {
                (1.0 - norm2).sqrt()
            };
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
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
            Ok((m, self.qoffset.map(|v| v as f64)))
        } else {
            Ok((
                [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                [0.0; 3],
            ))
        }
    }
}

/// Geometry of a header (ITK's choice of transform), refusing absurd sizes before any allocation.
/// Errors are plain messages naming the field; the caller adds the file's name.
pub fn header_geometry(h: &Header) -> std::result::Result<Geometry, Error> {
    let plain = |m: String| err(Sam3dStatus::BadVolume, m);
    let dims = h.dims().map_err(plain)?;
    let spacing = h.spacing(dims).map_err(plain)?;
    let (rot, origin) = h.transform().map_err(plain)?;
    // RAS -> LPS
    let mut dir = rot;
    for c in 0..3 {
        dir[0][c] = -dir[0][c];
        dir[1][c] = -dir[1][c];
    }
    let origin = [-origin[0], -origin[1], origin[2]];
    Geometry::new(dims, spacing, origin, dir).map_err(|e| match e.status {
        // a header claiming an absurd size keeps its own status: refused before allocating
        Sam3dStatus::TooLarge => e,
        _ => plain(e.message),
    })
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

/// Append the voxel values of `raw` (the file's byte order, NIfTI's i-fastest order kept) to
/// `out` as float32, scaled in float64 as nibabel's `get_fdata` does, in one pass.
fn decode_into(
    raw: &[u8],
    dtype: Datatype,
    big_endian: bool,
    scale: Option<(f64, f64)>,
    out: &mut Vec<f32>,
) {
    /// Decode `S`-byte values with `value`, then scale (one monomorphic loop per type, byte
    /// order and scaling, which the compiler vectorises).
    fn each<const S: usize>(
        raw: &[u8],
        scale: Option<(f64, f64)>,
        out: &mut Vec<f32>,
        value: impl Fn([u8; S]) -> f64,
    ) {
        let values = raw.chunks_exact(S).map(|c| {
            let mut b = [0u8; S];
            b.copy_from_slice(c);
            value(b)
        });
        match scale {
            Some((s, i)) => out.extend(values.map(|v| (v * s + i) as f32)),
            None => out.extend(values.map(|v| v as f32)),
        }
    }
    macro_rules! decode {
        ($t:ty) => {
            if big_endian {
                each(raw, scale, out, |b| <$t>::from_be_bytes(b) as f64)
            } else {
                each(raw, scale, out, |b| <$t>::from_le_bytes(b) as f64)
            }
        };
    }
    match dtype {
        Datatype::U8 => decode!(u8),
        Datatype::I8 => decode!(i8),
        Datatype::U16 => decode!(u16),
        Datatype::I16 => decode!(i16),
        Datatype::U32 => decode!(u32),
        Datatype::I32 => decode!(i32),
        Datatype::U64 => decode!(u64),
        Datatype::I64 => decode!(i64),
        Datatype::F32 => decode!(f32),
        Datatype::F64 => decode!(f64),
    }
}

/// The members of a gzip stream, one after another, as one stream. Bytes after the last member
/// that do not start another one (padding, junk) end the stream, as gzip(1) and nibabel ignore them.
struct GzMembers<R: BufRead> {
    member: Option<GzDecoder<R>>,
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(m) = self.member.as_mut() {
            let n = m.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let mut rest = self.member.take().expect("a member").into_inner();
            if rest.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
                self.member = Some(GzDecoder::new(rest));
            }
        }
        Ok(0)
    }
}

/// One byte stream of a file: plain (its length known) or gzip (inflated as it is read).
struct Stream<'a> {
    reader: Box<dyn Read + 'a>,
    /// length of a plain stream; None for gzip
    plain_len: Option<u64>,
    /// bytes consumed so far (decompressed for gzip)
    pos: u64,
}

impl<'a> Stream<'a> {
    /// Wrap `src`, inflating it when it starts with gzip's magic bytes.
    fn new<R: BufRead + 'a>(mut src: R, len: u64) -> std::io::Result<Stream<'a>> {
        let gz = src.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        Ok(if gz {
            Stream {
                reader: Box::new(GzMembers {
                    member: Some(GzDecoder::new(src)),
                }),
                plain_len: None,
                pos: 0,
            }
        } else {
            Stream {
                reader: Box::new(src),
                plain_len: Some(len),
                pos: 0,
            }
        })
    }

    /// Fill `buf` as far as the stream goes; returns the bytes read (less than `buf` at its end).
    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.describe(e)),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn describe(&self, e: std::io::Error) -> String {
        if self.plain_len.is_none() {
            format!("gzip stream: {e} (after {} decompressed bytes)", self.pos)
        } else {
            format!("read error after {} bytes ({e})", self.pos)
        }
    }

    /// Skip forward to byte `to` (decompressed position); `what` names the target in the error.
    fn skip_to(&mut self, to: u64, what: &str) -> std::result::Result<(), String> {
        let mut scratch = vec![0u8; 64 << 10];
        while self.pos < to {
            let want = (to - self.pos).min(scratch.len() as u64) as usize;
            if self.fill(&mut scratch[..want])? < want {
                return Err(format!(
                    "{what} lies beyond the end of the data ({} bytes)",
                    self.pos
                ));
            }
        }
        Ok(())
    }

    /// Read on to the end of a gzip stream, so that its CRC-32 and length are checked, allowing
    /// a little trailing data. Plain streams are left as they are.
    fn finish(&mut self) -> std::result::Result<(), String> {
        if self.plain_len.is_some() {
            return Ok(());
        }
        let end = self.pos;
        let mut scratch = vec![0u8; 64 << 10];
        while self.fill(&mut scratch)? > 0 {
            if self.pos - end > TRAILING_ALLOWANCE {
                return Err(format!(
                    "the gzip stream holds more than {TRAILING_ALLOWANCE} bytes after the {end} \
                     bytes the header declares"
                ));
            }
        }
        Ok(())
    }
}

/// Read the 348 header bytes of `s`.
fn read_header(s: &mut Stream) -> std::result::Result<Header, String> {
    let mut b = [0u8; HEADER_SIZE];
    let n = s.fill(&mut b)?;
    if n < HEADER_SIZE {
        return Err(format!(
            "truncated: a NIfTI-1 header needs {HEADER_SIZE} bytes, the file holds {n}"
        ));
    }
    Header::parse(&b)
}

/// The voxels of `h` from `s`, which is at byte `s.pos` of the file holding them (after the header
/// for a single file, at 0 for an `.img`), decoded into float32 within the memory budget.
fn read_voxels(s: &mut Stream, h: &Header, geom: &Geometry) -> Result<Vec<f32>> {
    let plain = |m: String| err(Sam3dStatus::BadVolume, m);
    let dtype = Datatype::from_code(h.datatype).map_err(plain)?;
    let n = geom.voxel_count()?;
    let held = h.vox_offset;
    if !(held.is_finite() && held >= 0.0 && held.fract() == 0.0) {
        return Err(plain(format!("vox_offset = {held} is not a byte offset")));
    }
    if held as f64 > (s.pos + MAX_SKIP) as f64 {
        return Err(plain(format!(
            "vox_offset = {held} leaves more than {MAX_SKIP} bytes of extensions before the voxels"
        )));
    }
    let offset = held as u64;
    if offset < s.pos {
        return Err(plain(format!(
            "vox_offset = {offset} lies inside the {HEADER_SIZE}-byte header"
        )));
    }
    let size = n as u64 * dtype.size() as u64;
    if let Some(len) = s.plain_len {
        if offset > len {
            return Err(plain(format!(
                "vox_offset = {offset} lies beyond the end of the file ({len} bytes)"
            )));
        }
        if len - offset < size {
            return Err(plain(format!(
                "truncated: the header declares {size} bytes of voxels from vox_offset = {offset}, \
                 the file holds {}",
                len - offset
            )));
        }
    }
    let mut out: Vec<f32> = limits::empty_vec(n, "the volume's voxels (float32)")?;
    s.skip_to(offset, &format!("vox_offset = {offset}"))
        .map_err(plain)?;
    let scale = scaling(h.scl_slope, h.scl_inter);
    let mut chunk = vec![0u8; CHUNK.min(size as usize).max(1)];
    let mut left = size as usize;
    while left > 0 {
        let want = left.min(chunk.len());
        let got = s.fill(&mut chunk[..want]).map_err(plain)?;
        if got < want {
            return Err(plain(format!(
                "truncated: the header declares {size} bytes of voxels, the data end after {}",
                size as usize - left + got
            )));
        }
        decode_into(&chunk[..want], dtype, h.big_endian, scale, &mut out);
        left -= want;
    }
    s.finish().map_err(plain)?;
    Ok(out)
}

/// Open `path` for reading if it is a regular file (a FIFO or a device would block or never end).
fn open_regular(path: &Path) -> Result<(File, u64)> {
    crate::files::open_regular(path)
        .map_err(|m| err(Sam3dStatus::Io, format!("{}: {m}", path.display())))
}

fn stream_of(file: File, len: u64, path: &Path) -> Result<Stream<'static>> {
    Stream::new(BufReader::with_capacity(256 << 10, file), len).map_err(|e| {
        err(
            Sam3dStatus::Io,
            format!("{}: cannot read: {e}", path.display()),
        )
    })
}

/// The other file of a `.hdr`/`.img` pair (`img`: the image file is wanted), whichever of the
/// plain and gzip names exists.
fn pair_file(path: &Path, img: bool) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (stem, gz) = [".hdr.gz", ".img.gz", ".hdr", ".img"]
        .iter()
        .find_map(|s| name.strip_suffix(s).map(|stem| (stem, s.ends_with(".gz"))))?;
    let ext = if img { "img" } else { "hdr" };
    let names = if gz {
        [format!("{stem}.{ext}.gz"), format!("{stem}.{ext}")]
    } else {
        [format!("{stem}.{ext}"), format!("{stem}.{ext}.gz")]
    };
    names
        .iter()
        .map(|n| path.with_file_name(n))
        .find(|p| p.exists())
}

/// Read a NIfTI-1 image (`.nii`, `.nii.gz`, or a `.hdr`/`.img` pair given by either name) as
/// float32 voxels, i fastest, scl_slope/scl_inter applied.
pub fn read(path: &Path) -> Result<Volume> {
    let named = path.to_string_lossy();
    let is_img = named.ends_with(".img") || named.ends_with(".img.gz");
    let header_path = if is_img {
        open_regular(path)?;
        pair_file(path, false).ok_or_else(|| {
            err(
                Sam3dStatus::Io,
                format!("{}: no .hdr file beside this .img", path.display()),
            )
        })?
    } else {
        path.to_path_buf()
    };
    let in_file = |p: &Path| {
        let p = p.display().to_string();
        move |e: Error| err(e.status, format!("{p}: {}", e.message))
    };
    let (file, len) = open_regular(&header_path)?;
    let mut s = stream_of(file, len, &header_path)?;
    let bad = |m: String| {
        err(
            Sam3dStatus::BadVolume,
            format!("{}: {m}", header_path.display()),
        )
    };
    let h = read_header(&mut s).map_err(bad)?;
    let layout = h.layout().map_err(bad)?;
    let geom = header_geometry(&h).map_err(in_file(&header_path))?;
    let data = match layout {
        Layout::Single => read_voxels(&mut s, &h, &geom).map_err(in_file(&header_path))?,
        Layout::Pair => {
            drop(s);
            // the .img the caller named, else the one beside the .hdr
            let named_img = is_img.then(|| path.to_path_buf());
            let img = named_img.or_else(|| pair_file(&header_path, true)).ok_or_else(|| {
                bad("magic \"ni1\" says the voxels are in an .img file beside it, and there is none".into())
            })?;
            let (file, len) = open_regular(&img)?;
            let mut s = stream_of(file, len, &img)?;
            read_voxels(&mut s, &h, &geom).map_err(in_file(&img))?
        }
    };
    Volume::new(geom, data)
}

/// Read a single-file NIfTI-1 image (`.nii` content, gzip-compressed or not) held in memory.
pub fn read_bytes(data: &[u8]) -> Result<Volume> {
    let bad = |m: String| err(Sam3dStatus::BadVolume, m);
    let mut s = Stream::new(data, data.len() as u64).map_err(|e| bad(e.to_string()))?;
    let h = read_header(&mut s).map_err(bad)?;
    if h.layout().map_err(bad)? == Layout::Pair {
        return Err(bad(
            "magic \"ni1\": the header of a .hdr/.img pair, whose voxels are in another file"
                .into(),
        ));
    }
    let geom = header_geometry(&h)?;
    let voxels = read_voxels(&mut s, &h, &geom)?;
    Volume::new(geom, voxels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(raw: &[u8], dtype: Datatype, big_endian: bool, slope: f32, inter: f32) -> Vec<f32> {
        let mut out = Vec::new();
        decode_into(raw, dtype, big_endian, scaling(slope, inter), &mut out);
        out
    }

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
                assert_eq!(decode(&le, $dtype, false, 1.0, 0.0), want);
                assert_eq!(decode(&be, $dtype, true, 1.0, 0.0), want);
                if std::mem::size_of::<$t>() > 1 {
                    assert_ne!(decode(&be, $dtype, false, 1.0, 0.0), want);
                }
                let scaled: Vec<f32> = vals
                    .iter()
                    .map(|&v| (v as f64 * 0.1f32 as f64 + 0.7f32 as f64) as f32)
                    .collect();
                assert_eq!(decode(&le, $dtype, false, 0.1, 0.7), scaled);
                for slope in [0.0, f32::NAN, f32::INFINITY] {
                    assert_eq!(decode(&le, $dtype, false, slope, 5.0), want);
                }
                let times2: Vec<f32> = vals.iter().map(|&v| (v as f64 * 2.0) as f32).collect();
                assert_eq!(decode(&le, $dtype, false, 2.0, f32::NAN), times2);
            }};
        }
        check!(u8, Datatype::U8, vec![0, 1, 3, 254, 255]);
        check!(i8, Datatype::I8, vec![-128, -3, 0, 1, 127]);
        check!(u16, Datatype::U16, vec![0, 3, 258, 65535, 1000]);
        check!(i16, Datatype::I16, vec![-32768, -1024, 3, 258, 32767]);
        check!(u32, Datatype::U32, vec![0, 3, 65536 + 7, u32::MAX, 5]);
        check!(i32, Datatype::I32, vec![i32::MIN, -70000, 3, 258, i32::MAX]);
        check!(u64, Datatype::U64, vec![0, 3, 1 << 40, u64::MAX, 9]);
        check!(
            i64,
            Datatype::I64,
            vec![i64::MIN, -(1 << 40), 3, 258, i64::MAX]
        );
        check!(
            f32,
            Datatype::F32,
            vec![-1.5, 0.1, 3.0e30, f32::MIN_POSITIVE, 2.25]
        );
        check!(f64, Datatype::F64, vec![-1.5, 0.1, 3.0e30, 1e-300, 2.25]);
        assert!(Datatype::from_code(32).unwrap_err().contains("complex64"));
    }
}
