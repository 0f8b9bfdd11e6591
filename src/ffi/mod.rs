//! The C ABI: the only place where `extern "C"` functions and C-visible types live. `include/sam3d.h`
//! is generated from this folder by cbindgen (build.rs; `make header`), doc comments included: they
//! are the C reference, so each export says what it does, who owns what it returns, from which
//! threads it may be called, and which statuses it returns.
//!
//! Rules every export follows: a `Sam3dStatus` return value; outputs written only on success;
//! NULL checked for every pointer; enum-typed arguments taken as `int32_t` and validated (an
//! out-of-range value from C would be undefined behaviour as a Rust enum); the body runs inside
//! `catch_unwind`, so a bug becomes `SAM3D_STATUS_INTERNAL` instead of unwinding into the host; the
//! message of the last failure is kept per thread (`sam3d_last_error`).
//!
//! Files: `types` (the C-visible structs and enums, and their decoding into the engine's types),
//! then one file per handle: `runtime`, `model`, `volume`, `session`, `mask`.

// Each export's safety contract (valid pointers, sizes, lifetimes) is stated in its doc comment,
// which cbindgen copies into sam3d.h where C callers read it; a Rust `# Safety` section would repeat it.
#![allow(clippy::missing_safety_doc)]

mod mask;
mod model;
mod runtime;
mod session;
mod types;
mod volume;

pub use mask::*;
pub use model::*;
pub use runtime::*;
pub use session::*;
pub use types::*;
pub use volume::*;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

pub use crate::error::Sam3dStatus;
use crate::error::{err, Error, Result};

/// ABI version of this library: bumped on every incompatible change of the C interface once a
/// version has been released (until the first release, version 1 may still change; CHANGELOG.md).
pub const SAM3D_ABI_VERSION: u32 = 1;

/// Most ONNX Runtime threads a model may ask for (`Sam3dModelOptions.threads`).
pub const SAM3D_MAX_THREADS: u32 = 256;

/// `sam3d_model_prompts` bit: positive clicks (every package).
pub const SAM3D_PROMPT_POSITIVE: u32 = 1;
/// `sam3d_model_prompts` bit: negative clicks (packages trained with them).
pub const SAM3D_PROMPT_NEGATIVE: u32 = 2;
/// `sam3d_model_prompts` bit: boxes (`sam3d_session_set_box`; placed by the engine, every package).
pub const SAM3D_PROMPT_BOX: u32 = 4;
/// `sam3d_model_prompts` bit: a starting segment (`sam3d_session_set_mask`; every package).
pub const SAM3D_PROMPT_MASK: u32 = 8;

/// Default memory budget in bytes (4 GiB); see `sam3d_set_memory_budget`.
pub const SAM3D_DEFAULT_MEMORY_BUDGET: u64 = 4294967296;

// literals above for cbindgen, which does not evaluate paths; the engine's values are the same
const _: () = assert!(SAM3D_MAX_THREADS == crate::limits::MAX_THREADS);
const _: () = assert!(SAM3D_DEFAULT_MEMORY_BUDGET == crate::limits::DEFAULT_MEMORY_BUDGET);

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = cstring(msg));
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
///
/// # Safety
/// `p` is NULL or a pointer this library returned from `Box::into_raw`, not yet freed.
unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from `Box::into_raw` and is freed once (the caller's contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

fn null(name: &str) -> Error {
    err(Sam3dStatus::NullPointer, format!("{name} is NULL"))
}

/// `p` as a reference for the duration of the call, or `NULL_POINTER` naming the argument.
///
/// # Safety
/// `p` is NULL or points to a valid `T` that outlives the call (the export's documented contract).
unsafe fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: `as_ref` handles NULL; otherwise validity is the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// An output argument, or `NULL_POINTER` naming it. Written only once the call has succeeded.
///
/// # Safety
/// `p` is NULL or points to a `T` the caller lets this call write.
unsafe fn out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: `as_mut` handles NULL; otherwise writability is the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

/// A NUL-terminated UTF-8 path from C.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn cstr_path(p: *const c_char, name: &str) -> Result<PathBuf> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL and NUL-terminated (the caller's contract).
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| err(Sam3dStatus::InvalidArgument, format!("{name} is not UTF-8")))?;
    Ok(PathBuf::from(s))
}

/// Refuse a caller built against another ABI version.
fn check_abi(abi_version: u32) -> Result<()> {
    if abi_version != SAM3D_ABI_VERSION {
        return Err(err(
            Sam3dStatus::AbiMismatch,
            format!(
                "the caller was built for libsam3d ABI {abi_version}, this library has ABI \
                 {SAM3D_ABI_VERSION}"
            ),
        ));
    }
    Ok(())
}

/// A C string of `s` (an interior NUL, which C cannot hold, becomes a space).
fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// library

/// ABI version the library was built with; compare with `SAM3D_ABI_VERSION` from the header.
///
/// @return the library's ABI version. Any thread.
#[no_mangle]
pub extern "C" fn sam3d_abi_version() -> u32 {
    SAM3D_ABI_VERSION
}

/// Library version, e.g. "0.1.0".
///
/// @return a static string (never freed). Any thread.
#[no_mangle]
pub extern "C" fn sam3d_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Message of the last failed call on this thread ("" after a success).
///
/// @return a string owned by the library, valid until the next libsam3d call on this thread.
#[no_mangle]
pub extern "C" fn sam3d_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Name of a status value, e.g. "SAM3D_STATUS_BAD_VOLUME".
///
/// @return a static string (never freed); "?" for a value that is no status. Any thread.
#[no_mangle]
pub extern "C" fn sam3d_status_name(status: i32) -> *const c_char {
    static NAMES: once_cell::sync::Lazy<Vec<(i32, CString)>> = once_cell::sync::Lazy::new(|| {
        crate::error::ALL_STATUSES
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

/// Set the process-wide memory budget: the most bytes libsam3d allocates for one whole-volume
/// array (a file's voxels decoded to float32; a mask copied out of a session; what one click's
/// paste-back needs, checked by `sam3d_session_new`). A volume file or a request that needs more
/// is refused with `SAM3D_STATUS_TOO_LARGE` before anything is allocated. 0 restores the default
/// (`SAM3D_DEFAULT_MEMORY_BUDGET`). Any thread; applies to calls that start afterwards.
#[no_mangle]
pub extern "C" fn sam3d_set_memory_budget(bytes: u64) {
    crate::limits::set_memory_budget(bytes);
}

/// The memory budget in force (see `sam3d_set_memory_budget`).
///
/// @return the budget in bytes. Any thread.
#[no_mangle]
pub extern "C" fn sam3d_memory_budget() -> u64 {
    crate::limits::memory_budget()
}
