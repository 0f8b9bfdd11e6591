//! A hostile host and hostile packages against the C ABI: wrapping strides, re-entrant and
//! concurrent session calls, absurd thread counts, manifests that lie about the crop or point
//! outside their folder, runtime paths, scaled directions. Each case once crashed, hung or
//! silently accepted the input.

mod common;

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::fixture;
use sam3d::ffi::Sam3dResult;
use sam3d::ffi::*;
use sam3d::Sam3dStatus;

fn runtime() -> *mut Sam3dRuntime {
    let mut rt = null_mut();
    let s = unsafe { sam3d_runtime_new(SAM3D_ABI_VERSION, null(), &mut rt) };
    assert_eq!(s, Sam3dStatus::Ok, "ONNX Runtime: run `make ort`");
    rt
}

fn open(dir: &Path, threads: u32) -> (Sam3dStatus, *mut Sam3dModel, String) {
    let rt = runtime();
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    let opts = Sam3dModelOptions {
        struct_size: std::mem::size_of::<Sam3dModelOptions>() as u32,
        device: 0,
        threads,
        skip_hash_check: 0,
        bf16: 0,
        cache_dir: std::ptr::null(),
    };
    let mut m = null_mut();
    let s = unsafe { sam3d_model_open(rt, c.as_ptr(), &opts, &mut m) };
    let msg = last_error();
    unsafe { sam3d_runtime_free(rt) };
    (s, m, msg)
}

fn last_error() -> String {
    unsafe { std::ffi::CStr::from_ptr(sam3d_last_error()) }
        .to_string_lossy()
        .into_owned()
}

const EYE: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

fn desc(data: &[u8], dtype: i32, dims: [u64; 3], strides: [i64; 3]) -> Sam3dBufferDesc {
    Sam3dBufferDesc {
        data: data.as_ptr() as *const c_void,
        size_bytes: data.len(),
        dtype,
        strides,
        geometry: Sam3dGeometry {
            dims,
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: EYE,
        },
    }
}

fn from_buffer(d: &Sam3dBufferDesc) -> (Sam3dStatus, *mut Sam3dVolume) {
    let mut v = null_mut();
    let s = unsafe { sam3d_volume_from_buffer(d, &mut v) };
    (s, v)
}

/// Per-axis spans that each fit in 64 bits but overflow together, in every sign combination:
/// refused, never read (the sum once wrapped to a small offset that passed the check).
#[test]
fn strides_whose_spans_overflow_together_are_refused() {
    let buf = vec![0u8; 4 * 27];
    // 6 * s = 2^64 + 8: in 64-bit arithmetic the three spans (2 s each) summed to 8 bytes
    let s = 3074457345618258604i64;
    let near_max = i64::MAX - 7;
    let cases: [([u64; 3], [i64; 3]); 4] = [
        ([3, 3, 3], [s, s, s]),
        ([2, 2, 2], [near_max, near_max, 16]),
        ([2, 2, 2], [16, near_max, near_max]),
        ([3, 3, 3], [(i64::MAX / 3) & !7; 3]),
    ];
    for dtype in [1, 7] {
        for (dims, base) in cases {
            for signs in 0..8 {
                let strides: [i64; 3] = std::array::from_fn(|a| {
                    if signs >> a & 1 == 1 {
                        -base[a]
                    } else {
                        base[a]
                    }
                });
                let (st, v) = from_buffer(&desc(&buf, dtype, dims, strides));
                assert_eq!(
                    st,
                    Sam3dStatus::InvalidArgument,
                    "{strides:?} dtype {dtype}"
                );
                assert!(v.is_null());
            }
        }
        // just beyond the buffer by one element, and exactly fitting
        let e = if dtype == 1 { 1 } else { 4 };
        let n = 27 * e as usize;
        let (s, _) = from_buffer(&desc(&buf[..n - 1], dtype, [3, 3, 3], [e, 3 * e, 9 * e]));
        assert_eq!(s, Sam3dStatus::InvalidArgument);
        let (s, v) = from_buffer(&desc(&buf[..n], dtype, [3, 3, 3], [e, 3 * e, 9 * e]));
        assert_eq!(s, Sam3dStatus::Ok);
        unsafe { sam3d_volume_free(v) };
    }
}

/// Strides that make voxels share bytes claim a volume far larger than the buffer (65536 x 65536
/// voxels on 128 KB): refused; padded strides (rows longer than the image) stay valid.
#[test]
fn overlapping_strides_are_refused() {
    let buf = vec![0u8; 1 << 17];
    for (dims, strides) in [
        ([65536, 65536, 1], [1, 1, 1]),
        ([4, 4, 4], [1, 2, 16]),
        ([4, 4, 4], [16, 1, 3]),
        ([4, 4, 4], [4, 4, 64]),
    ] {
        let (s, v) = from_buffer(&desc(&buf, 1, dims, strides));
        assert_eq!(s, Sam3dStatus::InvalidArgument, "{dims:?} {strides:?}");
        assert!(v.is_null());
        assert!(last_error().contains("overlap"), "{}", last_error());
    }
    for (dims, strides) in [
        ([4, 4, 4], [1, 5, 24]),
        ([4, 4, 4], [16, 4, 1]),
        ([4, 1, 4], [1, 1, 4]),
    ] {
        let (s, v) = from_buffer(&desc(&buf, 1, dims, strides));
        assert_eq!(s, Sam3dStatus::Ok, "{dims:?} {strides:?}: {}", last_error());
        unsafe { sam3d_volume_free(v) };
    }
}

/// Voxels of 1e30 mm are a valid geometry, but the volume then spans more of the model's voxels
/// than 64-bit grid positions hold (a fuzzer's click overflowed the crop origin): TOO_LARGE when the
/// session starts.
#[test]
fn a_volume_beyond_the_model_grid_is_refused_at_session_start() {
    let (s, model, msg) = open(&fixture("tiny-orient"), 1);
    assert_eq!(s, Sam3dStatus::Ok, "{msg}");
    let buf = vec![0u8; 8];
    let mut d = desc(&buf, 1, [2, 2, 2], [1, 2, 4]);
    d.geometry.spacing = [1e30, 1.0, 1.0];
    let (s, vol) = from_buffer(&d);
    assert_eq!(s, Sam3dStatus::Ok, "{}", last_error());
    let mut session = null_mut();
    let s = unsafe { sam3d_session_new(model, vol, SAM3D_ABI_VERSION, &mut session) };
    assert_eq!(s, Sam3dStatus::TooLarge, "{}", last_error());
    assert!(session.is_null());
    assert!(last_error().contains("model's voxels"), "{}", last_error());
    unsafe {
        sam3d_volume_free(vol);
        sam3d_model_free(model);
    }
}

/// A direction matrix scaled by 1e200 (infinite determinant) is not a direction.
#[test]
fn a_scaled_direction_is_refused() {
    let buf = vec![0u8; 8];
    let mut d = desc(&buf, 1, [2, 2, 2], [1, 2, 4]);
    d.geometry.direction = EYE.map(|v| v * 1e200);
    let (s, v) = from_buffer(&d);
    assert_eq!(s, Sam3dStatus::InvalidArgument);
    assert!(v.is_null());
    assert!(last_error().contains("direction"), "{}", last_error());
}

#[test]
fn thread_counts_beyond_the_limit_are_refused_at_once() {
    let t = std::time::Instant::now();
    let (s, m, msg) = open(&fixture("tiny-orient"), SAM3D_MAX_THREADS + 1);
    assert_eq!(s, Sam3dStatus::InvalidArgument, "{msg}");
    assert!(m.is_null());
    let (s, _, msg) = open(&fixture("tiny-orient"), 20000);
    assert_eq!(s, Sam3dStatus::InvalidArgument, "{msg}");
    assert!(msg.contains("threads"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A copy of a fixture package whose manifest `edit` changes.
fn package_copy(name: &str, tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let root = std::env::temp_dir().join(format!("sam3d-hardening-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("pkg");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let path = dir.join("sam3d-model.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    dir
}

fn set_shapes(m: &mut serde_json::Value, crop: i64) {
    m["graphs"]["encoder"]["inputs"][0]["shape"] = serde_json::json!([1, 1, crop, crop, crop]);
    m["graphs"]["decoder"]["outputs"][0]["shape"] = serde_json::json!([1, crop, crop, crop]);
}

/// The manifest's crop must agree with the graphs and stay within the limit: a crop of 512 took
/// gigabytes before ONNX Runtime refused the click; 1024 aborted the host.
#[test]
fn a_manifest_crop_that_disagrees_with_the_graphs_is_refused_at_open() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: [(&str, Edit, &str); 3] = [
        (
            "crop512",
            Box::new(|m| {
                m["architecture"]["crop"] = 512.into();
                set_shapes(m, 512);
            }),
            "crop",
        ),
        (
            "crop64-declared32",
            Box::new(|m| m["architecture"]["crop"] = 64.into()),
            "shape",
        ),
        (
            "crop64-declared64",
            Box::new(|m| {
                m["architecture"]["crop"] = 64.into();
                set_shapes(m, 64);
            }),
            "encoder input `crop`",
        ),
    ];
    for (tag, edit, needle) in cases {
        let dir = package_copy("tiny-orient", tag, edit);
        let (s, m, msg) = open(&dir, 1);
        assert_eq!(s, Sam3dStatus::BadModel, "{tag}: {msg}");
        assert!(m.is_null());
        assert!(msg.contains(needle), "{tag}: {msg}");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}

fn sha256_hex(p: &Path) -> String {
    sam3d::internals::sha256_file(p).unwrap()
}

/// Graph and data file names may not leave the package folder, by name or by symbolic link, and
/// the error never shows another file's digest.
#[test]
fn package_files_outside_the_folder_are_refused_before_opening() {
    let outside_of = |dir: &Path| dir.parent().unwrap().join("outside.onnx");
    // a decoder outside the package, named with "..", absolutely, or linked
    type NameOf = fn(&Path) -> String;
    let cases: [(&str, NameOf); 3] = [
        ("dotdot", |_| "../outside.onnx".into()),
        ("absolute", |dir| {
            dir.parent()
                .unwrap()
                .join("outside.onnx")
                .display()
                .to_string()
        }),
        ("symlink", |_| "linked.onnx".into()),
    ];
    for (tag, name_of) in cases {
        let dir = package_copy("tiny-orient", tag, |_| {});
        let outside = outside_of(&dir);
        std::fs::copy(dir.join("decoder.onnx"), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("linked.onnx")).unwrap();
        let name = name_of(&dir);
        let digest = sha256_hex(&outside);
        let path = dir.join("sam3d-model.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let dec = &mut m["graphs"]["decoder"];
        dec["file"] = name.clone().into();
        dec["sha256"] = serde_json::json!({ name.clone(): digest.to_uppercase() });
        std::fs::write(&path, m.to_string()).unwrap();
        let (s, model, msg) = open(&dir, 1);
        assert_eq!(s, Sam3dStatus::BadModel, "{tag}: {msg}");
        assert!(model.is_null());
        assert!(
            !msg.to_lowercase().contains(&digest),
            "{tag}: the error shows the outside file's digest: {msg}"
        );
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
    // /etc/passwd as a data file
    let dir = package_copy("tiny-orient", "etc", |m| {
        m["graphs"]["encoder"]["data_files"] = serde_json::json!(["/etc/passwd"]);
        m["graphs"]["encoder"]["sha256"]["/etc/passwd"] = "0".repeat(64).into();
    });
    let (s, _, msg) = open(&dir, 1);
    assert_eq!(s, Sam3dStatus::BadModel, "{msg}");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// Digests in upper case name the same bytes.
#[test]
fn digests_are_compared_in_either_case() {
    let dir = package_copy("tiny-orient", "upper", |m| {
        for g in ["encoder", "decoder"] {
            let table = m["graphs"][g]["sha256"].as_object_mut().unwrap();
            for v in table.values_mut() {
                *v = v.as_str().unwrap().to_uppercase().into();
            }
        }
    });
    let (s, model, msg) = open(&dir, 1);
    assert_eq!(s, Sam3dStatus::Ok, "{msg}");
    unsafe { sam3d_model_free(model) };
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// A path given by the caller is the only one tried: no fall-back to another ONNX Runtime.
#[test]
fn an_explicit_runtime_path_is_loaded_or_named_in_the_error() {
    let rt = runtime();
    let loaded = unsafe { std::ffi::CStr::from_ptr(sam3d_runtime_path(rt)) }
        .to_string_lossy()
        .into_owned();
    let mut other = null_mut();
    let missing = CString::new("/nonexistent/libonnxruntime.so").unwrap();
    let s = unsafe { sam3d_runtime_new(SAM3D_ABI_VERSION, missing.as_ptr(), &mut other) };
    assert_eq!(s, Sam3dStatus::RuntimeMissing);
    assert!(other.is_null());
    assert!(last_error().contains("/nonexistent/libonnxruntime.so"));
    let same = CString::new(loaded).unwrap();
    let s = unsafe { sam3d_runtime_new(SAM3D_ABI_VERSION, same.as_ptr(), &mut other) };
    assert_eq!(s, Sam3dStatus::Ok, "{}", last_error());
    unsafe {
        sam3d_runtime_free(other);
        sam3d_runtime_free(rt);
    }
}

/// A small volume with a bright blob (any click in it gives a region to encode).
fn blob() -> Vec<f32> {
    (0..32 * 32 * 32)
        .map(|n| {
            let (i, j, k) = (n % 32, n / 32 % 32, n / 1024);
            let r2 = [i, j, k]
                .iter()
                .map(|&v| (v as f32 - 16.0).powi(2))
                .sum::<f32>();
            40.0 + 200.0 * (-r2 / 30.0).exp()
        })
        .collect()
}

struct Fixture {
    model: *mut Sam3dModel,
    volume: *mut Sam3dVolume,
    session: *mut Sam3dSession,
    _data: Vec<f32>,
}

impl Fixture {
    fn new() -> Fixture {
        let (s, model, msg) = open(&fixture("tiny-orient"), 1);
        assert_eq!(s, Sam3dStatus::Ok, "{msg}");
        let data = blob();
        let bytes =
            unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, data.len() * 4) };
        let (s, volume) = from_buffer(&desc(bytes, 7, [32, 32, 32], [4, 128, 4096]));
        assert_eq!(s, Sam3dStatus::Ok, "{}", last_error());
        let mut session = null_mut();
        let s = unsafe { sam3d_session_new(model, volume, SAM3D_ABI_VERSION, &mut session) };
        assert_eq!(s, Sam3dStatus::Ok);
        let mut id = 0;
        assert_eq!(
            unsafe { sam3d_session_add_object(session, &mut id) },
            Sam3dStatus::Ok
        );
        Fixture {
            model,
            volume,
            session,
            _data: data,
        }
    }

    fn click(&self) -> Sam3dStatus {
        let p = [16.0, 16.0, 16.0];
        let mut r = Sam3dResult::default();
        unsafe { sam3d_session_click(self.session, 0, p.as_ptr(), 0, &mut r) }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unsafe {
            sam3d_session_free(self.session);
            sam3d_volume_free(self.volume);
            sam3d_model_free(self.model);
        }
    }
}

/// Run `f` on a thread; fail (instead of hanging the suite) when it does not return in time.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not return within {secs} s (a deadlock)"))
}

static REENTRANT: AtomicI32 = AtomicI32::new(-1);
static REENTRANT_PROGRESS: AtomicI32 = AtomicI32::new(-1);

unsafe extern "C" fn add_object_from_callback(stage: i32, done: i32, user: *mut c_void) {
    if stage == 2 && done == 0 {
        let s = user as *mut Sam3dSession;
        let mut id = 0;
        REENTRANT.store(
            sam3d_session_add_object(s, &mut id) as i32,
            Ordering::SeqCst,
        );
        // replacing the callback under a running call would free what the call still uses
        let st = sam3d_session_set_progress(s, None, null_mut());
        REENTRANT_PROGRESS.store(st as i32, Ordering::SeqCst);
    }
}

/// A progress callback calling back into its own session gets BUSY (it used to deadlock in
/// add_object), and the click goes on.
#[test]
fn a_call_from_the_progress_callback_gets_busy() {
    let f = Fixture::new();
    let s = f.session as usize;
    unsafe {
        sam3d_session_set_progress(
            f.session,
            Some(add_object_from_callback),
            f.session as *mut _,
        )
    };
    let status = within(60, "a click whose callback adds an object", move || {
        let p = [16.0, 16.0, 16.0];
        unsafe { sam3d_session_click(s as *mut Sam3dSession, 0, p.as_ptr(), 0, null_mut()) }
    });
    assert_eq!(status, Sam3dStatus::Ok);
    assert_eq!(REENTRANT.load(Ordering::SeqCst), Sam3dStatus::Busy as i32);
    assert_eq!(
        REENTRANT_PROGRESS.load(Ordering::SeqCst),
        Sam3dStatus::Busy as i32
    );
    unsafe { sam3d_session_set_progress(f.session, None, null_mut()) };
    let mut id = 0;
    assert_eq!(
        unsafe { sam3d_session_add_object(f.session, &mut id) },
        Sam3dStatus::Ok
    );
    assert_eq!(id, 1, "the refused call added nothing");
}

static IN_ENCODE: AtomicBool = AtomicBool::new(false);
static MAY_GO_ON: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn hold_in_encode(stage: i32, done: i32, _user: *mut c_void) {
    if stage == 2 && done == 0 {
        IN_ENCODE.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        while !MAY_GO_ON.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Every session call from another thread while a click runs returns BUSY at once (add_object
/// used to block until the click ended), and cancel still works from there.
#[test]
fn calls_from_another_thread_during_a_click_get_busy() {
    let f = Fixture::new();
    unsafe { sam3d_session_set_progress(f.session, Some(hold_in_encode), null_mut()) };
    let s = f.session as usize;
    let clicker = std::thread::spawn(move || {
        let p = [16.0, 16.0, 16.0];
        unsafe { sam3d_session_click(s as *mut Sam3dSession, 0, p.as_ptr(), 0, null_mut()) }
    });
    while !IN_ENCODE.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let statuses = within(20, "session calls during a click", move || {
        let s = s as *mut Sam3dSession;
        let mut id = 0;
        let mut buf = vec![0u8; 32 * 32 * 32];
        let (mut flips, mut keep) = (0, 0);
        let p = [1.0, 1.0, 1.0];
        unsafe {
            [
                sam3d_session_add_object(s, &mut id),
                sam3d_session_click(s, 0, p.as_ptr(), 0, null_mut()),
                sam3d_session_undo(s, 0, null_mut()),
                sam3d_session_redo(s, 0, null_mut()),
                sam3d_session_set_inference(s, 1, 0),
                sam3d_session_get_inference(s, &mut flips, &mut keep),
                sam3d_session_get_mask(s, 0, buf.as_mut_ptr(), buf.len()),
                sam3d_session_set_progress(s, None, null_mut()),
            ]
        }
    });
    for (n, st) in statuses.iter().enumerate() {
        assert_eq!(*st, Sam3dStatus::Busy, "call {n}: {st:?}");
    }
    // bad arguments are reported as such even while the session is busy
    let bad = within(20, "bad calls during a click", move || {
        let s = s as *mut Sam3dSession;
        let mut buf = vec![0u8; 8];
        // SAFETY: a live session; NULL outputs on purpose
        unsafe {
            [
                sam3d_session_add_object(s, null_mut()),
                sam3d_session_get_inference(s, null_mut(), null_mut()),
                sam3d_session_get_mask(s, 0, null_mut(), 8),
                sam3d_session_mask(s, 0, null_mut()),
                sam3d_session_set_inference(s, 1, 7),
                sam3d_session_get_mask(s, 0, buf.as_mut_ptr(), 0),
            ]
        }
    });
    assert_eq!(
        bad,
        [
            Sam3dStatus::NullPointer,
            Sam3dStatus::NullPointer,
            Sam3dStatus::NullPointer,
            Sam3dStatus::NullPointer,
            Sam3dStatus::InvalidArgument,
            Sam3dStatus::Busy,
        ]
    );
    MAY_GO_ON.store(true, Ordering::SeqCst);
    assert_eq!(clicker.join().unwrap(), Sam3dStatus::Ok);
    unsafe { sam3d_session_set_progress(f.session, None, null_mut()) };
    assert_eq!(f.click(), Sam3dStatus::Ok);
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(sam3d_status_name(16)) }.to_str(),
        Ok("SAM3D_STATUS_BUSY")
    );
}

/// The mask inside a box equals that box of the whole mask; boxes outside the volume, wrong sizes,
/// NULL pointers and unknown objects are refused without writing the buffer.
#[test]
fn mask_box_is_the_box_of_the_whole_mask_and_refuses_bad_boxes() {
    let f = Fixture::new();
    let p = [16.0, 16.0, 16.0];
    let mut r = Sam3dResult::default();
    assert_eq!(
        unsafe { sam3d_session_click(f.session, 0, p.as_ptr(), 0, &mut r) },
        Sam3dStatus::Ok
    );
    assert!(r.voxels > 0);
    let mut whole = vec![0u8; 32 * 32 * 32];
    assert_eq!(
        unsafe { sam3d_session_get_mask(f.session, 0, whole.as_mut_ptr(), whole.len()) },
        Sam3dStatus::Ok
    );
    let at = |i: u64, j: u64, k: u64| whole[(i + 32 * (j + 32 * k)) as usize];
    // the changed box, a box straddling the mask's edge, the whole volume, one voxel
    let boxes = [
        (r.changed.lo, r.changed.hi),
        ([0, 5, 13], [20, 31, 32]),
        ([0, 0, 0], [32, 32, 32]),
        ([16, 16, 16], [17, 17, 17]),
    ];
    for (lo, hi) in boxes {
        let n = ((hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])) as usize;
        let mut got = vec![7u8; n];
        let bx = Sam3dBox { lo, hi };
        assert_eq!(
            unsafe { sam3d_session_get_mask_box(f.session, 0, &bx, got.as_mut_ptr(), n) },
            Sam3dStatus::Ok
        );
        let mut want = Vec::with_capacity(n);
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    want.push(at(i, j, k));
                }
            }
        }
        assert_eq!(got, want, "box {lo:?}..{hi:?}");
    }
    let ones = boxes[0].0;
    let mut buf = vec![7u8; 8];
    let bad = [
        (
            Sam3dBox {
                lo: [0, 0, 0],
                hi: [33, 1, 1],
            },
            33,
            Sam3dStatus::OutOfBounds,
        ),
        (
            Sam3dBox {
                lo: [5, 0, 0],
                hi: [4, 1, 1],
            },
            0,
            Sam3dStatus::OutOfBounds,
        ),
        (
            Sam3dBox {
                lo: [0, 0, u64::MAX],
                hi: [1, 1, u64::MAX],
            },
            0,
            Sam3dStatus::OutOfBounds,
        ),
        (
            Sam3dBox {
                lo: [0, 0, 0],
                hi: [2, 2, 2],
            },
            7,
            Sam3dStatus::InvalidArgument,
        ),
        (Sam3dBox { lo: ones, hi: ones }, 0, Sam3dStatus::Ok),
    ];
    for (bx, size, want) in bad {
        let ptr = if size == 0 {
            null_mut()
        } else {
            buf.as_mut_ptr()
        };
        let st = unsafe { sam3d_session_get_mask_box(f.session, 0, &bx, ptr, size.min(8)) };
        assert_eq!(st, want, "{bx:?} size {size}: {}", last_error());
        assert_eq!(
            buf, [7u8; 8],
            "{bx:?}: the buffer is written only on success"
        );
    }
    let one = Sam3dBox {
        lo: [0, 0, 0],
        hi: [2, 2, 2],
    };
    unsafe {
        assert_eq!(
            sam3d_session_get_mask_box(f.session, 0, null(), buf.as_mut_ptr(), 8),
            Sam3dStatus::NullPointer
        );
        assert_eq!(
            sam3d_session_get_mask_box(f.session, 0, &one, null_mut(), 8),
            Sam3dStatus::NullPointer
        );
        assert_eq!(
            sam3d_session_get_mask_box(null_mut(), 0, &one, buf.as_mut_ptr(), 8),
            Sam3dStatus::NullPointer
        );
        assert_eq!(
            sam3d_session_get_mask_box(f.session, 3, &one, buf.as_mut_ptr(), 8),
            Sam3dStatus::InvalidArgument
        );
    }
    assert_eq!(buf, [7u8; 8]);
}
