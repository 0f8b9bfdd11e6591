//! The fuzz harnesses: plain Rust on the stable toolchain, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by the replay test of the main crate (`tests/fuzz_replay.rs`).
//!
//! Each harness takes arbitrary bytes, drives one part of the library with them and panics only
//! when the library breaks a promise it makes: a caught panic reported as
//! `SAM3D_STATUS_INTERNAL`, a borrowed volume that reaches outside its buffer, a mask that
//! disagrees with the result that announced it, a package that names a file outside itself, two
//! readers of the same bytes that disagree. Errors returned for bad input are the expected outcome.
//!
//! * `nifti`: `read_nifti_bytes` on the bytes (`.nii`, or `.nii.gz` by gzip's magic), and
//!   `read_nifti` on the same bytes written to a file: both must agree.
//! * `manifest`: `Manifest::parse` on the bytes, then `Package::open` (hashes checked and not) on
//!   a package folder holding the bytes as its manifest next to dummy graph files, symlinks and
//!   a file outside the package (layout in `PackageDir`).
//! * `buffer`: a volume description, then a sequence of session calls, decoded by hand from the
//!   bytes (format in `buffer`), run through the C ABI on the tiny fixture models.
//!
//! The memory budget is lowered to `MEMORY_BUDGET` so that a whole-volume array above it must be
//! refused by the library's own checks; the fuzz runs and the replay test flag single allocations
//! above twice that.

#![allow(dead_code)]

use std::ffi::{c_void, CStr, CString};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};

use sam3d::ffi::Sam3dResult;
use sam3d::ffi::*;
use sam3d::internals::Voxels;
use sam3d::Sam3dStatus;
use sam3d::{Manifest, Package, MANIFEST_FILE};

/// The library's memory budget during fuzzing (bytes for one whole-volume array).
pub const MEMORY_BUDGET: u64 = 256 << 20;

/// Largest buffer the `buffer` harness allocates for a volume.
pub const MAX_BUFFER: usize = 1 << 20;

/// Largest volume (voxels) the `buffer` harness opens sessions on: masks of bigger volumes are
/// legitimately large and slow, which is not what this harness looks for.
pub const SESSION_MAX_VOXELS: u64 = 1 << 21;

/// Most interactions that run the model (clicks, undo, redo) per input.
const MAX_MODEL_RUNS: usize = 8;

/// Most operations decoded per input.
const MAX_OPS: usize = 32;

/// Content of the dummy files of the `manifest` harness's package: `tools/fuzz_seeds.py` writes
/// manifests with the SHA-256 of exactly these bytes.
pub fn dummy_content(name: &str) -> Vec<u8> {
    format!("sam3d fuzz dummy file: {name}\n").into_bytes()
}

/// Placeholder a manifest seed may hold for the absolute path of the file outside the package.
pub const OUTSIDE_TOKEN: &str = "@OUTSIDE_ABS@";

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| sam3d_set_memory_budget(MEMORY_BUDGET));
}

/// With `SAM3D_FUZZ_TRACE` set, the harnesses print each call's outcome (to read what an input
/// does: `SAM3D_FUZZ_TRACE=1 cargo test --release --test fuzz_replay -- --nocapture`).
fn trace<T>(what: &str, outcome: std::result::Result<T, (Sam3dStatus, String)>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("SAM3D_FUZZ_TRACE").is_some()) {
        match outcome {
            Ok(_) => eprintln!("  {what}: Ok"),
            Err((st, msg)) => eprintln!("  {what}: {st:?} {msg}"),
        }
    }
}

fn traced<T>(what: &str, r: &sam3d::Result<T>) {
    trace(what, r.as_ref().map_err(|e| (e.status, e.message.clone())));
}

fn temp_root(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sam3d-fuzz-{kind}-{}", std::process::id()))
}

/// Remove this process's temporary folders (the replay test calls it at its end; a fuzz run
/// leaves them in the temporary directory, a few small files per process).
pub fn cleanup() {
    for kind in ["nifti", "manifest"] {
        let _ = std::fs::remove_dir_all(temp_root(kind));
    }
}

// ------------------------------------------------------------------------------------------------
// nifti

fn fingerprint(v: &[f32]) -> u64 {
    // FNV-1a over the bits: equal data, equal print (NaN payloads included)
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a successful read must satisfy; returns a summary that two readers must share.
fn check_volume(vol: &sam3d::Volume, who: &str) -> (sam3d::Geometry, usize, u64) {
    if let Err(e) = vol.geom.validate() {
        panic!(
            "{who} returned an invalid geometry {:?}: {}",
            vol.geom, e.message
        );
    }
    let n = vol
        .geom
        .voxel_count()
        .unwrap_or_else(|e| panic!("{who}: voxel count of {:?}: {}", vol.geom.dims, e.message));
    let Voxels::Owned(data) = &vol.voxels else {
        panic!("{who} returned a borrowed volume");
    };
    assert_eq!(
        data.len(),
        n,
        "{who}: {} voxels for dims {:?}",
        data.len(),
        vol.geom.dims
    );
    let nonfinite = data.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(
        vol.nonfinite, nonfinite,
        "{who}: nonfinite count {} but {nonfinite} NaN/Inf voxels",
        vol.nonfinite
    );
    assert!(
        n as u64 * 4 <= MEMORY_BUDGET,
        "{who}: {n} float32 voxels exceed the memory budget of {MEMORY_BUDGET} bytes"
    );
    (vol.geom, n, fingerprint(data))
}

/// `read_bytes` on the bytes; then `read` on a file holding them, which must agree.
pub fn nifti(data: &[u8]) {
    init();
    let from_bytes = sam3d::read_nifti_bytes(data);
    traced("read_bytes", &from_bytes);
    let summary = match &from_bytes {
        Ok(v) => Ok(check_volume(v, "read_bytes")),
        Err(e) => {
            assert_ne!(
                e.status,
                Sam3dStatus::Internal,
                "read_bytes: internal error: {}",
                e.message
            );
            Err(e.status)
        }
    };
    drop(from_bytes);

    static FILE_LOCK: Mutex<()> = Mutex::new(());
    let _guard = FILE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = temp_root("nifti");
    std::fs::create_dir_all(&dir).expect("temporary folder for the nifti harness");
    let name = if data.starts_with(&[0x1f, 0x8b]) {
        "volume.nii.gz"
    } else {
        "volume.nii"
    };
    let path = dir.join(name);
    std::fs::write(&path, data).expect("temporary file for the nifti harness");
    let from_file = sam3d::read_nifti(&path);
    traced("read", &from_file);
    let _ = std::fs::remove_file(&path);
    match (&summary, from_file) {
        (Ok(a), Ok(v)) => {
            let b = check_volume(&v, "read");
            assert!(
                *a == b,
                "read_bytes and read disagree: {:?} vs {:?}",
                (a.0.dims, a.1),
                (b.0.dims, b.1)
            );
        }
        (Err(_), Err(e)) => assert_ne!(
            e.status,
            Sam3dStatus::Internal,
            "read: internal error: {}",
            e.message
        ),
        (Ok(_), Err(e)) => panic!(
            "read_bytes accepts these bytes, read refuses the file ({:?}: {})",
            e.status, e.message
        ),
        (Err(s), Ok(_)) => panic!("read_bytes refuses these bytes ({s:?}), read accepts the file"),
    }
}

// ------------------------------------------------------------------------------------------------
// manifest

/// The `manifest` harness's folders, made once per process:
///
/// ```text
/// <tmp>/sam3d-fuzz-manifest-<pid>/
///     outside.onnx              a dummy file outside the package
///     pkg/                      the package: the fuzzed sam3d-model.json is written here
///         encoder.onnx decoder.onnx        dummy graph files (names of the fixtures')
///         sub/encoder.onnx                 a dummy file in a subfolder
///         dir.onnx/                        a folder with a graph file's name
///         link-outside.onnx -> ../outside.onnx
///         link-abs.onnx     -> <tmp>/sam3d-fuzz-manifest-<pid>/outside.onnx
///         link-inside.onnx  -> encoder.onnx
///         link-loop.onnx    -> link-loop.onnx
///         link-dangling.onnx -> missing.onnx
///         fifo.onnx                        a FIFO (hashing it would block)
/// ```
struct PackageDir {
    root: PathBuf,
    pkg: PathBuf,
    /// `pkg` with symlinks resolved
    pkg_real: PathBuf,
    /// the absolute path of outside.onnx, as a JSON string body
    outside_json: String,
}

/// The dummy regular files of the package, relative to `pkg`.
pub const DUMMY_FILES: [&str; 3] = ["encoder.onnx", "decoder.onnx", "sub/encoder.onnx"];

fn package_dir() -> &'static PackageDir {
    static DIR: OnceLock<PackageDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = temp_root("manifest");
        let _ = std::fs::remove_dir_all(&root);
        let pkg = root.join("pkg");
        std::fs::create_dir_all(pkg.join("sub")).expect("manifest harness folder");
        std::fs::create_dir_all(pkg.join("dir.onnx")).expect("manifest harness folder");
        for f in DUMMY_FILES {
            std::fs::write(pkg.join(f), dummy_content(f)).expect("manifest harness file");
        }
        let outside = root.join("outside.onnx");
        std::fs::write(&outside, dummy_content("outside.onnx")).expect("manifest harness file");
        use std::os::unix::fs::symlink;
        let links: [(&str, PathBuf); 5] = [
            ("link-outside.onnx", PathBuf::from("../outside.onnx")),
            ("link-abs.onnx", outside.clone()),
            ("link-inside.onnx", PathBuf::from("encoder.onnx")),
            ("link-loop.onnx", PathBuf::from("link-loop.onnx")),
            ("link-dangling.onnx", PathBuf::from("missing.onnx")),
        ];
        for (name, target) in links {
            symlink(target, pkg.join(name)).expect("manifest harness symlink");
        }
        // a FIFO, when the system has mkfifo (nothing is lost without it)
        let _ = std::process::Command::new("mkfifo")
            .arg(pkg.join("fifo.onnx"))
            .status();
        let outside_json = serde_escape(&outside.to_string_lossy());
        PackageDir {
            root,
            pkg_real: pkg.canonicalize().expect("manifest harness folder"),
            pkg,
            outside_json,
        }
    })
}

/// A string's body as a JSON string literal holds it.
fn serde_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A file name from a manifest that stays inside the package: relative, no `..`, no root.
fn stays_inside(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn replace_all(data: &[u8], token: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(token) {
            out.extend_from_slice(with);
            i += token.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// `Manifest::parse`, then `Package::open` without and with the hash check.
pub fn manifest(data: &[u8]) {
    init();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = package_dir();
    let token = OUTSIDE_TOKEN.as_bytes();
    let owned;
    let data = if data.windows(token.len()).any(|w| w == token) {
        owned = replace_all(data, token, dir.outside_json.as_bytes());
        &owned[..]
    } else {
        data
    };

    let parsed = std::str::from_utf8(data).ok().map(Manifest::parse);
    if let Some(p) = &parsed {
        traced("parse", p);
    }
    if let Some(Err(e)) = &parsed {
        assert_ne!(
            e.status,
            Sam3dStatus::Internal,
            "parse: internal error: {}",
            e.message
        );
    }
    // only the manifest is written, and only inside the package folder
    std::fs::write(dir.pkg.join(MANIFEST_FILE), data).expect("writing the fuzzed manifest");
    for verify in [false, true] {
        let opened = Package::open(&dir.pkg, verify);
        traced(if verify { "open(verify)" } else { "open" }, &opened);
        match &opened {
            Err(e) => assert_ne!(
                e.status,
                Sam3dStatus::Internal,
                "open(verify {verify}): internal error: {}",
                e.message
            ),
            Ok(p) => {
                match &parsed {
                    None => panic!("open(verify {verify}) accepts a manifest that is not UTF-8"),
                    Some(Err(e)) => panic!(
                        "open(verify {verify}) accepts a manifest that parse refuses ({:?}: {})",
                        e.status, e.message
                    ),
                    Some(Ok(m)) => assert_eq!(
                        format!("{m:?}"),
                        format!("{:?}", p.manifest),
                        "open(verify {verify}) and parse read the manifest differently"
                    ),
                }
                for g in [&p.manifest.graphs.encoder, &p.manifest.graphs.decoder] {
                    let names = std::iter::once(&g.file)
                        .chain(g.data_files.iter())
                        .chain(g.sha256.keys());
                    for name in names {
                        assert!(
                            stays_inside(name),
                            "open(verify {verify}) accepts the file name {name:?}, which leaves \
                             the package folder"
                        );
                        // symlinks included: what a name resolves to lies inside the package
                        if let Ok(real) = dir.pkg.join(name).canonicalize() {
                            assert!(
                                real.starts_with(&dir.pkg_real),
                                "open(verify {verify}) accepts {name:?}, which resolves to {} \
                                 outside the package folder",
                                real.display()
                            );
                        }
                    }
                }
            }
        }
        if verify && opened.is_ok() {
            assert!(
                Package::open(&dir.pkg, false).is_ok(),
                "the package opens with its hashes checked but not without"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// buffer

/// The tiny fixture models, opened once per process through the C ABI.
struct Models {
    orient: *mut Sam3dModel,
    array: *mut Sam3dModel,
}

// The C ABI documents models as thread-safe; the handles are never freed.
unsafe impl Send for Models {}
unsafe impl Sync for Models {}

fn last_error() -> String {
    unsafe { CStr::from_ptr(sam3d_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SAM3D_FUZZ_FIXTURES") {
        return PathBuf::from(d);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("tests/fixtures/models"),
        here.join("../tests/fixtures/models"),
    ]
    .into_iter()
    .find(|d| d.join("tiny-orient").is_dir())
    .expect("tests/fixtures/models not found (set SAM3D_FUZZ_FIXTURES)")
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| unsafe {
        let mut rt = std::ptr::null_mut();
        let st = sam3d_runtime_new(SAM3D_ABI_VERSION, std::ptr::null(), &mut rt);
        assert!(
            st == Sam3dStatus::Ok,
            "ONNX Runtime did not load ({}): run `make ort` and set SAM3D_ORT_LIBRARY",
            last_error()
        );
        let mut opts: Sam3dModelOptions = std::mem::zeroed();
        opts.struct_size = std::mem::size_of::<Sam3dModelOptions>() as u32;
        opts.threads = 1;
        let open = |name: &str| {
            let dir = fixtures_dir().join(name);
            let c = CString::new(dir.to_string_lossy().into_owned()).unwrap();
            let mut m = std::ptr::null_mut();
            let st = sam3d_model_open(rt, c.as_ptr(), &opts, &mut m);
            assert!(
                st == Sam3dStatus::Ok,
                "opening {}: {st:?} {}",
                dir.display(),
                last_error()
            );
            m
        };
        let models = Models {
            orient: open("tiny-orient"),
            array: open("tiny-array"),
        };
        // the models keep what they need; ONNX Runtime stays loaded
        sam3d_runtime_free(rt);
        models
    })
}

/// The bytes as a stream of fields; past the end every field reads as zero.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn left(&self) -> bool {
        self.pos < self.data.len()
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in out.iter_mut() {
            *b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos = self.pos.saturating_add(1);
        }
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn peek(&self) -> u8 {
        self.data.get(self.pos).copied().unwrap_or(0)
    }
    fn i8(&mut self) -> i8 {
        self.u8() as i8
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.take())
    }

    /// A float: `m < 0x80` a small one ((m - 32) / 4), then special values, then raw bits.
    fn value(&mut self) -> f64 {
        const SPECIAL: [f64; 24] = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1e300,
            -1e300,
            1e-300,
            1.0,
            -1.0,
            0.5,
            -0.5,
            1e9,
            -1e9,
            9007199254740992.0,
            9.223372036854776e18,
            1.8446744073709552e19,
            1e-7,
            -1e-7,
            1e-12,
        ];
        match self.u8() {
            m @ 0..=0x7f => (m as f64 - 32.0) / 4.0,
            m @ 0x80..=0xdf => SPECIAL[(m - 0x80) as usize % SPECIAL.len()],
            _ => self.f64(),
        }
    }
}

/// Element size of a dtype value (1 for values that are not a `Sam3dDtype`).
fn esize(dtype: i32) -> usize {
    match dtype {
        3 | 4 => 2,
        5..=7 => 4,
        8 => 8,
        _ => 1,
    }
}

fn dim(b: &mut Bytes) -> u64 {
    const SPECIAL: [u64; 15] = [
        0,
        1 << 32,
        (1 << 32) + 1,
        1 << 31,
        1 << 21,
        (1 << 16) + 1,
        u64::MAX,
        u64::MAX - 1,
        i64::MAX as u64,
        (i64::MAX as u64) + 1,
        (i64::MAX as u64) + 2,
        1 << 62,
        3_074_457_345_618_258_602, // i64::MAX / 3
        1 << 20,
        u32::MAX as u64,
    ];
    match b.u8() {
        m @ 0..=0xbf => 1 + (m % 48) as u64,
        0xc0..=0xdf => b.u16() as u64,
        m => {
            let i = (m - 0xe0) as usize;
            if i < SPECIAL.len() {
                SPECIAL[i]
            } else {
                b.u64()
            }
        }
    }
}

fn stride(b: &mut Bytes, a: usize, es: i64, dims: [u64; 3]) -> i64 {
    let m = b.u8();
    let s = match (m & 0x7f) % 8 {
        0 => dims[..a]
            .iter()
            .fold(es, |acc, &d| acc.wrapping_mul(d as i64)),
        1 => es.wrapping_mul(b.i8() as i64),
        2 => b.i64(),
        3 => (i64::MAX / (1 + (b.u8() % 8) as i64)).wrapping_add(b.i8() as i64),
        4 => i64::MIN.wrapping_add(b.u8() as i64),
        5 => 0,
        6 => es.wrapping_mul(b.u16() as i64),
        _ => i64::MAX - b.u8() as i64,
    };
    if m & 0x80 != 0 {
        s.wrapping_neg()
    } else {
        s
    }
}

/// Bytes of dense voxels, capped at `MAX_BUFFER`.
fn dense_len(es: usize, dims: [u64; 3]) -> Option<usize> {
    dims.iter()
        .try_fold(es as u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_BUFFER as u64)
        .map(|n| n as usize)
}

fn fill(b: &mut Bytes, buf: &mut [u8], dtype: i32) {
    let es = esize(dtype);
    // one element of value `v` in the dtype, little-endian
    let put = |buf: &mut [u8], e: usize, v: f64| {
        let o = e * es;
        let dst = &mut buf[o..o + es];
        match dtype {
            2 => dst.copy_from_slice(&(v as i8).to_le_bytes()),
            3 => dst.copy_from_slice(&(v as u16).to_le_bytes()),
            4 => dst.copy_from_slice(&(v as i16).to_le_bytes()),
            5 => dst.copy_from_slice(&(v as u32).to_le_bytes()),
            6 => dst.copy_from_slice(&(v as i32).to_le_bytes()),
            7 => dst.copy_from_slice(&(v as f32).to_le_bytes()),
            8 => dst.copy_from_slice(&v.to_le_bytes()),
            _ => dst[0] = v as u8,
        }
    };
    let elements = buf.len() / es;
    match b.u8() % 6 {
        0 => {}
        1 => buf.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8),
        2 => {
            let pat: [u8; 8] = b.take();
            buf.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = pat[i % 8]);
        }
        3 => {
            let mut s = b.u64() | 1;
            for x in buf.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *x = s as u8;
            }
        }
        m => {
            // CT-like values in the dtype; mode 5 adds a NaN (float dtypes) at one element
            for e in 0..elements {
                put(buf, e, ((e * 37) % 200) as f64 + 10.0);
            }
            if m == 5 {
                let at = b.u16() as usize;
                if elements > 0 && (dtype == 7 || dtype == 8) {
                    put(buf, at % elements, f64::NAN);
                }
            }
        }
    }
}

fn direction(b: &mut Bytes) -> [f64; 9] {
    let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    match b.u8() % 6 {
        0 => id,
        1 => {
            // a permutation with flips
            let p = b.u8();
            const PERMS: [[usize; 3]; 6] = [
                [0, 1, 2],
                [0, 2, 1],
                [1, 0, 2],
                [1, 2, 0],
                [2, 0, 1],
                [2, 1, 0],
            ];
            let perm = PERMS[(p % 6) as usize];
            let mut d = [0.0; 9];
            for c in 0..3 {
                let sign = if (p / 6) & (1 << c) != 0 { -1.0 } else { 1.0 };
                d[3 * perm[c] + c] = sign;
            }
            d
        }
        2 => {
            let axis = (b.u8() % 3) as usize;
            let t = b.u8() as f64 * std::f64::consts::TAU / 256.0;
            let (s, c) = t.sin_cos();
            let (i, j) = [(1, 2), (0, 2), (0, 1)][axis];
            let mut d = id;
            d[3 * i + i] = c;
            d[3 * i + j] = -s;
            d[3 * j + i] = s;
            d[3 * j + j] = c;
            d
        }
        3 => std::array::from_fn(|_| b.value()),
        4 => [0.0; 9],
        _ => {
            // third column nearly parallel to the first
            let e = b.value() * 1e-7;
            [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, e]
        }
    }
}

/// Progress callback's state: checks the stage values, cancels on request, and tries calls that
/// must be refused while the session is busy.
struct Progress {
    session: *mut Sam3dSession,
    events: u32,
    /// the event (counted since the session began) at which to cancel
    cancel_at: Option<u32>,
    /// whether the callback cancelled during the current interaction
    cancelled: bool,
    violations: Vec<String>,
}

unsafe extern "C" fn on_progress(stage: i32, done: i32, user: *mut c_void) {
    let p = &mut *(user as *mut Progress);
    p.events += 1;
    if !(0..=4).contains(&stage) || !(0..=1).contains(&done) {
        p.violations
            .push(format!("progress stage {stage} done {done}"));
    }
    if p.events % 7 == 1 {
        let mut id = 0u32;
        let st = sam3d_session_add_object(p.session, &mut id);
        if st != Sam3dStatus::Busy {
            p.violations.push(format!(
                "add_object from a progress callback gave {st:?}, not Busy"
            ));
        }
    }
    if p.cancel_at == Some(p.events) {
        p.cancelled = true;
        let st = sam3d_session_cancel(p.session);
        if st != Sam3dStatus::Ok {
            p.violations
                .push(format!("cancel from a progress callback gave {st:?}"));
        }
    }
}

fn ok_or_expected(st: Sam3dStatus, what: &str) {
    if st == Sam3dStatus::Ok {
        trace(what, Ok(()));
    } else {
        trace::<()>(what, Err((st, last_error())));
    }
    assert!(
        st != Sam3dStatus::Internal,
        "{what}: internal error: {}",
        last_error()
    );
}

fn check_result(r: &Sam3dResult, dims: [u64; 3], n: u64, what: &str) {
    assert!(
        r.voxels <= n,
        "{what}: {} voxels in a volume of {n}",
        r.voxels
    );
    assert!(
        r.encoded == 0 || r.encoded == 1,
        "{what}: encoded = {}",
        r.encoded
    );
    let b = &r.changed;
    if !(0..3).any(|a| b.hi[a] <= b.lo[a]) {
        for a in 0..3 {
            assert!(
                b.hi[a] <= dims[a],
                "{what}: changed box {b:?} outside the volume {dims:?}"
            );
        }
    }
}

/// A volume description and a session's calls, decoded from the bytes:
///
/// ```text
/// setup  u8   bit 0: model (0 tiny-orient, 1 tiny-array); bit 1: data pointer NULL;
///             bits 2-4: the data pointer's offset into the buffer (0-7, misaligned);
///             bit 5: session_new with a wrong ABI version; bit 6: progress callback;
///             bit 7: free the volume handle right after the session is made
/// dtype  u8   < 0xf0: value % 10 (1..8 are Sam3dDtype); else an i32 follows
/// dims   3 x  u8 m: < 0xc0: 1 + m % 48; < 0xe0: a u16 follows; else special values (`dim`)
/// strides 3 x u8 m: kind (m & 0x7f) % 8 (`stride`), bit 7 negates
/// buffer u8   % 4: 0 dense size, 1 a u32 % (MAX_BUFFER + 1) follows, 2 dense - 1, 3 MAX_BUFFER
/// size   u8   % 4: 0 the buffer's length, 1 length - u8, 2 zero, 3 a u32 % (length + 1)
/// fill   u8   % 6 (`fill`)
/// spacing u8  % 3: 0 ones, 1 three `value`s, 2 three u8 (0.25 + v / 16)
/// origin u8   % 2: 0 zeros, 1 three `value`s
/// direction u8 % 6 (`direction`)
/// then operations, one u8 each (< 0xf4: % 12; 0xf4.. : the prompts added later, `prompt_op`),
/// with their arguments (`buffer`)
/// ```
pub fn buffer(data: &[u8]) {
    init();
    let b = &mut Bytes { data, pos: 0 };
    let setup = b.u8();
    let dtype = match b.u8() {
        m @ 0..=0xef => (m % 10) as i32,
        _ => b.i32(),
    };
    let es = esize(dtype);
    let dims = [dim(b), dim(b), dim(b)];
    let strides: [i64; 3] = std::array::from_fn(|a| stride(b, a, es as i64, dims));
    let dense = dense_len(es, dims);
    let len = match b.u8() % 4 {
        0 => dense.unwrap_or(MAX_BUFFER),
        1 => b.u32() as usize % (MAX_BUFFER + 1),
        2 => dense.unwrap_or(MAX_BUFFER).saturating_sub(1),
        _ => MAX_BUFFER,
    };
    let claimed = match b.u8() % 4 {
        0 => len,
        1 => len.saturating_sub(b.u8() as usize),
        2 => 0,
        _ => b.u32() as usize % (len + 1),
    };
    let offset = ((setup >> 2) & 7) as usize;
    let mut buf = vec![0u8; len + offset];
    fill(b, &mut buf[offset..], dtype);
    let spacing = match b.u8() % 3 {
        0 => [1.0; 3],
        1 => [b.value(), b.value(), b.value()],
        _ => [0; 3].map(|_| 0.25 + b.u8() as f64 / 16.0),
    };
    let origin = match b.u8() % 2 {
        0 => [0.0; 3],
        _ => [b.value(), b.value(), b.value()],
    };
    let dir = direction(b);
    let count = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if (dtype == 7 || dtype == 8) && count.is_some_and(|c| c > 1 << 24) {
        // a float volume is scanned for NaN when it is made: legitimately slow when it is this
        // large (possible with overlapping strides); integer dtypes test the same checks
        return;
    }

    let mut desc: Sam3dBufferDesc = unsafe { std::mem::zeroed() };
    desc.data = if setup & 2 != 0 {
        std::ptr::null()
    } else {
        unsafe { buf.as_ptr().add(offset) as *const c_void }
    };
    desc.size_bytes = claimed;
    desc.dtype = dtype;
    desc.strides = strides;
    desc.geometry.dims = dims;
    desc.geometry.spacing = spacing;
    desc.geometry.origin = origin;
    desc.geometry.direction = dir;

    let mut vol = std::ptr::null_mut();
    let st = unsafe { sam3d_volume_from_buffer(&desc, &mut vol) };
    ok_or_expected(st, "volume_from_buffer");
    if st != Sam3dStatus::Ok {
        return;
    }
    // every voxel's bytes must lie inside the size claimed
    let extent = (0..3).try_fold((0i128, 0i128), |(lo, hi), a| {
        let span = (strides[a] as i128).checked_mul(dims[a] as i128 - 1)?;
        Some(if span < 0 {
            (lo.checked_add(span)?, hi)
        } else {
            (lo, hi.checked_add(span)?)
        })
    });
    match extent {
        Some((lo, hi)) if lo >= 0 && hi + es as i128 <= claimed as i128 => {}
        _ => panic!(
            "volume_from_buffer accepted dims {dims:?}, strides {strides:?}, dtype {dtype}, \
             whose voxels reach {extent:?} (+{es} bytes) outside the {claimed} bytes claimed"
        ),
    }
    let mut g: Sam3dGeometry = unsafe { std::mem::zeroed() };
    let st = unsafe { sam3d_volume_geometry(vol, &mut g) };
    assert!(st == Sam3dStatus::Ok, "volume_geometry: {st:?}");
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
    };
    assert!(
        g.dims == dims
            && close(&g.spacing, &spacing)
            && close(&g.origin, &origin)
            && close(&g.direction, &dir),
        "volume_geometry {:?} differs from the description {:?}",
        (g.dims, g.spacing, g.origin, g.direction),
        (dims, spacing, origin, dir)
    );
    let Some(n) = count else {
        panic!("volume_from_buffer accepted dims {dims:?}, whose product overflows");
    };
    if n > SESSION_MAX_VOXELS {
        unsafe { sam3d_volume_free(vol) };
        return;
    }
    let models = models();
    let model = if setup & 1 != 0 {
        models.array
    } else {
        models.orient
    };
    let abi = if setup & 0x20 != 0 {
        SAM3D_ABI_VERSION + 1
    } else {
        SAM3D_ABI_VERSION
    };
    let mut s = std::ptr::null_mut();
    let st = unsafe { sam3d_session_new(model, vol, abi, &mut s) };
    ok_or_expected(st, "session_new");
    if setup & 0x80 != 0 || st != Sam3dStatus::Ok {
        unsafe { sam3d_volume_free(vol) };
        vol = std::ptr::null_mut();
    }
    if st == Sam3dStatus::Ok {
        assert!(abi == SAM3D_ABI_VERSION, "session_new accepted ABI {abi}");
        session_ops(b, s, setup & 0x40 != 0, dims, spacing, origin, dir);
        unsafe { sam3d_session_free(s) };
    }
    unsafe { sam3d_volume_free(vol) };
    drop(buf);
}

#[allow(clippy::too_many_arguments)]
fn session_ops(
    b: &mut Bytes,
    s: *mut Sam3dSession,
    with_progress: bool,
    dims: [u64; 3],
    spacing: [f64; 3],
    origin: [f64; 3],
    dir: [f64; 9],
) {
    let n = dims.iter().product::<u64>();
    // shared with the callback: reached through the raw pointer only, freed at the end
    let progress: *mut Progress = Box::into_raw(Box::new(Progress {
        session: s,
        events: 0,
        cancel_at: None,
        cancelled: false,
        violations: Vec::new(),
    }));
    if with_progress {
        let st =
            unsafe { sam3d_session_set_progress(s, Some(on_progress), progress as *mut c_void) };
        assert!(st == Sam3dStatus::Ok, "set_progress: {st:?}");
    }
    // voxels of each object's mask as the last successful interaction reported them
    let mut objects: Vec<u64> = Vec::new();
    let mut runs = 0;
    for _ in 0..MAX_OPS {
        if !b.left() {
            break;
        }
        let op = match b.u8() {
            m @ 0..=0xf3 => m % 12,
            m => 12 + (m - 0xf4) % 6,
        };
        let obj = match b.u8() {
            m @ 0..=0xef => m as u32 % (objects.len() as u32 + 1),
            m => [u32::MAX, u32::MAX - 1, 1 << 31, objects.len() as u32 + 1][(m % 4) as usize],
        };
        let known = objects.get(obj as usize).copied();
        let mut r = Sam3dResult::default();
        match op {
            0..=2 | 11 => {
                // interactions that run the model; 11: an undo without a result pointer
                if runs >= MAX_MODEL_RUNS {
                    continue;
                }
                runs += 1;
                let st = unsafe {
                    match op {
                        0 => {
                            let coord = match b.u8() {
                                m @ 0..=0xef => (m % 3) as i32,
                                m => [3, -1, i32::MAX, i32::MIN][(m % 4) as usize],
                            };
                            let p = click_point(b, coord, dims, spacing, origin, dir);
                            sam3d_session_click(s, obj, p.as_ptr(), coord, &mut r)
                        }
                        1 => sam3d_session_undo(s, obj, &mut r),
                        2 => sam3d_session_redo(s, obj, &mut r),
                        _ => sam3d_session_undo(s, obj, std::ptr::null_mut()),
                    }
                };
                let what = match op {
                    0 => "click",
                    1 => "undo",
                    2 => "redo",
                    _ => "undo(NULL result)",
                };
                unsafe { after_interaction(progress, st, what) };
                if st == Sam3dStatus::Ok {
                    assert!(
                        known.is_some(),
                        "{what} succeeded on object {obj} of {}",
                        objects.len()
                    );
                    objects[obj as usize] = if op == 11 {
                        // the count is unknown: read it from the mask
                        let mut out = vec![0u8; n as usize];
                        let st =
                            unsafe { sam3d_session_get_mask(s, obj, out.as_mut_ptr(), n as usize) };
                        assert!(st == Sam3dStatus::Ok, "get_mask after {what}: {st:?}");
                        out.iter().map(|&v| v as u64).sum()
                    } else {
                        check_result(&r, dims, n, what);
                        r.voxels
                    };
                }
            }
            3 if b.peek() % 6 >= 4 => {
                // the mask inside a box: 4 a box inside the volume, 5 any box (also outside)
                let inside = b.u8() % 6 == 4;
                let mut lo = [0u64; 3];
                let mut hi = [0u64; 3];
                for a in 0..3 {
                    let (x, y) = (b.u8() as u64, b.u8() as u64);
                    if inside {
                        let (x, y) = (x % (dims[a] + 1), y % (dims[a] + 1));
                        (lo[a], hi[a]) = (x.min(y), x.max(y));
                    } else {
                        (lo[a], hi[a]) = (x, y);
                    }
                }
                let count = (0..3).map(|a| hi[a].saturating_sub(lo[a])).product::<u64>() as usize;
                let size = if b.u8().is_multiple_of(4) {
                    count + 1
                } else {
                    count
                };
                let mut out = vec![7u8; size.max(1)];
                let bx = Sam3dBox { lo, hi };
                let st = unsafe { sam3d_session_get_mask_box(s, obj, &bx, out.as_mut_ptr(), size) };
                ok_or_expected(st, "get_mask_box");
                let fits = (0..3).all(|a| lo[a] <= hi[a] && hi[a] <= dims[a]);
                if st == Sam3dStatus::Ok {
                    assert!(
                        fits && size == count && known.is_some(),
                        "get_mask_box accepted {bx:?}, {size} bytes"
                    );
                    let mut whole = vec![0u8; n as usize];
                    let st =
                        unsafe { sam3d_session_get_mask(s, obj, whole.as_mut_ptr(), n as usize) };
                    assert!(st == Sam3dStatus::Ok, "get_mask: {st:?}");
                    let mut at = 0;
                    for k in lo[2]..hi[2] {
                        for j in lo[1]..hi[1] {
                            for i in lo[0]..hi[0] {
                                let w = whole[(i + dims[0] * (j + dims[1] * k)) as usize];
                                assert_eq!(out[at], w, "get_mask_box at {i},{j},{k}");
                                at += 1;
                            }
                        }
                    }
                } else {
                    assert!(
                        out.iter().all(|&v| v == 7),
                        "get_mask_box wrote a refused buffer"
                    );
                }
            }
            3 => {
                // 0: the right size, 1: one short, 2: one more, 3: zero
                let mode = b.u8() % 6;
                let size = match mode {
                    0 => n as usize,
                    1 => n as usize - 1,
                    2 => n as usize + 1,
                    _ => 0,
                };
                let mut out = vec![7u8; size.max(1)];
                let st = unsafe { sam3d_session_get_mask(s, obj, out.as_mut_ptr(), size) };
                ok_or_expected(st, "get_mask");
                if st == Sam3dStatus::Ok {
                    assert!(mode == 0, "get_mask accepted {size} bytes for {n} voxels");
                    check_mask(&out[..size], known, obj);
                }
            }
            4 => {
                let mut id = 0u32;
                let st = unsafe { sam3d_session_add_object(s, &mut id) };
                assert!(st == Sam3dStatus::Ok, "add_object: {st:?} {}", last_error());
                assert_eq!(id as usize, objects.len(), "add_object's id");
                objects.push(0);
            }
            5 => {
                let flips = [1, 2, 4, 8, 0, 3, 16, u32::MAX][(b.u8() % 8) as usize];
                let keep = [0, 1, 2, -1][(b.u8() % 4) as usize];
                let st = unsafe { sam3d_session_set_inference(s, flips, keep) };
                ok_or_expected(st, "set_inference");
                let valid = [1, 2, 4, 8].contains(&flips) && (keep == 0 || keep == 1);
                assert!(
                    (st == Sam3dStatus::Ok) == valid,
                    "set_inference({flips}, {keep}): {st:?}"
                );
            }
            6 => {
                let (mut f, mut k) = (0u32, 0i32);
                let st = unsafe { sam3d_session_get_inference(s, &mut f, &mut k) };
                assert!(st == Sam3dStatus::Ok, "get_inference: {st:?}");
                assert!(
                    [1, 2, 4, 8].contains(&f) && (k == 0 || k == 1),
                    "get_inference: {f} {k}"
                );
            }
            7 => {
                let mut m = std::ptr::null_mut();
                let st = unsafe { sam3d_session_mask(s, obj, &mut m) };
                ok_or_expected(st, "session_mask");
                if st == Sam3dStatus::Ok {
                    let (mut p, mut len) = (std::ptr::null(), 0usize);
                    let st = unsafe { sam3d_mask_data(m, &mut p, &mut len) };
                    assert!(st == Sam3dStatus::Ok, "mask_data: {st:?}");
                    assert_eq!(len as u64, n, "mask_data's size");
                    let data = unsafe { std::slice::from_raw_parts(p, len) };
                    check_mask(data, known, obj);
                    unsafe { sam3d_mask_free(m) };
                }
            }
            8 => {
                // a cancel while nothing runs is dropped: the next interaction goes ahead
                let st = unsafe { sam3d_session_cancel(s) };
                assert!(st == Sam3dStatus::Ok, "cancel: {st:?}");
            }
            9 => {
                let p = unsafe { &mut *progress };
                p.cancel_at = Some(p.events + 1 + (b.u8() % 16) as u32);
            }
            10 => unsafe {
                // NULL pointers where the ABI checks them
                let st = sam3d_session_click(s, obj, std::ptr::null(), 0, &mut r);
                assert!(st == Sam3dStatus::NullPointer, "click(NULL point): {st:?}");
                let st = sam3d_session_get_mask(s, obj, std::ptr::null_mut(), n as usize);
                assert!(st == Sam3dStatus::NullPointer, "get_mask(NULL): {st:?}");
                let st = sam3d_session_undo(std::ptr::null_mut(), obj, &mut r);
                assert!(st == Sam3dStatus::NullPointer, "undo(NULL session): {st:?}");
            },
            12..=14 => {
                if runs >= MAX_MODEL_RUNS {
                    continue;
                }
                runs += 1;
                let what = ["click_ex", "set_box", "set_mask"][op as usize - 12];
                let (st, want) = prompt_op(b, s, op, obj, n, dims, spacing, origin, dir, &mut r);
                unsafe { after_interaction(progress, st, what) };
                if st == Sam3dStatus::Ok {
                    assert!(known.is_some(), "{what} succeeded on object {obj}");
                    check_result(&r, dims, n, what);
                    if let Some(w) = want {
                        assert_eq!(r.voxels, w, "{what}: the segment's voxels");
                    }
                    objects[obj as usize] = r.voxels;
                }
            }
            15 => {
                let z = [1, 2, 4, 0, 3, 8, u32::MAX][(b.u8() % 7) as usize];
                let st = unsafe { sam3d_session_set_zoom_out(s, z) };
                ok_or_expected(st, "set_zoom_out");
                assert!(
                    (st == Sam3dStatus::Ok) == [1, 2, 4].contains(&z),
                    "set_zoom_out({z}): {st:?}"
                );
            }
            16 => {
                let mut z = 0u32;
                let st = unsafe { sam3d_session_get_zoom_out(s, &mut z) };
                assert!(
                    st == Sam3dStatus::Ok && [1, 2, 4].contains(&z),
                    "get_zoom_out: {st:?} {z}"
                );
            }
            _ => {
                let mut z = -1.0f64;
                let st = unsafe { sam3d_session_get_zoom(s, obj, &mut z) };
                ok_or_expected(st, "get_zoom");
                if st == Sam3dStatus::Ok {
                    assert!(known.is_some(), "get_zoom succeeded on object {obj}");
                    assert!(z == 0.0 || (z.is_finite() && z >= 1.0), "get_zoom: {z}");
                }
            }
        }
    }
    unsafe {
        sam3d_session_set_progress(s, None, std::ptr::null_mut());
        drop(Box::from_raw(progress));
    }
}

/// The checks after an interaction that may run the model: its status, the progress callback's
/// violations, and that only a cancel made while it ran stopped it (a stale one is dropped); then
/// the callback's cancel state is reset for the next one.
///
/// # Safety
/// `progress` is the live `Progress` the session's callback uses, and no call runs.
unsafe fn after_interaction(progress: *mut Progress, st: Sam3dStatus, what: &str) {
    ok_or_expected(st, what);
    // SAFETY: the caller's contract: the callback is not running, so this is the only reference.
    let p = unsafe { &mut *progress };
    if let Some(v) = p.violations.first() {
        panic!("{what}: {v}");
    }
    assert!(
        st != Sam3dStatus::Cancelled || p.cancelled,
        "{what} was cancelled, and no cancel was made while it ran"
    );
    p.cancel_at = None;
    p.cancelled = false;
}

/// A labelled click, a box or a starting segment (ops 12, 13, 14) from the bytes; with the voxel
/// count a successful starting segment must report.
#[allow(clippy::too_many_arguments)]
fn prompt_op(
    b: &mut Bytes,
    s: *mut Sam3dSession,
    op: u8,
    obj: u32,
    n: u64,
    dims: [u64; 3],
    spacing: [f64; 3],
    origin: [f64; 3],
    dir: [f64; 9],
    r: &mut Sam3dResult,
) -> (Sam3dStatus, Option<u64>) {
    let coord = match b.u8() {
        m @ 0..=0xef => (m % 3) as i32,
        m => [3, -1, i32::MAX, i32::MIN][(m % 4) as usize],
    };
    match op {
        12 => {
            let label = [1, 0, 1, 0, 2, -1][(b.u8() % 6) as usize];
            let p = click_point(b, coord, dims, spacing, origin, dir);
            let st = unsafe { sam3d_session_click_ex(s, obj, p.as_ptr(), coord, label, r) };
            // the fixtures take positive clicks only
            if label == 0 && (0..3).contains(&coord) {
                assert!(
                    matches!(
                        st,
                        Sam3dStatus::Unsupported | Sam3dStatus::Busy | Sam3dStatus::InvalidArgument
                    ),
                    "a negative click on a positive-only package: {st:?}"
                );
            }
            (st, None)
        }
        13 => {
            let a = click_point(b, coord, dims, spacing, origin, dir);
            let c = click_point(b, coord, dims, spacing, origin, dir);
            (
                unsafe { sam3d_session_set_box(s, obj, a.as_ptr(), c.as_ptr(), coord, r) },
                None,
            )
        }
        _ => {
            let mode = b.u8();
            let size = match mode % 4 {
                0 | 1 => n as usize,
                2 => (n as usize).saturating_sub(1),
                _ => 0,
            };
            let every = 1 + (b.u8() % 5) as usize;
            let buf: Vec<u8> = (0..size.max(1))
                .map(|i| {
                    if i % every == 0 {
                        1 + (i % 255) as u8
                    } else {
                        0
                    }
                })
                .collect();
            let want = buf[..size].iter().filter(|&&v| v != 0).count() as u64;
            let st = unsafe { sam3d_session_set_mask(s, obj, buf.as_ptr(), size, r) };
            if st == Sam3dStatus::Ok {
                assert!(
                    size as u64 == n,
                    "set_mask accepted {size} bytes for {n} voxels"
                );
            }
            (st, Some(want))
        }
    }
}

fn check_mask(data: &[u8], known: Option<u64>, obj: u32) {
    assert!(
        data.iter().all(|&v| v <= 1),
        "mask of object {obj} holds values other than 0 and 1"
    );
    let sum: u64 = data.iter().map(|&v| v as u64).sum();
    let known = known.unwrap_or_else(|| panic!("a mask of object {obj}, which does not exist"));
    assert_eq!(
        sum, known,
        "mask of object {obj}: {sum} voxels set, the last result said {known}"
    );
}

/// A click's point: per axis a fraction of the volume (inside), or a special value, in the
/// coordinates `coord` asks for (voxel index, LPS or RAS).
fn click_point(
    b: &mut Bytes,
    coord: i32,
    dims: [u64; 3],
    spacing: [f64; 3],
    origin: [f64; 3],
    dir: [f64; 9],
) -> [f64; 3] {
    let mut idx = [0.0; 3];
    let mut raw = [None; 3];
    for a in 0..3 {
        let d = dims[a] as f64;
        match b.u8() {
            m @ 0..=0xbf => idx[a] = m as f64 / 191.0 * d - 0.5,
            m @ 0xc0..=0xdf => {
                let special = [
                    -0.5,
                    d - 0.5,
                    d - 0.5 + 1e-9,
                    -0.5 - 1e-9,
                    d,
                    -1.0,
                    (d - 1.0) / 2.0,
                    d * 1e6,
                ];
                idx[a] = special[(m % 8) as usize];
            }
            _ => raw[a] = Some(b.value()),
        }
    }
    let mut p = match coord {
        1 | 2 => {
            let mut lps = origin;
            for (r, l) in lps.iter_mut().enumerate() {
                for c in 0..3 {
                    *l += dir[3 * r + c] * spacing[c] * idx[c];
                }
            }
            if coord == 2 {
                [-lps[0], -lps[1], lps[2]]
            } else {
                lps
            }
        }
        _ => idx,
    };
    for a in 0..3 {
        if let Some(v) = raw[a] {
            p[a] = v;
        }
    }
    p
}
