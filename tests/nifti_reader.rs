//! The NIfTI reader (`read_nifti`) on hand-made files: paths that are not regular files,
//! decompression bombs and over-long gzip streams, extensions, gzip's CRC-32 and length,
//! vox_offset and pixdim checks, `.hdr`/`.img` pairs, and error messages that name the field and
//! its value as the file holds it, in both byte orders.
//!
//! Every file is written by the helpers below (a 348-byte NIfTI-1 header with the given fields,
//! little or big endian, then the data), or taken from `examples/data`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use sam3d::{read_nifti, Error, Sam3dStatus, Volume};

// ------------------------------------------------------------------------------------------------
// helpers

/// The header fields the tests set; the rest of the 348 bytes stay zero.
#[derive(Clone)]
struct Hdr {
    big_endian: bool,
    sizeof_hdr: i32,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
}

const UINT8: (i16, i16) = (2, 8);
const INT16: (i16, i16) = (4, 16);

impl Hdr {
    /// A single-file ("n+1") header for a 3-D volume of `dims`, voxels right after the 4
    /// extension bytes, 1 mm voxels, no transform.
    fn new(dims: [i16; 3], (datatype, bitpix): (i16, i16)) -> Hdr {
        Hdr {
            big_endian: false,
            sizeof_hdr: 348,
            dim: [3, dims[0], dims[1], dims[2], 1, 1, 1, 1],
            datatype,
            bitpix,
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            magic: *b"n+1\0",
        }
    }

    fn big_endian(mut self) -> Hdr {
        self.big_endian = true;
        self
    }

    /// An sform (code 1) of `spacing` and `origin` along the axes.
    fn sform(mut self, spacing: [f32; 3], origin: [f32; 3]) -> Hdr {
        self.sform_code = 1;
        for r in 0..3 {
            self.srow[r] = [0.0; 4];
            self.srow[r][r] = spacing[r];
            self.srow[r][3] = origin[r];
            self.pixdim[r + 1] = spacing[r];
        }
        self
    }

    /// The 348 header bytes.
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 348];
        let be = self.big_endian;
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        let i16b = |v: i16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let i32b = |v: i32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let f32b = |v: f32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        put(0, &i32b(self.sizeof_hdr));
        for (a, &d) in self.dim.iter().enumerate() {
            put(40 + 2 * a, &i16b(d));
        }
        put(70, &i16b(self.datatype));
        put(72, &i16b(self.bitpix));
        for (a, &p) in self.pixdim.iter().enumerate() {
            put(76 + 4 * a, &f32b(p));
        }
        put(108, &f32b(self.vox_offset));
        put(112, &f32b(self.scl_slope));
        put(116, &f32b(self.scl_inter));
        put(123, &[2]); // xyzt_units: mm
        put(252, &i16b(self.qform_code));
        put(254, &i16b(self.sform_code));
        for a in 0..3 {
            put(256 + 4 * a, &f32b(self.quatern[a]));
            put(268 + 4 * a, &f32b(self.qoffset[a]));
        }
        for r in 0..3 {
            for c in 0..4 {
                put(280 + 16 * r + 4 * c, &f32b(self.srow[r][c]));
            }
        }
        put(344, &self.magic);
        b
    }

    /// A single file: the header, no extensions (4 zero bytes), zero padding up to vox_offset
    /// when it is further, then `data`.
    fn file(&self, data: &[u8]) -> Vec<u8> {
        let mut f = self.bytes();
        f.extend_from_slice(&[0; 4]);
        let off = self.vox_offset as usize;
        if off > f.len() {
            f.resize(off, 0);
        }
        f.extend_from_slice(data);
        f
    }
}

/// int16 values in the header's byte order.
fn int16_bytes(values: &[i16], big_endian: bool) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        })
        .collect()
}

/// A small test pattern: distinct values, negative ones too.
fn pattern(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 37) % 2001) as i16 - 1000).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Deflate `input` into `out`; `Sync` ends at a byte boundary, `Finish` ends the stream.
fn deflate(c: &mut Compress, mut input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    loop {
        out.reserve(256 << 10);
        let before = c.total_in();
        let status = c.compress_vec(input, out, flush).unwrap();
        input = &input[(c.total_in() - before) as usize..];
        let room_left = out.len() < out.capacity();
        match flush {
            FlushCompress::Finish if status == Status::StreamEnd => return,
            FlushCompress::Finish => {}
            _ if input.is_empty() && room_left => return,
            _ => {}
        }
    }
}

/// One gzip member of `prefix` followed by `zeros` zero bytes, built in milliseconds however many
/// zeros: a deflated MiB of zeros (coded after 64 KiB of zeros, so that its back-references reach
/// zeros only) is repeated, and the CRC-32 is combined from the MiB's.
fn gzip_zeros(prefix: &[u8], zeros: u64) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let zero = vec![0u8; MIB];
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut c = Compress::new(Compression::new(6), false);
    let mut crc = Crc::new();
    deflate(&mut c, prefix, FlushCompress::Sync, &mut out);
    crc.update(prefix);
    let lead = zeros.min(64 << 10) as usize;
    deflate(&mut c, &zero[..lead], FlushCompress::Sync, &mut out);
    crc.update(&zero[..lead]);
    let rest = zeros - lead as u64;
    let (blocks, tail) = (rest / MIB as u64, (rest % MIB as u64) as usize);
    if blocks > 0 {
        let start = out.len();
        deflate(&mut c, &zero, FlushCompress::Sync, &mut out);
        let block = out[start..].to_vec();
        out.reserve(block.len() * blocks as usize);
        for _ in 1..blocks {
            out.extend_from_slice(&block);
        }
        let mut one = Crc::new();
        one.update(&zero);
        for _ in 0..blocks {
            crc.combine(&one);
        }
    }
    deflate(&mut c, &zero[..tail], FlushCompress::Finish, &mut out);
    crc.update(&zero[..tail]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&((prefix.len() as u64 + zeros) as u32).to_le_bytes());
    out
}

/// A directory of its own for a test's files, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("sam3d-nifti-reader-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A message for the user: no Rust debug formatting in it.
fn assert_plain(e: &Error) {
    for debug in ["Custom {", "kind:", "Os {", "Error {", "Some("] {
        assert!(
            !e.message.contains(debug),
            "debug text {debug:?} in the message: {}",
            e.message
        );
    }
}

/// `read(path)` fails with `status`; returns the error (its message checked for debug text).
fn read_err(path: &Path, status: Sam3dStatus) -> Error {
    match read_nifti(path) {
        Ok(v) => panic!(
            "{} read as {:?} voxels, {:?} expected",
            path.display(),
            v.geom.dims,
            status
        ),
        Err(e) => {
            assert_eq!(e.status, status, "{}: {}", path.display(), e.message);
            assert_plain(&e);
            e
        }
    }
}

fn read_ok(path: &Path) -> Volume {
    read_nifti(path).unwrap_or_else(|e| panic!("{}: {:?}: {}", path.display(), e.status, e.message))
}

/// `read(path)` on another thread, given up after `limit` (a blocked reader fails the test
/// instead of hanging it; `unblock` is then called to release the thread).
fn read_within(path: &Path, limit: Duration, unblock: impl FnOnce()) -> sam3d::Result<Volume> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_nifti(&p));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => {
            unblock();
            panic!(
                "{}: the reader blocked for more than {limit:?}",
                path.display()
            );
        }
    }
}

/// Peak resident memory of this process so far (bytes).
fn peak_rss() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    ru.ru_maxrss as u64 * 1024
}

/// Sets the process-wide memory budget; the default comes back when dropped (a failed assertion
/// included).
struct Budget;

impl Budget {
    fn set(bytes: u64) -> Budget {
        sam3d::set_memory_budget(bytes);
        Budget
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        sam3d::set_memory_budget(0);
    }
}

// ------------------------------------------------------------------------------------------------
// paths that are not regular files

/// A FIFO is refused at once as an IO error (opening it used to block until a writer came), and so
/// are a directory and a character device, which are not volume files either.
#[test]
fn fifo_directory_and_device_are_io_errors_at_once() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("pipe.nii.gz");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let start = Instant::now();
    let release = fifo.clone();
    let r = read_within(&fifo, Duration::from_secs(5), move || {
        // a writer that opens and closes at once: the blocked open returns, the read sees EOF
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&release);
    });
    let e = r.expect_err("a FIFO read as a volume");
    assert_eq!(e.status, Sam3dStatus::Io, "{}", e.message);
    assert!(e.message.contains("pipe.nii.gz"), "{}", e.message);
    assert_plain(&e);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    let sub = dir.0.join("volume.nii.gz");
    std::fs::create_dir(&sub).unwrap();
    for d in [&dir.0, &sub] {
        let e = read_err(d, Sam3dStatus::Io);
        assert!(e.message.contains("directory"), "{}", e.message);
    }

    if Path::new("/dev/zero").exists() {
        let r = read_within(Path::new("/dev/zero"), Duration::from_secs(5), || {});
        let e = r.expect_err("/dev/zero read as a volume");
        assert_eq!(e.status, Sam3dStatus::Io, "{}", e.message);
        assert_plain(&e);
    }
}

// ------------------------------------------------------------------------------------------------
// decompression bombs

/// A ~1 MB .nii.gz of 1024^3 uint8 zeros (4 GiB as float32) is refused by a smaller memory budget
/// before it is inflated: at once, and without the process's peak memory growing. The only test
/// that changes the (process-wide) budget; it restores the default.
#[test]
fn decompression_bomb_is_refused_by_the_budget_before_inflating() {
    let dir = TempDir::new("bomb");
    let h = Hdr::new([1024, 1024, 1024], UINT8);
    let mut prefix = h.bytes();
    prefix.extend_from_slice(&[0; 4]);
    let bomb = dir.write("bomb.nii.gz", &gzip_zeros(&prefix, 1 << 30));
    assert!(std::fs::metadata(&bomb).unwrap().len() < 4 << 20);

    let _budget = Budget::set(1 << 30);
    let rss = peak_rss();
    let start = Instant::now();
    let e = read_err(&bomb, Sam3dStatus::TooLarge);
    let took = start.elapsed();
    let grew = peak_rss().saturating_sub(rss);
    assert!(e.message.contains("budget"), "{}", e.message);
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert!(grew < 32 << 20, "peak RSS grew by {} MB", grew >> 20);
}

/// A header declaring a small volume in a gzip stream that goes on far beyond it (in the same
/// member or in a second one) is refused, and not inflated to its end: of 16 GiB of zeros after
/// the voxels, about a MiB is read before the refusal. A little trailing data is tolerated.
#[test]
fn gzip_stream_longer_than_declared_is_refused_without_inflating_it() {
    let dir = TempDir::new("long");
    let h = Hdr::new([64, 64, 16], UINT8);
    let mut prefix = h.bytes();
    prefix.extend_from_slice(&[0; 4]);
    let voxels = 64 * 64 * 16;

    // the declared voxels and 4 KiB more: reads (and checks the generator's stream)
    let ok = dir.write("ok.nii.gz", &gzip_zeros(&prefix, voxels + 4096));
    let v = read_ok(&ok);
    assert_eq!(v.geom.dims, [64, 64, 16]);
    assert!(v.to_vec().iter().all(|&x| x == 0.0));

    let extra: u64 = 16 << 30;
    let same_member = gzip_zeros(&prefix, voxels + extra);
    let mut second_member = gzip_zeros(&prefix, voxels);
    second_member.extend_from_slice(&gzip_zeros(&[], extra));
    for (name, bytes) in [("one.nii.gz", same_member), ("two.nii.gz", second_member)] {
        let p = dir.write(name, &bytes);
        let start = Instant::now();
        let e = read_err(&p, Sam3dStatus::BadVolume);
        let took = start.elapsed();
        assert!(e.message.contains("gzip"), "{name}: {}", e.message);
        assert!(
            took < Duration::from_millis(250),
            "{name}: refused after {took:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// extensions

/// Extensions are skipped, not parsed: an extension whose esize is 0 (or negative, or larger than
/// the file) used to loop over the file 8 bytes at a time; the voxels at vox_offset read, at once.
#[test]
fn extensions_with_bad_esize_are_skipped() {
    let dir = TempDir::new("ext");
    let dims = [128i16, 96, 40];
    let n = 128 * 96 * 40;
    let values = pattern(n);
    for be in [false, true] {
        for esize in [0i32, -16, i32::MAX] {
            let mut h = Hdr::new(dims, INT16).sform([0.5, 0.75, 2.0], [1.0, 2.0, 3.0]);
            if be {
                h = h.big_endian();
            }
            h.vox_offset = 368.0;
            let mut f = h.bytes();
            f.extend_from_slice(&[1, 0, 0, 0]);
            let i32b = |v: i32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
            f.extend_from_slice(&i32b(esize));
            f.extend_from_slice(&i32b(6)); // ecode: comment
            f.resize(368, b'x');
            f.extend_from_slice(&int16_bytes(&values, be));
            for gz in [false, true] {
                let name = format!("ext_{esize}_{be}.nii{}", if gz { ".gz" } else { "" });
                let p = dir.write(&name, &if gz { gzip(&f) } else { f.clone() });
                let start = Instant::now();
                let v = read_ok(&p);
                let took = start.elapsed();
                assert_eq!(v.geom.dims, [128, 96, 40], "{name}");
                assert_eq!(v.geom.spacing, [0.5, 0.75, 2.0], "{name}");
                let got = v.to_vec();
                assert!(
                    got.iter().zip(&values).all(|(&a, &b)| a == b as f32),
                    "{name}: voxels differ"
                );
                assert!(
                    took < Duration::from_millis(500),
                    "{name}: read in {took:?}"
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// gzip integrity

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/sample_ct_lesion.nii.gz"
);

/// gzip's CRC-32 and length (the stream's last 8 bytes) are checked: a trailer changed while the
/// deflate data is not (the voxels would decode as before) makes the file BAD_VOLUME.
#[test]
fn gzip_crc_and_length_are_checked() {
    let dir = TempDir::new("crc");
    let good = std::fs::read(SAMPLE).unwrap();
    let want = read_ok(Path::new(SAMPLE)).to_vec();
    let n = good.len();
    for (what, at) in [
        ("CRC-32", n - 8),
        ("length", n - 4),
        ("length's top byte", n - 1),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        // the deflate data still decodes to the same bytes
        let mut raw = Vec::new();
        let mut ok = Vec::new();
        flate2::read::GzDecoder::new(&good[..])
            .read_to_end(&mut ok)
            .unwrap();
        let r = flate2::read::GzDecoder::new(&bad[..]).read_to_end(&mut raw);
        assert!(r.is_err(), "{what}: flate2 accepted the changed trailer");
        assert!(raw == ok, "{what}: the deflate data decode differently");
        let p = dir.write("trailer.nii.gz", &bad);
        let e = read_err(&p, Sam3dStatus::BadVolume);
        assert!(e.message.contains("gzip"), "{what}: {}", e.message);
    }
    // the unchanged copy reads as the original
    let p = dir.write("copy.nii.gz", &good);
    assert_eq!(read_ok(&p).to_vec(), want);
}

/// A flipped bit in the compressed data is BAD_VOLUME, whether the deflate decoder notices it or
/// only the CRC-32 does (a stored block, where any bit change is still valid deflate).
#[test]
fn flipped_bit_in_the_deflate_data_is_bad_volume() {
    let dir = TempDir::new("flip");
    // stored blocks: the bit flips one voxel's value, only the CRC tells
    let h = Hdr::new([32, 32, 8], INT16);
    let values = pattern(32 * 32 * 8);
    let nii = h.file(&int16_bytes(&values, false));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::none());
    std::io::Write::write_all(&mut e, &nii).unwrap();
    let stored = e.finish().unwrap();
    let p = dir.write("stored.nii.gz", &stored);
    assert!(read_ok(&p)
        .to_vec()
        .iter()
        .zip(&values)
        .all(|(&a, &b)| a == b as f32));
    // a byte of the voxel data, well inside the first stored block (10-byte gzip header, 5-byte
    // block header)
    let at = 10 + 5 + 352 + 1000;
    assert_eq!(stored[at], nii[352 + 1000]);
    let mut bad = stored.clone();
    bad[at] ^= 0x10;
    let p = dir.write("stored_flipped.nii.gz", &bad);
    let e = read_err(&p, Sam3dStatus::BadVolume);
    assert!(e.message.contains("gzip"), "{}", e.message);

    // the real sample, bits flipped at several places of its compressed data
    let good = std::fs::read(SAMPLE).unwrap();
    let n = good.len();
    for k in 1..8 {
        let at = n * k / 8;
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[at] ^= bit;
            let p = dir.write("flipped.nii.gz", &bad);
            let e = read_err(&p, Sam3dStatus::BadVolume);
            assert!(
                e.message.contains("gzip"),
                "byte {at} bit {bit:#x}: {}",
                e.message
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// vox_offset and pixdim

/// vox_offset beyond the end of the data: BAD_VOLUME, the message naming vox_offset and its value
/// (plain and gzip files).
#[test]
fn vox_offset_beyond_the_end_is_bad_volume_naming_it() {
    let dir = TempDir::new("voxoff");
    let mut h = Hdr::new([4, 3, 2], INT16);
    let data = int16_bytes(&pattern(24), false);
    let mut f = h.file(&data);
    for off in [1_000_000.0f32, f.len() as f32 + 8.0] {
        h.vox_offset = off;
        f[..348].copy_from_slice(&h.bytes());
        for gz in [false, true] {
            let name = if gz { "far.nii.gz" } else { "far.nii" };
            let p = dir.write(name, &if gz { gzip(&f) } else { f.clone() });
            let e = read_err(&p, Sam3dStatus::BadVolume);
            let want = format!("vox_offset = {}", off as u64);
            assert!(
                e.message.contains(&want),
                "{name}: {want:?} not in {}",
                e.message
            );
        }
    }
}

/// pixdim 0 or NaN on an axis of several voxels is BAD_VOLUME naming the field (it used to read as
/// 1 mm); on an axis of one voxel it reads as 1 mm (single slices often leave it unset).
#[test]
fn unset_pixdim_on_an_axis_of_several_voxels_is_bad_volume() {
    let dir = TempDir::new("pixdim");
    for be in [false, true] {
        for bad in [0.0f32, f32::NAN] {
            let mut h = Hdr::new([4, 3, 2], INT16);
            if be {
                h = h.big_endian();
            }
            h.pixdim[2] = bad;
            let data = int16_bytes(&pattern(24), be);
            let p = dir.write("pix.nii", &h.file(&data));
            let e = read_err(&p, Sam3dStatus::BadVolume);
            assert!(
                e.message.contains(&format!("pixdim[2] = {bad}")),
                "{}",
                e.message
            );

            let mut one = Hdr::new([4, 1, 2], INT16);
            if be {
                one = one.big_endian();
            }
            one.pixdim[2] = bad;
            one.pixdim[3] = 2.5;
            let p = dir.write("pix1.nii", &one.file(&int16_bytes(&pattern(8), be)));
            let v = read_ok(&p);
            assert_eq!(v.geom.spacing, [1.0, 1.0, 2.5]);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// .hdr/.img pairs and Analyze

/// A NIfTI-1 pair ("ni1") reads given either name, in both byte orders and with the .img
/// gzip-compressed; an Analyze 7.5 header (no magic) is refused as unsupported.
#[test]
fn hdr_img_pair_reads_from_either_name_and_analyze_is_refused() {
    let dir = TempDir::new("pair");
    let values = pattern(5 * 4 * 3);
    for be in [false, true] {
        for gz in [false, true] {
            let mut h = Hdr::new([5, 4, 3], INT16).sform([0.8, 0.9, 3.0], [-10.0, 20.0, 30.0]);
            if be {
                h = h.big_endian();
            }
            h.magic = *b"ni1\0";
            h.vox_offset = 0.0;
            h.scl_slope = 0.5;
            h.scl_inter = -3.0;
            let stem = format!("pair_{be}_{gz}");
            let hdr = dir.write(&format!("{stem}.hdr"), &h.bytes());
            let raw = int16_bytes(&values, be);
            let img = if gz {
                dir.write(&format!("{stem}.img.gz"), &gzip(&raw))
            } else {
                dir.write(&format!("{stem}.img"), &raw)
            };
            for p in [&hdr, &img] {
                let v = read_ok(p);
                assert_eq!(v.geom.dims, [5, 4, 3], "{}", p.display());
                assert_eq!(v.geom.spacing, [0.8f32 as f64, 0.9f32 as f64, 3.0]);
                // RAS (-10, 20, 30) is LPS (10, -20, 30)
                assert_eq!(v.geom.origin, [10.0, -20.0, 30.0]);
                let got = v.to_vec();
                assert!(
                    got.iter()
                        .zip(&values)
                        .all(|(&a, &b)| a == (b as f64 * 0.5 - 3.0) as f32),
                    "{}: voxels differ",
                    p.display()
                );
            }
        }
    }

    // the header of a pair without its image
    let mut h = Hdr::new([5, 4, 3], INT16);
    h.magic = *b"ni1\0";
    h.vox_offset = 0.0;
    let lone = dir.write("lone.hdr", &h.bytes());
    let e = read_err(&lone, Sam3dStatus::BadVolume);
    assert!(e.message.contains(".img"), "{}", e.message);

    // Analyze 7.5: no magic
    h.magic = [0; 4];
    let hdr = dir.write("analyze.hdr", &h.bytes());
    let img = dir.write("analyze.img", &int16_bytes(&values, false));
    for p in [&hdr, &img] {
        let e = read_err(p, Sam3dStatus::BadVolume);
        assert!(
            e.message.contains("Analyze") && e.message.contains("not supported"),
            "{}",
            e.message
        );
    }
}

// ------------------------------------------------------------------------------------------------
// messages

/// Each refusal names the field and its value as the file holds it, in either byte order (the
/// old reader swapped a dim[0] it disliked and reported 2048), without Rust debug text.
#[test]
fn messages_name_the_field_and_the_value_in_both_byte_orders() {
    let dir = TempDir::new("msg");
    type Edit = fn(&mut Hdr);
    let cases: [(Edit, &str); 7] = [
        (|h| h.dim[0] = 8, "dim[0] = 8"),
        (|h| h.dim[0] = 0, "dim[0] = 0"),
        (|h| h.dim[2] = -3, "dim[2] = -3"),
        (|h| h.dim[3] = 0, "dim[3] = 0"),
        (
            |h| {
                h.dim[0] = 4;
                h.dim[4] = 2
            },
            "dim[4] = 2",
        ),
        (|h| h.datatype = 32, "datatype = 32"),
        (|h| h.vox_offset = 352.5, "vox_offset = 352.5"),
    ];
    for be in [false, true] {
        for (edit, want) in cases {
            let mut h = Hdr::new([4, 3, 2], INT16);
            if be {
                h = h.big_endian();
            }
            edit(&mut h);
            let data = int16_bytes(&pattern(24), be);
            for gz in [false, true] {
                let name = format!("msg_{be}.nii{}", if gz { ".gz" } else { "" });
                let f = h.file(&data);
                let p = dir.write(&name, &if gz { gzip(&f) } else { f });
                let e = read_err(&p, Sam3dStatus::BadVolume);
                assert!(
                    e.message.contains(want),
                    "{name} (big endian: {be}): {want:?} not in {}",
                    e.message
                );
                assert!(e.message.contains(&name), "{}", e.message);
            }
        }
    }

    // sizeof_hdr, whose value decides the byte order
    let mut h = Hdr::new([4, 3, 2], INT16);
    h.sizeof_hdr = 1000;
    let p = dir.write("size.nii", &h.file(&[0; 48]));
    let e = read_err(&p, Sam3dStatus::BadVolume);
    assert!(e.message.contains("sizeof_hdr = 1000"), "{}", e.message);

    // and a valid big-endian file reads as its little-endian twin
    let values = pattern(4 * 3 * 2);
    let mut le = Hdr::new([4, 3, 2], INT16).sform([0.7, 0.8, 2.5], [5.0, -6.0, 7.0]);
    le.scl_slope = 2.0;
    le.scl_inter = 1.0;
    let be = le.clone().big_endian();
    let a = read_ok(&dir.write("le.nii", &le.file(&int16_bytes(&values, false))));
    let b = read_ok(&dir.write("be.nii", &be.file(&int16_bytes(&values, true))));
    assert_eq!(a.geom, b.geom);
    assert_eq!(a.to_vec(), b.to_vec());
    assert_eq!(
        a.at(1, 2, 1),
        (values[1 + 4 * 2 + 12] as f64 * 2.0 + 1.0) as f32
    );
}

/// Bytes after the gzip stream that do not start another member (padding, junk) are ignored, as
/// gzip(1), nibabel and ITK ignore them; a stream of several members reads as one.
#[test]
fn trailing_bytes_and_several_gzip_members_read_like_other_readers() {
    let dir = TempDir::new("members");
    let good = std::fs::read(SAMPLE).unwrap();
    let want = read_ok(Path::new(SAMPLE)).to_vec();
    for (name, tail) in [
        ("pad.nii.gz", vec![0u8; 512]),
        ("junk.nii.gz", b"hello".to_vec()),
    ] {
        let mut f = good.clone();
        f.extend_from_slice(&tail);
        assert_eq!(read_ok(&dir.write(name, &f)).to_vec(), want, "{name}");
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&good[..])
        .read_to_end(&mut raw)
        .unwrap();
    let half = raw.len() / 2;
    let mut two = gzip(&raw[..half]);
    two.extend_from_slice(&gzip(&raw[half..]));
    assert_eq!(read_ok(&dir.write("two.nii.gz", &two)).to_vec(), want);
}

/// A huge vox_offset in a small gzip file is refused before gigabytes are inflated to reach it,
/// and the message gives the value as the file holds it.
#[test]
fn a_huge_vox_offset_is_refused_without_inflating_up_to_it() {
    let dir = TempDir::new("skip");
    let mut h = Hdr::new([1, 1, 1], UINT8);
    h.vox_offset = (8u64 << 30) as f32;
    let mut prefix = h.bytes();
    prefix.extend_from_slice(&[0; 4]);
    let p = dir.write("skip.nii.gz", &gzip_zeros(&prefix, 8 << 30));
    let start = Instant::now();
    let e = read_err(&p, Sam3dStatus::BadVolume);
    let held = format!("vox_offset = {}", h.vox_offset);
    assert!(e.message.contains(&held), "{held:?} not in {}", e.message);
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    h.vox_offset = 1e20;
    let mut far = h.bytes();
    far.extend_from_slice(&[0; 5]);
    let p = dir.write("far.nii", &far);
    let e = read_err(&p, Sam3dStatus::BadVolume);
    assert!(
        e.message.contains("vox_offset = 100000000000000000000"),
        "{}",
        e.message
    );
}
