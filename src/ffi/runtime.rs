//! `Sam3dRuntime`: ONNX Runtime, loaded once per process.

use std::ffi::{c_char, CString};

use super::{arg, check_abi, cstr_path, cstring, free_handle, guard, out, Sam3dStatus};

/// ONNX Runtime, loaded once per process. Thread-safe.
pub struct Sam3dRuntime {
    pub(crate) rt: crate::runtime::Runtime,
    version: CString,
    path: CString,
}

/// Load ONNX Runtime: the first call a host makes. Pass `SAM3D_ABI_VERSION` as `abi_version`: a
/// host built against another ABI is refused here, before it uses any struct.
///
/// A `library_path` is the only file tried: it is loaded, or the call fails naming it. NULL:
/// `SAM3D_ORT_LIBRARY`, `ORT_DYLIB_PATH`, the folder of libsam3d and the system search path are
/// tried, in that order. ONNX Runtime is loaded once per process: after a success, a NULL path or
/// the same file returns that runtime (`sam3d_runtime_path` says which) and another file fails;
/// after a failure, a later call may try other paths.
///
/// Ownership: on success `*out` is a new handle; free it with `sam3d_runtime_free` (ONNX Runtime
/// itself stays loaded). Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_ABI_MISMATCH` (the caller was built against another
/// ABI); `SAM3D_STATUS_NULL_POINTER` (`out_runtime` NULL);
/// `SAM3D_STATUS_INVALID_ARGUMENT` (path not UTF-8); `SAM3D_STATUS_RUNTIME_MISSING` (not found,
/// not ONNX Runtime, older than 1.24, or another ONNX Runtime already loaded: the message lists
/// every path tried); `SAM3D_STATUS_RUNTIME` (loaded, but its environment failed).
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_new(
    abi_version: u32,
    library_path: *const c_char,
    out_runtime: *mut *mut Sam3dRuntime,
) -> Sam3dStatus {
    guard(|| {
        check_abi(abi_version)?;
        // SAFETY: NULL or writable (the documented contract).
        let o = unsafe { out(out_runtime, "out_runtime") }?;
        let p = if library_path.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string (the documented contract).
            Some(unsafe { cstr_path(library_path, "library_path") }?)
        };
        let rt = crate::runtime::load(p.as_deref())?;
        *o = Box::into_raw(Box::new(Sam3dRuntime {
            rt,
            version: cstring(rt.version()),
            path: cstring(&rt.path().to_string_lossy()),
        }));
        Ok(())
    })
}

/// ONNX Runtime's version string, e.g. "1.32.0".
///
/// @return a string owned by the runtime handle, valid until `sam3d_runtime_free`; "" for NULL.
/// Any thread.
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_version(rt: *const Sam3dRuntime) -> *const c_char {
    // SAFETY: NULL or a live runtime handle (the documented contract).
    match unsafe { arg(rt, "runtime") } {
        Ok(r) => r.version.as_ptr(),
        Err(_) => c"".as_ptr(),
    }
}

/// The file ONNX Runtime was loaded from (what a bare name resolved to).
///
/// @return a string owned by the runtime handle, valid until `sam3d_runtime_free`; "" for NULL.
/// Any thread.
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_path(rt: *const Sam3dRuntime) -> *const c_char {
    // SAFETY: NULL or a live runtime handle (the documented contract).
    match unsafe { arg(rt, "runtime") } {
        Ok(r) => r.path.as_ptr(),
        Err(_) => c"".as_ptr(),
    }
}

/// Free a runtime handle (ONNX Runtime itself stays loaded; models opened with it stay usable).
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_runtime_free(rt: *mut Sam3dRuntime) {
    // SAFETY: NULL or a handle from sam3d_runtime_new, freed once (the documented contract).
    unsafe { free_handle(rt) }
}
