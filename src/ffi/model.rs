//! `Sam3dModel`: a loaded model package, shared by any number of sessions and threads.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use super::types::model_options_from_c;
use super::{
    arg, cstr_path, cstring, free_handle, guard, out, Sam3dGpuOptions, Sam3dModelInfo,
    Sam3dModelOptions, Sam3dRuntime, Sam3dStatus,
};
use crate::engine::Model;

/// A loaded model package. Thread-safe: one model may serve many sessions on many threads.
pub struct Sam3dModel {
    pub(crate) model: Arc<Model>,
    strings: ModelStrings,
}

/// The strings `Sam3dModelInfo` points to, owned by the model.
struct ModelStrings {
    name: CString,
    licence: CString,
    hash: CString,
    provider: CString,
    provider_note: CString,
    description: CString,
}

/// Open a model package folder on the CPU or a GPU (`options` may be NULL: CPU, all cores, hashes
/// checked). Same as `sam3d_model_open_ex` without GPU settings.
///
/// @return as `sam3d_model_open_ex`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_open(
    rt: *const Sam3dRuntime,
    package_dir: *const c_char,
    options: *const Sam3dModelOptions,
    out_model: *mut *mut Sam3dModel,
) -> Sam3dStatus {
    // SAFETY: the same contract as sam3d_model_open_ex, with no GPU settings.
    unsafe { sam3d_model_open_ex(rt, package_dir, options, std::ptr::null(), out_model) }
}

/// Open a model package folder: the manifest is validated, every file checked to lie inside the
/// folder and (unless `skip_hash_check`) against its SHA-256, both graphs loaded into ONNX Runtime
/// and their shapes checked against the manifest. `options` and `gpu` may be NULL (defaults). The
/// GPU settings are checked on every machine; without the requested provider the model runs on
/// the CPU and `Sam3dModelInfo.provider_note` says why.
///
/// Ownership: on success `*out_model` is a new model; free it with `sam3d_model_free`. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (device
/// not a `Sam3dDevice`, threads beyond `SAM3D_MAX_THREADS`, a negative GPU device, a path not
/// UTF-8); `SAM3D_STATUS_ABI_MISMATCH` (a `struct_size` too small); `SAM3D_STATUS_BAD_MODEL`
/// (manifest or graph missing or malformed, a file outside the folder, shapes that disagree);
/// `SAM3D_STATUS_HASH_MISMATCH`; `SAM3D_STATUS_UNSUPPORTED_FORMAT` (a package format version this
/// library does not read); `SAM3D_STATUS_IO` (an uncreatable TensorRT cache folder);
/// `SAM3D_STATUS_RUNTIME` (ONNX Runtime failed).
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_open_ex(
    rt: *const Sam3dRuntime,
    package_dir: *const c_char,
    options: *const Sam3dModelOptions,
    gpu: *const Sam3dGpuOptions,
    out_model: *mut *mut Sam3dModel,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: each pointer is NULL or what the documented contract says it is.
        let (rt, o, dir, opts) = unsafe {
            (
                arg(rt, "runtime")?,
                out(out_model, "out_model")?,
                cstr_path(package_dir, "package_dir")?,
                model_options_from_c(options, gpu)?,
            )
        };
        let model = Model::open(&rt.rt, &dir, &opts)?;
        let m = model.manifest();
        let strings = ModelStrings {
            name: cstring(&m.name),
            licence: cstring(&m.licence),
            hash: cstring(&model.package.hash),
            provider: cstring(&model.provider),
            provider_note: cstring(&model.provider_note),
            description: cstring(&m.description),
        };
        *o = Box::into_raw(Box::new(Sam3dModel {
            model: Arc::new(model),
            strings,
        }));
        Ok(())
    })
}

/// Facts about a model.
///
/// Ownership: the strings are owned by the model, valid until `sam3d_model_free`. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_info(
    model: *const Sam3dModel,
    out_info: *mut Sam3dModelInfo,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live model handle; NULL or writable (the documented contract).
        let (m, o) = unsafe { (arg(model, "model")?, out(out_info, "out_info")?) };
        let s = &m.strings;
        *o = Sam3dModelInfo {
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

/// The prompts the model accepts, as `SAM3D_PROMPT_*` bits: positive clicks, boxes and a starting
/// segment always; negative clicks when the package was trained with them (its manifest says so).
/// A negative click on a package without `SAM3D_PROMPT_NEGATIVE` returns `SAM3D_STATUS_UNSUPPORTED`.
/// Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_prompts(
    model: *const Sam3dModel,
    out_prompts: *mut u32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live model handle; NULL or writable (the documented contract).
        let (m, o) = unsafe { (arg(model, "model")?, out(out_prompts, "out_prompts")?) };
        let neg = m.model.manifest().prompts.negative_points;
        *o = super::SAM3D_PROMPT_POSITIVE
            | super::SAM3D_PROMPT_BOX
            | super::SAM3D_PROMPT_MASK
            | if neg { super::SAM3D_PROMPT_NEGATIVE } else { 0 };
        Ok(())
    })
}

/// Run one click's work on a small synthetic volume, so that the user's first click does not pay
/// for ONNX Runtime's first runs (memory the process touches for the first time; on CUDA, kernel
/// selection). Blocks for about one click with a new region; call it from a worker thread right
/// after opening the model. A click on any session of this model, or `sam3d_model_cancel_warm_up`,
/// stops it (nothing is lost; the click goes ahead). Free the model only after this call has
/// returned.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_CANCELLED` (stopped);
/// `SAM3D_STATUS_INVALID_ARGUMENT` (a warm-up of this model is already running);
/// `SAM3D_STATUS_RUNTIME`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_warm_up(model: *const Sam3dModel) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live model handle (the documented contract).
        let m = unsafe { arg(model, "model") }?;
        m.model.clone().warm_up()
    })
}

/// Stop the model's running warm-up, if any (it returns `SAM3D_STATUS_CANCELLED`); without one this
/// does nothing. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_cancel_warm_up(model: *const Sam3dModel) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live model handle (the documented contract).
        unsafe { arg(model, "model") }?.model.cancel_warm_up();
        Ok(())
    })
}

/// Free a model. Sessions made from it keep it alive until they are freed. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_model_free(model: *mut Sam3dModel) {
    // SAFETY: NULL or a handle from sam3d_model_open(_ex), freed once (the documented contract).
    unsafe { free_handle(model) }
}
