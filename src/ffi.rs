//! The C ABI: the only place where `extern "C"` functions live.
//!
//! Rules every export follows: a `Sam3dStatus` return value; outputs written only on success;
//! NULL checked for every pointer; enum-typed arguments taken as `int32_t` and validated (an
//! out-of-range value from C would be undefined behaviour as a Rust enum); the body runs inside
//! `catch_unwind`, so a bug becomes `SAM3D_STATUS_INTERNAL` instead of unwinding into the host; the
//! message of the last failure is kept per thread (`sam3d_last_error`).

// Each export's safety contract (valid pointers, sizes, lifetimes) is stated in its doc comment,
// which cbindgen copies into sam3d.h where C callers read it; a Rust `# Safety` section would repeat it.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::engine::{
    Canceller, Model, ModelOptions, Sam3dCoord, Sam3dDevice, Sam3dResult, Sam3dStage, Segmenter,
};
use crate::error::{err, Result, Sam3dStatus};
use crate::geometry::Geometry;
use crate::volume::{Sam3dDtype, Volume};

/// ABI version of this library: bumped on every incompatible change of the C interface.
pub const SAM3D_ABI_VERSION: u32 = 1;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Run an export's body: panics are caught, errors recorded, the status returned.
fn guard(f: impl FnOnce() -> Result<()>) -> Sam3dStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            Sam3dStatus::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (please report): {what}"));
            Sam3dStatus::Internal
        }
    }
}

/// Drop a handle made by `Box::into_raw`; NULL is a no-op, and a panic in a destructor stays here.
unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(p))));
    }
}

/// A session is used by one call at a time: a second caller (another thread, or the running call's
/// own progress callback) gets `BUSY` at once, never a data race and never a wait that could
/// deadlock. A poisoned lock (a panic caught inside an earlier call) is taken over: the segmenter
/// changes its state only after a step has succeeded.
fn lock_session(s: &Sam3dSession) -> Result<std::sync::MutexGuard<'_, Segmenter>> {
    match s.seg.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(err(
            Sam3dStatus::Busy,
            "the session is in use: another call on it is running",
        )),
    }
}

fn nonnull<T>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() {
        return Err(err(Sam3dStatus::NullPointer, format!("{name} is NULL")));
    }
    Ok(())
}

unsafe fn cstr_path(p: *const c_char, name: &str) -> Result<PathBuf> {
    nonnull(p, name)?;
    let s = CStr::from_ptr(p)
        .to_str()
        .map_err(|_| err(Sam3dStatus::InvalidArgument, format!("{name} is not UTF-8")))?;
    Ok(PathBuf::from(s))
}

// ------------------------------------------------------------------------------------------------
// handles

/// ONNX Runtime, loaded once per process. Thread-safe.
pub struct Sam3dRuntime {
    rt: crate::runtime::Runtime,
    version: CString,
    path: CString,
}

/// A loaded model package. Thread-safe: one model may serve many sessions on many threads.
pub struct Sam3dModel {
    model: Arc<Model>,
    strings: ModelStrings,
}

struct ModelStrings {
    name: CString,
    licence: CString,
    hash: CString,
    provider: CString,
    provider_note: CString,
    description: CString,
}

/// A volume: geometry and voxels (owned, or a caller's buffer borrowed without a copy).
/// Immutable after creation: may be shared by sessions on several threads.
pub struct Sam3dVolume {
    vol: Arc<Volume>,
}

/// Progress callback: stage (`Sam3dStage`), `done` 0 at the start of a stage, 1 at its end.
pub type Sam3dProgressFn = Option<unsafe extern "C" fn(stage: i32, done: i32, user: *mut c_void)>;

/// One volume being segmented with one model. Not thread-safe: use a session from one thread at
/// a time, except `sam3d_session_cancel`, which may be called from any thread.
pub struct Sam3dSession {
    seg: Mutex<Segmenter>,
    canceller: Canceller,
    progress: Mutex<(Sam3dProgressFn, usize)>,
}

/// A mask on a volume's grid (uint8, 0/1, i fastest), with the volume's geometry.
pub struct Sam3dMask {
    geom: Geometry,
    data: Vec<u8>,
}

/// Model options; zero-initialise, then set what you need.
#[repr(C)]
pub struct Sam3dModelOptions {
    /// `Sam3dDevice`: 0 CPU, 1 CUDA, 2 TensorRT (falls back to CPU with the reason reported)
    pub device: i32,
    /// ONNX Runtime intra-op threads, also the engine's resampling workers; 0 = all cores; at most
    /// `SAM3D_MAX_THREADS` (more: `SAM3D_STATUS_INVALID_ARGUMENT`)
    pub threads: u32,
    /// 1 skips the SHA-256 check of the package files (faster open of trusted packages)
    pub skip_hash_check: i32,
}

/// GPU provider settings for `sam3d_model_open_ex`. Zero-initialise, set `struct_size` to
/// `sizeof(Sam3dGpuOptions)`, then what you need; later versions only append fields.
#[repr(C)]
pub struct Sam3dGpuOptions {
    /// `sizeof(Sam3dGpuOptions)` as the caller was compiled
    pub struct_size: u32,
    /// CUDA device ordinal
    pub device_id: i32,
    /// cap on the CUDA memory arena (and TensorRT's workspace) in bytes; 0 = no cap
    pub memory_limit_bytes: u64,
    /// 1 lets TensorRT choose fp16 kernels
    pub trt_fp16: i32,
    /// TensorRT engine and timing cache folder (created when missing); NULL = no cache
    pub trt_cache_dir: *const c_char,
    /// 1 lets the CUDA provider use TF32 tensor cores for fp32 MatMul/Conv (faster, about 1e-3
    /// relative error); 0 = exact fp32, masks as on the CPU. Appended after the first version of
    /// this struct: callers compiled against a header without it pass a smaller `struct_size`, get 0.
    pub cuda_tf32: i32,
}

/// Facts about a model. Strings are owned by the model and valid until `sam3d_model_free`.
#[repr(C)]
pub struct Sam3dModelInfo {
    pub name: *const c_char,
    pub description: *const c_char,
    pub licence: *const c_char,
    /// SHA-256 of the package manifest (which holds the SHA-256 of every graph file)
    pub hash: *const c_char,
    /// execution provider in use: "CPU", "CUDA" or "TensorRT"
    pub provider: *const c_char,
    /// why the provider differs from the one requested ("" when it does not)
    pub provider_note: *const c_char,
    /// crop edge in voxels
    pub crop: u32,
    /// 1 for "array" frame models (results depend on how a file is stored), 0 for "orient"
    pub array_frame: i32,
}

/// Geometry (ITK convention): LPS point = origin + direction * diag(spacing) * index.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Sam3dGeometry {
    /// voxels along i, j, k (i fastest)
    pub dims: [u64; 3],
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    /// row-major 3x3: `direction[3*r + c]` = LPS component r of index axis c
    pub direction: [f64; 9],
}

/// A caller's voxel buffer, borrowed without a copy.
#[repr(C)]
pub struct Sam3dBufferDesc {
    pub data: *const c_void,
    /// bytes readable from `data`
    pub size_bytes: usize,
    /// `Sam3dDtype`
    pub dtype: i32,
    /// positive byte strides of i, j, k (dense ITK/VTK buffers: esize, esize*nx, esize*nx*ny); no
    /// two voxels may share bytes, and every voxel must lie within `size_bytes`
    pub strides: [i64; 3],
    pub geometry: Sam3dGeometry,
}

fn geometry_from_c(g: &Sam3dGeometry) -> Result<Geometry> {
    let d = &g.direction;
    let dims = g.dims.map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    Geometry::new(
        dims,
        g.spacing,
        g.origin,
        [[d[0], d[1], d[2]], [d[3], d[4], d[5]], [d[6], d[7], d[8]]],
    )
}

fn geometry_to_c(g: &Geometry) -> Sam3dGeometry {
    let d = &g.direction;
    Sam3dGeometry {
        dims: g.dims.map(|v| v as u64),
        spacing: g.spacing,
        origin: g.origin,
        direction: [
            d[0][0], d[0][1], d[0][2], d[1][0], d[1][1], d[1][2], d[2][0], d[2][1], d[2][2],
        ],
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// library

/// ABI version the library was built with; compare with `SAM3D_ABI_VERSION` from the header.
#[no_mangle]
pub extern "C" fn sam3d_abi_version() -> u32 {
    SAM3D_ABI_VERSION
}

/// Library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn sam3d_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Message of the last failed call on this thread ("" after a success). Valid until the next
/// libsam3d call on this thread.
#[no_mangle]
pub extern "C" fn sam3d_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Name of a status value, e.g. "SAM3D_STATUS_BAD_VOLUME" (static string; "?" if unknown).
#[no_mangle]
pub extern "C" fn sam3d_status_name(status: i32) -> *const c_char {
    static NAMES: once_cell::sync::Lazy<Vec<(i32, CString)>> = once_cell::sync::Lazy::new(|| {
        Sam3dStatus::ALL
            .iter()
            .map(|s| (*s as i32, cstring(s.name())))
            .collect()
    });
    NAMES
        .iter()
        .find(|(v, _)| *v == status)
        .map(|(_, n)| n.as_ptr())
        .unwrap_or(c"?".as_ptr())
}

/// Most ONNX Runtime threads a model may ask for (`Sam3dModelOptions.threads`).
pub const SAM3D_MAX_THREADS: u32 = 256;

/// Default memory budget in bytes (4 GiB); see `sam3d_set_memory_budget`.
pub const SAM3D_DEFAULT_MEMORY_BUDGET: u64 = 4294967296;

// literals above for cbindgen, which does not evaluate paths; the engine's values are the same
const _: () = assert!(SAM3D_MAX_THREADS == crate::limits::MAX_THREADS);
const _: () = assert!(SAM3D_DEFAULT_MEMORY_BUDGET == crate::limits::DEFAULT_MEMORY_BUDGET);

/// Set the process-wide memory budget: the most bytes libsam3d allocates for one whole-volume
/// array (a file's voxels decoded to float32; a mask copied out of a session; what one click's
/// paste-back needs, checked by `sam3d_session_new`). A volume file or a request that needs more
/// is refused with `SAM3D_STATUS_TOO_LARGE` before anything is allocated.
/// 0 restores the default (`SAM3D_DEFAULT_MEMORY_BUDGET`). Thread-safe; applies to later calls.
#[no_mangle]
pub extern "C" fn sam3d_set_memory_budget(bytes: u64) {
    crate::limits::set_memory_budget(bytes);
}

/// The memory budget in force, in bytes (see `sam3d_set_memory_budget`).
#[no_mangle]
pub extern "C" fn sam3d_memory_budget() -> u64 {
    crate::limits::memory_budget()
}

// ------------------------------------------------------------------------------------------------
// runtime

/// Load ONNX Runtime. A `library_path` is the only file tried: it is loaded, or the call fails with
/// `SAM3D_STATUS_RUNTIME_MISSING` naming it. NULL: `SAM3D_ORT_LIBRARY`, `ORT_DYLIB_PATH`, the
/// directory of libsam3d and the system search path are tried, in that order. ONNX Runtime is
/// loaded once per process: after a success, a NULL path or the same file returns that runtime
/// (`sam3d_runtime_path` says which), another file fails with `SAM3D_STATUS_RUNTIME_MISSING`;
/// after a failure, a later call may try other paths.
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_new(
    library_path: *const c_char,
    out: *mut *mut Sam3dRuntime,
) -> Sam3dStatus {
    guard(|| {
        nonnull(out, "out")?;
        let p = if library_path.is_null() {
            None
        } else {
            Some(cstr_path(library_path, "library_path")?)
        };
        let rt = crate::runtime::load(p.as_deref())?;
        let h = Sam3dRuntime {
            rt,
            version: cstring(rt.version()),
            path: cstring(&rt.path().to_string_lossy()),
        };
        *out = Box::into_raw(Box::new(h));
        Ok(())
    })
}

/// ONNX Runtime's version string, e.g. "1.32.0" (owned by the runtime handle).
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_version(rt: *const Sam3dRuntime) -> *const c_char {
    if rt.is_null() {
        c"".as_ptr()
    } else {
        (*rt).version.as_ptr()
    }
}

/// Path ONNX Runtime was loaded from (owned by the runtime handle).
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_path(rt: *const Sam3dRuntime) -> *const c_char {
    if rt.is_null() {
        c"".as_ptr()
    } else {
        (*rt).path.as_ptr()
    }
}

/// Free a runtime handle (ONNX Runtime itself stays loaded). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_free(rt: *mut Sam3dRuntime) {
    free_handle(rt);
}

// ------------------------------------------------------------------------------------------------
// model

/// Open a model package directory. `options` may be NULL (CPU, all cores, hashes checked).
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_open(
    rt: *const Sam3dRuntime,
    package_dir: *const c_char,
    options: *const Sam3dModelOptions,
    out: *mut *mut Sam3dModel,
) -> Sam3dStatus {
    sam3d_model_open_ex(rt, package_dir, options, std::ptr::null(), out)
}

/// `sam3d_model_open` with GPU provider settings (`gpu` may be NULL: defaults). The settings are
/// checked on every machine; on a machine without the requested provider the model runs on the
/// CPU and `Sam3dModelInfo.provider_note` says why.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_open_ex(
    rt: *const Sam3dRuntime,
    package_dir: *const c_char,
    options: *const Sam3dModelOptions,
    gpu: *const Sam3dGpuOptions,
    out: *mut *mut Sam3dModel,
) -> Sam3dStatus {
    guard(|| {
        nonnull(rt, "runtime")?;
        nonnull(out, "out")?;
        let dir = cstr_path(package_dir, "package_dir")?;
        let mut opts = ModelOptions::default();
        if !options.is_null() {
            let o = &*options;
            opts.device = match o.device {
                0 => Sam3dDevice::Cpu,
                1 => Sam3dDevice::Cuda,
                2 => Sam3dDevice::TensorRt,
                d => {
                    return Err(err(
                        Sam3dStatus::InvalidArgument,
                        format!("device {d} is not a Sam3dDevice"),
                    ))
                }
            };
            opts.threads = o.threads as usize;
            opts.verify_hashes = o.skip_hash_check == 0;
        }
        if !gpu.is_null() {
            let g = &*gpu;
            // the first version of the struct ended after trt_cache_dir; fields appended since
            // are read only when the caller's struct_size covers them
            let first = std::mem::offset_of!(Sam3dGpuOptions, cuda_tf32);
            let size = g.struct_size as usize;
            if size < first {
                return Err(err(
                    Sam3dStatus::AbiMismatch,
                    format!(
                        "Sam3dGpuOptions.struct_size is {size}, at least {first} expected (this library's is {})",
                        std::mem::size_of::<Sam3dGpuOptions>()
                    ),
                ));
            }
            let covers = |offset: usize, len: usize| size >= offset + len;
            if covers(std::mem::offset_of!(Sam3dGpuOptions, cuda_tf32), 4) {
                opts.gpu.tf32 = g.cuda_tf32 != 0;
            }
            opts.gpu.device_id = g.device_id;
            opts.gpu.memory_limit = usize::try_from(g.memory_limit_bytes).unwrap_or(usize::MAX);
            opts.gpu.fp16 = g.trt_fp16 != 0;
            if !g.trt_cache_dir.is_null() {
                opts.gpu.trt_cache_dir = Some(cstr_path(g.trt_cache_dir, "trt_cache_dir")?);
            }
        }
        let model = Model::open(&(*rt).rt, &dir, &opts)?;
        let m = model.manifest();
        let strings = ModelStrings {
            name: cstring(&m.name),
            licence: cstring(&m.licence),
            hash: cstring(&model.package.hash),
            provider: cstring(&model.provider),
            provider_note: cstring(&model.provider_note),
            description: cstring(&m.description),
        };
        *out = Box::into_raw(Box::new(Sam3dModel {
            model: Arc::new(model),
            strings,
        }));
        Ok(())
    })
}

/// Facts about a model (strings owned by the model).
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_info(
    model: *const Sam3dModel,
    out: *mut Sam3dModelInfo,
) -> Sam3dStatus {
    guard(|| {
        nonnull(model, "model")?;
        nonnull(out, "out")?;
        let m = &*model;
        let s = &m.strings;
        *out = Sam3dModelInfo {
            name: s.name.as_ptr(),
            description: s.description.as_ptr(),
            licence: s.licence.as_ptr(),
            hash: s.hash.as_ptr(),
            provider: s.provider.as_ptr(),
            provider_note: s.provider_note.as_ptr(),
            crop: m.model.crop as u32,
            array_frame: matches!(m.model.frame, crate::manifest::FrameMode::Array(_)) as i32,
        };
        Ok(())
    })
}

/// Run one click's work on a small synthetic volume, so that the user's first click does not pay
/// for ONNX Runtime's first runs (memory the process touches for the first time; on CUDA, kernel
/// selection). Blocks for about one click with a new region; call it from a worker thread right
/// after opening the model. A click on any session of this model, or `sam3d_model_cancel_warm_up`,
/// stops it: it then returns `SAM3D_STATUS_CANCELLED` (nothing is lost; the click goes ahead).
/// A second warm-up of the same model while one runs: `SAM3D_STATUS_INVALID_ARGUMENT`. Free the
/// model only after this call has returned.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_warm_up(model: *const Sam3dModel) -> Sam3dStatus {
    guard(|| {
        nonnull(model, "model")?;
        let m = (*model).model.clone();
        m.warm_up()
    })
}

/// Stop the model's running warm-up, if any (it returns `SAM3D_STATUS_CANCELLED`); callable from
/// any thread. Without a running warm-up this does nothing.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_cancel_warm_up(model: *const Sam3dModel) -> Sam3dStatus {
    guard(|| {
        nonnull(model, "model")?;
        (*model).model.cancel_warm_up();
        Ok(())
    })
}

/// Free a model. Sessions made from it keep it alive until they are freed. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_free(model: *mut Sam3dModel) {
    free_handle(model);
}

// ------------------------------------------------------------------------------------------------
// volume

/// Read a NIfTI-1 image: `.nii`, `.nii.gz`, or a `.hdr`/`.img` pair given by either name
/// (uint8/int8/int16/uint16/int32/uint32/int64/uint64/float32/float64, scl_slope/scl_inter applied).
/// Only regular files are opened. Statuses: `IO` (missing, unreadable, not a regular file),
/// `BAD_VOLUME` (the message names the field and its value: dims, pixdim, vox_offset, datatype,
/// magic; a corrupt or truncated gzip stream), `TOO_LARGE` (beyond 2^32 voxels or the memory
/// budget, refused before allocating; see `sam3d_set_memory_budget`).
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_read_nifti(
    path: *const c_char,
    out: *mut *mut Sam3dVolume,
) -> Sam3dStatus {
    guard(|| {
        nonnull(out, "out")?;
        let p = cstr_path(path, "path")?;
        let vol = crate::nifti_io::read(&p)?;
        *out = Box::into_raw(Box::new(Sam3dVolume { vol: Arc::new(vol) }));
        Ok(())
    })
}

/// Borrow a caller's buffer (ITK, VTK, numpy) without a copy. The buffer must stay valid and
/// unchanged until the volume and every session using it are freed.
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_from_buffer(
    desc: *const Sam3dBufferDesc,
    out: *mut *mut Sam3dVolume,
) -> Sam3dStatus {
    guard(|| {
        nonnull(desc, "desc")?;
        nonnull(out, "out")?;
        let d = &*desc;
        nonnull(d.data, "desc->data")?;
        let dtype = Sam3dDtype::from_raw(d.dtype).ok_or_else(|| {
            err(
                Sam3dStatus::InvalidArgument,
                format!("dtype {} is not a Sam3dDtype", d.dtype),
            )
        })?;
        let geom = geometry_from_c(&d.geometry)?;
        let strides = d.strides.map(|s| s as isize);
        let vol = Volume::borrowed(geom, d.data as *const u8, d.size_bytes, dtype, strides)?;
        *out = Box::into_raw(Box::new(Sam3dVolume { vol: Arc::new(vol) }));
        Ok(())
    })
}

/// The volume's geometry.
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_geometry(
    vol: *const Sam3dVolume,
    out: *mut Sam3dGeometry,
) -> Sam3dStatus {
    guard(|| {
        nonnull(vol, "volume")?;
        nonnull(out, "out")?;
        let v = &*vol;
        *out = geometry_to_c(&v.vol.geom);
        Ok(())
    })
}

/// Free a volume. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_free(vol: *mut Sam3dVolume) {
    free_handle(vol);
}

// ------------------------------------------------------------------------------------------------
// session

/// Start segmenting `volume` with `model`. Pass `SAM3D_ABI_VERSION` as `abi_version`: a caller built
/// against another ABI gets `SAM3D_STATUS_ABI_MISMATCH`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_new(
    model: *const Sam3dModel,
    volume: *const Sam3dVolume,
    abi_version: u32,
    out: *mut *mut Sam3dSession,
) -> Sam3dStatus {
    guard(|| {
        if abi_version != SAM3D_ABI_VERSION {
            return Err(err(Sam3dStatus::AbiMismatch, format!(
                "the caller was built for libsam3d ABI {abi_version}, this library has ABI {SAM3D_ABI_VERSION}")));
        }
        nonnull(model, "model")?;
        nonnull(volume, "volume")?;
        nonnull(out, "out")?;
        let seg = Segmenter::new((*model).model.clone(), (*volume).vol.clone())?;
        let canceller = seg.canceller();
        *out = Box::into_raw(Box::new(Sam3dSession {
            seg: Mutex::new(seg),
            canceller,
            progress: Mutex::new((None, 0)),
        }));
        Ok(())
    })
}

/// Set (or clear, with NULL) the progress callback, called on the session's thread at the start
/// and end of each stage (load, resample, encode, decode, paste-back). ONNX Runtime reports no
/// progress within a run, so there are no percentages within a stage. The callback must return
/// normally: it must not throw a C++ exception or `longjmp` out (that would abort the process or
/// skip the library's clean-up); to stop the interaction, call `sam3d_session_cancel` and return
/// (the C++ wrapper's `std::function` overload does this for exceptions). Other calls on the same
/// session from inside the callback return `SAM3D_STATUS_BUSY`, except `sam3d_session_cancel`;
/// never free the session from its callback.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_progress(
    s: *mut Sam3dSession,
    callback: Sam3dProgressFn,
    user: *mut c_void,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        // under the session's lock: a running call keeps the callback it started with, and the
        // host may free the old callback's data once this returns
        let _busy = lock_session(&*s)?;
        *(*s).progress.lock().unwrap_or_else(|p| p.into_inner()) = (callback, user as usize);
        Ok(())
    })
}

/// Add an object (a structure to segment); its id is written to `out_id`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_add_object(
    s: *mut Sam3dSession,
    out_id: *mut u32,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        nonnull(out_id, "out_id")?;
        let id = lock_session(&*s)?.add_object();
        *out_id = id as u32;
        Ok(())
    })
}

unsafe fn with_session(
    s: *mut Sam3dSession,
    out: *mut Sam3dResult,
    f: impl FnOnce(&mut Segmenter, &mut dyn FnMut(Sam3dStage, bool)) -> Result<Sam3dResult>,
) -> Result<()> {
    nonnull(s, "session")?;
    let sess = &*s;
    // the callback is read once the session is locked: it cannot change while the call runs
    let mut seg = lock_session(sess)?;
    let (cb, user) = *sess.progress.lock().unwrap_or_else(|p| p.into_inner());
    let mut progress = |stage: Sam3dStage, done: bool| {
        if let Some(cb) = cb {
            cb(stage as i32, done as i32, user as *mut c_void);
        }
    };
    let r = f(&mut seg, &mut progress)?;
    if !out.is_null() {
        *out = r;
    }
    Ok(())
}

/// Add a positive click to `object` and recompute its mask. `point` holds 3 coordinates in
/// `coord` (`Sam3dCoord`: 0 voxel index IJK, 1 LPS mm, 2 RAS mm). `out` (may be NULL) receives the
/// mask's voxel count, the changed box and whether the encoder ran.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_click(
    s: *mut Sam3dSession,
    object: u32,
    point: *const f64,
    coord: i32,
    out: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| {
        nonnull(point, "point")?;
        let c = match coord {
            0 => Sam3dCoord::Ijk,
            1 => Sam3dCoord::Lps,
            2 => Sam3dCoord::Ras,
            v => {
                return Err(err(
                    Sam3dStatus::InvalidArgument,
                    format!("coord {v} is not a Sam3dCoord"),
                ))
            }
        };
        let p = [*point, *point.add(1), *point.add(2)];
        with_session(s, out, |seg, progress| {
            seg.click(object as usize, p, c, progress)
        })
    })
}

/// Undo the last click of `object` (several levels).
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_undo(
    s: *mut Sam3dSession,
    object: u32,
    out: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| with_session(s, out, |seg, progress| seg.undo(object as usize, progress)))
}

/// Redo the last undone click of `object`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_redo(
    s: *mut Sam3dSession,
    object: u32,
    out: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| with_session(s, out, |seg, progress| seg.redo(object as usize, progress)))
}

/// Set the session's inference refinements for its next interactions (until then: the package's
/// manifest, `inference` block): `test_time_flips` crop flips averaged per click (1 = none, 2, 4 or
/// 8; each costs one more encoder and decoder run), `keep_clicked_components` 1 keeps only the mask's
/// parts (26-connected) that contain a click, 0 keeps all. Masks already computed stay as they are; a
/// new flip count drops the cached region, so the next click encodes. Other values:
/// `SAM3D_STATUS_INVALID_ARGUMENT`, nothing changed.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_inference(
    s: *mut Sam3dSession,
    test_time_flips: u32,
    keep_clicked_components: i32,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        if keep_clicked_components != 0 && keep_clicked_components != 1 {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("keep_clicked_components must be 0 or 1, not {keep_clicked_components}"),
            ));
        }
        let mut seg = lock_session(&*s)?;
        seg.set_inference(test_time_flips, keep_clicked_components == 1)
    })
}

/// The session's inference refinements in force (see `sam3d_session_set_inference`).
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_inference(
    s: *const Sam3dSession,
    test_time_flips: *mut u32,
    keep_clicked_components: *mut i32,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        nonnull(test_time_flips, "test_time_flips")?;
        nonnull(keep_clicked_components, "keep_clicked_components")?;
        let seg = lock_session(&*s)?;
        let (f, k) = seg.inference();
        *test_time_flips = f;
        *keep_clicked_components = k as i32;
        Ok(())
    })
}

/// Cancel the session's running interaction; callable from any thread (a cancel while none runs is
/// dropped when the next interaction starts). The interrupted
/// call returns `SAM3D_STATUS_CANCELLED` and leaves the object's mask as it was.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_cancel(s: *const Sam3dSession) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        (*s).canceller.cancel();
        Ok(())
    })
}

/// Write `object`'s mask into the caller's buffer: `size` bytes = the volume's voxel count, uint8
/// 0/1, i fastest.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_mask(
    s: *mut Sam3dSession,
    object: u32,
    buffer: *mut u8,
    size: usize,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        nonnull(buffer, "buffer")?;
        let seg = lock_session(&*s)?;
        let n = seg.volume().geom.voxel_count()?;
        if size != n {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("buffer holds {size} bytes, the volume has {n} voxels"),
            ));
        }
        // written in place: no whole-volume copy (write_mask checks the object before writing)
        seg.write_mask(object as usize, std::slice::from_raw_parts_mut(buffer, n))
    })
}

/// `object`'s mask as a mask handle (with the volume's geometry).
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_mask(
    s: *mut Sam3dSession,
    object: u32,
    out: *mut *mut Sam3dMask,
) -> Sam3dStatus {
    guard(|| {
        nonnull(s, "session")?;
        nonnull(out, "out")?;
        let seg = lock_session(&*s)?;
        let data = seg.mask_vec(object as usize)?;
        *out = Box::into_raw(Box::new(Sam3dMask {
            geom: seg.volume().geom,
            data,
        }));
        Ok(())
    })
}

/// Free a session. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_free(s: *mut Sam3dSession) {
    free_handle(s);
}

// ------------------------------------------------------------------------------------------------
// mask

/// The mask's voxels (owned by the mask) and their count.
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_data(
    mask: *const Sam3dMask,
    data: *mut *const u8,
    size: *mut usize,
) -> Sam3dStatus {
    guard(|| {
        nonnull(mask, "mask")?;
        nonnull(data, "data")?;
        nonnull(size, "size")?;
        *data = (*mask).data.as_ptr();
        *size = (*mask).data.len();
        Ok(())
    })
}

/// Write the mask as a uint8 NIfTI file (.nii or .nii.gz) with the volume's geometry; the file
/// appears complete or not at all.
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_write_nifti(
    mask: *const Sam3dMask,
    path: *const c_char,
) -> Sam3dStatus {
    guard(|| {
        nonnull(mask, "mask")?;
        let p = cstr_path(path, "path")?;
        crate::nifti_io::write_mask(&p, &(*mask).geom, &(*mask).data)
    })
}

/// Free a mask. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_free(mask: *mut Sam3dMask) {
    free_handle(mask);
}
