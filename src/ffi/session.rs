//! `Sam3dSession`: one volume segmented with one model; objects, clicks, undo and redo.

use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::types::{coord_from_c, label_from_c, result_to_c, stage_to_c};
use super::{
    arg, check_abi, free_handle, guard, out, Sam3dBox, Sam3dMask, Sam3dModel, Sam3dProgressFn,
    Sam3dResult, Sam3dStatus, Sam3dVolume,
};
use crate::engine::{Canceller, Interaction, Segmenter, Stage};
use crate::error::{err, Result};

/// One volume being segmented with one model. One call at a time: a second call while one runs
/// gets `SAM3D_STATUS_BUSY`, except `sam3d_session_cancel`, which any thread may call at any time.
pub struct Sam3dSession {
    seg: Mutex<Segmenter>,
    canceller: Canceller,
    progress: Mutex<(Sam3dProgressFn, usize)>,
}

/// A session is used by one call at a time: a second caller (another thread, or the running call's
/// own progress callback) gets `BUSY` at once, never a data race and never a wait that could
/// deadlock. A poisoned lock (a panic caught inside an earlier call) is taken over: the segmenter
/// changes its state only after a step has succeeded.
fn lock(s: &Sam3dSession) -> Result<MutexGuard<'_, Segmenter>> {
    match s.seg.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(err(
            Sam3dStatus::Busy,
            "the session is in use: another call on it is running",
        )),
    }
}

/// The session behind a handle, locked for this call.
///
/// # Safety
/// `s` is NULL or a live session handle.
unsafe fn locked<'a>(
    s: *const Sam3dSession,
) -> Result<(&'a Sam3dSession, MutexGuard<'a, Segmenter>)> {
    // SAFETY: NULL or a live session (the caller's contract).
    let sess = unsafe { arg(s, "session") }?;
    Ok((sess, lock(sess)?))
}

/// Start segmenting `volume` with `model`. Pass `SAM3D_ABI_VERSION` as `abi_version`.
///
/// Ownership: on success `*out_session` is a new session; free it with `sam3d_session_free`. The
/// session keeps the model and the volume alive (a borrowed buffer must still outlive it). Any
/// thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_ABI_MISMATCH` (the caller
/// was built against another ABI); `SAM3D_STATUS_NON_FINITE` (NaN or infinite voxels and the
/// package's policy is "error"); `SAM3D_STATUS_TOO_LARGE` (one click's paste-back would exceed the
/// memory budget: voxels far finer than the model's spacing); `SAM3D_STATUS_RUNTIME`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_new(
    model: *const Sam3dModel,
    volume: *const Sam3dVolume,
    abi_version: u32,
    out_session: *mut *mut Sam3dSession,
) -> Sam3dStatus {
    guard(|| {
        check_abi(abi_version)?;
        // SAFETY: NULL or live handles; NULL or writable (the documented contract).
        let (m, v, o) = unsafe {
            (
                arg(model, "model")?,
                arg(volume, "volume")?,
                out(out_session, "out_session")?,
            )
        };
        let seg = Segmenter::new(m.model.clone(), v.vol.clone())?;
        let canceller = seg.canceller();
        *o = Box::into_raw(Box::new(Sam3dSession {
            seg: Mutex::new(seg),
            canceller,
            progress: Mutex::new((None, 0)),
        }));
        Ok(())
    })
}

/// Set (or clear, with NULL) the progress callback, called on the calling thread at the start and
/// end of each stage of a click, undo or redo (`Sam3dStage`). ONNX Runtime reports no progress
/// within a run, so there are no percentages within a stage. The callback must return normally:
/// no C++ exception or `longjmp` may leave it (that would abort the process or skip the library's
/// clean-up); to stop the interaction, call `sam3d_session_cancel` and return (the C++ wrapper's
/// `std::function` overload does this for exceptions). From inside the callback every other call
/// on the same session returns `SAM3D_STATUS_BUSY`, except `sam3d_session_cancel`; never free the
/// session from its callback. `user` is passed back to the callback; the caller keeps it valid
/// while it is set.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_BUSY` (a call on the
/// session is running: it keeps the callback it started with).
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_progress(
    s: *mut Sam3dSession,
    callback: Sam3dProgressFn,
    user: *mut c_void,
) -> Sam3dStatus {
    guard(|| {
        // under the session's lock: a running call keeps the callback it started with, and the
        // host may free the old callback's data once this returns
        // SAFETY: NULL or a live session (the documented contract).
        let (sess, _busy) = unsafe { locked(s) }?;
        *sess.progress.lock().unwrap_or_else(|p| p.into_inner()) = (callback, user as usize);
        Ok(())
    })
}

/// Add an object (a structure to segment); its id (0, 1, ...) is written to `out_id`.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_add_object(
    s: *mut Sam3dSession,
    out_id: *mut u32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session; NULL or writable (the documented contract).
        let (sess, o) = unsafe { (arg(s, "session")?, out(out_id, "out_id")?) };
        *o = lock(sess)?.add_object() as u32;
        Ok(())
    })
}

/// Run an interaction on the locked session with its progress callback; write the result.
///
/// # Safety
/// `s` is NULL or a live session; `out_result` is NULL or writable.
unsafe fn interact(
    s: *mut Sam3dSession,
    out_result: *mut Sam3dResult,
    f: impl FnOnce(&mut Segmenter, &mut dyn FnMut(Stage, bool)) -> Result<Interaction>,
) -> Result<()> {
    // SAFETY: the caller's contract.
    let (sess, mut seg) = unsafe { locked(s) }?;
    // the callback is read once the session is locked: it cannot change while the call runs
    let (cb, user) = *sess.progress.lock().unwrap_or_else(|p| p.into_inner());
    let mut progress = |stage: Stage, done: bool| {
        if let Some(cb) = cb {
            // SAFETY: the host's callback with the `user` it gave (its contract: it returns).
            unsafe { cb(stage_to_c(stage) as i32, done as i32, user as *mut c_void) };
        }
    };
    let r = f(&mut seg, &mut progress)?;
    // SAFETY: NULL or writable (the caller's contract).
    if let Some(o) = unsafe { out_result.as_mut() } {
        *o = result_to_c(r);
    }
    Ok(())
}

/// Add a positive click to `object` and recompute its mask. `point` holds 3 coordinates in `coord`
/// (`Sam3dCoord`: 0 voxel index IJK, 1 LPS mm, 2 RAS mm). `out_result` (may be NULL) receives the
/// mask's voxel count (0: the click found nothing), the changed box and whether the encoder ran.
/// A failed click leaves the object as it was. Blocks for the click's duration.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (coord,
/// no such object, a NaN or infinite coordinate, more clicks than the package takes); `SAM3D_STATUS_OUT_OF_BOUNDS`
/// (outside the volume); `SAM3D_STATUS_CANCELLED`; `SAM3D_STATUS_BUSY`; `SAM3D_STATUS_TOO_LARGE`;
/// `SAM3D_STATUS_RUNTIME`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_click(
    s: *mut Sam3dSession,
    object: u32,
    point: *const f64,
    coord: i32,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or 3 readable doubles (the documented contract).
        let p = unsafe { arg(point as *const [f64; 3], "point") }?;
        let (p, c) = (*p, coord_from_c(coord)?);
        // SAFETY: the documented contract of `s` and `out_result`.
        unsafe {
            interact(s, out_result, |seg, progress| {
                seg.click(object as usize, p, c, progress)
            })
        }
    })
}

/// Add a click with a label to `object`: `label` `SAM3D_LABEL_POSITIVE` as `sam3d_session_click`,
/// `SAM3D_LABEL_NEGATIVE` ("not this") where the package accepts negative clicks
/// (`sam3d_model_prompts`). Blocks like a click.
///
/// @return as `sam3d_session_click`, and `SAM3D_STATUS_UNSUPPORTED` (a negative click on a package
/// trained without them; the message names the prompts it accepts; nothing changed);
/// `SAM3D_STATUS_INVALID_ARGUMENT` also for a label that is not a `Sam3dLabel`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_click_ex(
    s: *mut Sam3dSession,
    object: u32,
    point: *const f64,
    coord: i32,
    label: i32,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or 3 readable doubles (the documented contract).
        let p = unsafe { arg(point as *const [f64; 3], "point") }?;
        let (p, c, positive) = (*p, coord_from_c(coord)?, label_from_c(label)?);
        // SAFETY: the documented contract of `s` and `out_result`.
        unsafe {
            interact(s, out_result, |seg, progress| {
                seg.click_labeled(object as usize, p, c, positive, progress)
            })
        }
    })
}

/// Give `object` a box prompt: `corner_a` and `corner_b` (3 coordinates each, in `coord`) are two
/// opposite corners. The engine resamples the region so the box fits the model's crop with a
/// margin (a coarser spacing for a box larger than the crop's field of view), uses the box's
/// centre as the positive prompt while the object has no positive click, and clips the mask to the
/// voxels whose centres lie in the box. Works with every package. A second box replaces the
/// first; clicks before and after it are kept (they refine the box's answer). Undo returns to the
/// object before the box. Blocks like a click.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (coord,
/// no such object, a NaN or infinite corner, a box less than one voxel deep on an axis);
/// `SAM3D_STATUS_OUT_OF_BOUNDS` (the box misses the volume); `SAM3D_STATUS_CANCELLED`;
/// `SAM3D_STATUS_BUSY`; `SAM3D_STATUS_TOO_LARGE`; `SAM3D_STATUS_RUNTIME`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_box(
    s: *mut Sam3dSession,
    object: u32,
    corner_a: *const f64,
    corner_b: *const f64,
    coord: i32,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or 3 readable doubles each (the documented contract).
        let (a, b) = unsafe {
            (
                *arg(corner_a as *const [f64; 3], "corner_a")?,
                *arg(corner_b as *const [f64; 3], "corner_b")?,
            )
        };
        let c = coord_from_c(coord)?;
        // SAFETY: the documented contract of `s` and `out_result`.
        unsafe {
            interact(s, out_result, |seg, progress| {
                seg.set_box(object as usize, a, b, c, progress)
            })
        }
    })
}

/// Start `object` from the host's own segment (a Slicer segment, an organ mask, an earlier
/// result): `buffer` holds `size` bytes = the volume's voxel count, i fastest, non-zero inside. It
/// becomes the object's mask (copied; the buffer may be freed after the call); positive clicks
/// then add the model's answer to it, and a negative click (packages that take them)
/// removes the segment's connected part it lies in. Replaces the object's clicks and box; undo
/// returns to them.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (size,
/// no such object); `SAM3D_STATUS_TOO_LARGE` (beyond the memory budget); `SAM3D_STATUS_CANCELLED`
/// (a cancel from another thread or the progress callback; nothing changed); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_mask(
    s: *mut Sam3dSession,
    object: u32,
    buffer: *const u8,
    size: usize,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    guard(|| {
        if buffer.is_null() {
            return Err(super::null("buffer"));
        }
        // SAFETY: the documented contract of `s` and `out_result`.
        unsafe {
            interact(s, out_result, |seg, p| {
                // the size first: only a buffer of the volume's voxel count is read
                seg.check_mask_buffer(size)?;
                // SAFETY: `buffer` holds `size` readable bytes (the documented contract), and
                // `size` is the voxel count of a volume that exists.
                let data = std::slice::from_raw_parts(buffer, size);
                seg.set_mask(object as usize, data, p)
            })
        }
    })
}

/// Undo the last interaction of `object` (a click, a box, a starting segment; several levels); the
/// mask is recomputed from what is left. Blocks like a click.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_NOTHING_TO_DO` (nothing
/// to undo); `SAM3D_STATUS_INVALID_ARGUMENT` (no such object); `SAM3D_STATUS_CANCELLED` (nothing
/// changed); `SAM3D_STATUS_BUSY`; `SAM3D_STATUS_TOO_LARGE`; `SAM3D_STATUS_RUNTIME`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_undo(
    s: *mut Sam3dSession,
    object: u32,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    // SAFETY: the documented contract of `s` and `out_result`.
    guard(|| unsafe { interact(s, out_result, |seg, p| seg.undo(object as usize, p)) })
}

/// Redo the last undone interaction of `object`. Blocks like a click.
///
/// @return as `sam3d_session_undo` (`SAM3D_STATUS_NOTHING_TO_DO`: nothing to redo).
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_redo(
    s: *mut Sam3dSession,
    object: u32,
    out_result: *mut Sam3dResult,
) -> Sam3dStatus {
    // SAFETY: the documented contract of `s` and `out_result`.
    guard(|| unsafe { interact(s, out_result, |seg, p| seg.redo(object as usize, p)) })
}

/// Set the session's inference refinements for its next interactions (until then: the package's
/// manifest, `inference` block): `test_time_flips` crop flips averaged per click (1 = none, 2, 4 or
/// 8; each costs one more encoder and decoder run), `keep_clicked_components` 1 keeps only the
/// mask's parts (26-connected) that contain a click, 0 keeps all. Masks already computed stay as
/// they are; a new flip count drops the cached region, so the next click encodes.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (other
/// values; nothing changed); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_inference(
    s: *mut Sam3dSession,
    test_time_flips: u32,
    keep_clicked_components: i32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the documented contract).
        let sess = unsafe { arg(s, "session") }?;
        if keep_clicked_components != 0 && keep_clicked_components != 1 {
            return Err(err(
                Sam3dStatus::InvalidArgument,
                format!("keep_clicked_components must be 0 or 1, not {keep_clicked_components}"),
            ));
        }
        lock(sess)?.set_inference(test_time_flips, keep_clicked_components == 1)
    })
}

/// Set the session's automatic zoom-out for its next interactions: when a click's answer reaches
/// the crop's border on a side where the volume goes on (a lesion larger than the crop), the engine
/// predicts again on a region resampled at twice the model's spacing, and again at four times,
/// keeping each finer answer where it covers. `max_zoom` is the coarsest level: 1 (off), 2 or 4
/// (the default). The zoom that answered is reported by `sam3d_session_get_zoom`. Each level's
/// region is cached for later clicks. Box prompts choose their own zoom.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (other
/// values; nothing changed); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_set_zoom_out(
    s: *mut Sam3dSession,
    max_zoom: u32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the documented contract).
        let sess = unsafe { arg(s, "session") }?;
        // a wrong value is refused as such, also while the session is busy
        crate::engine::Segmenter::check_zoom_out(max_zoom)?;
        lock(sess)?.set_zoom_out(max_zoom)
    })
}

/// The session's largest automatic zoom-out in force (see `sam3d_session_set_zoom_out`).
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_zoom_out(
    s: *const Sam3dSession,
    out_max_zoom: *mut u32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session; NULL or writable (the documented contract).
        let (sess, o) = unsafe { (arg(s, "session")?, out(out_max_zoom, "out_max_zoom")?) };
        *o = lock(sess)?.zoom_out();
        Ok(())
    })
}

/// The zoom of the region that answered `object`'s last interaction, as a multiple of the model's
/// spacing: 1 the package's own, 2 or 4 after automatic zoom-out, a box's own zoom for a box
/// prompt; 0 when no model ran (no prompt, or only a starting segment).
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (no such
/// object); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_zoom(
    s: *const Sam3dSession,
    object: u32,
    out_zoom: *mut f64,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session; NULL or writable (the documented contract).
        let (sess, o) = unsafe { (arg(s, "session")?, out(out_zoom, "out_zoom")?) };
        *o = lock(sess)?
            .object_zoom(object as usize)
            .ok_or_else(|| err(Sam3dStatus::InvalidArgument, format!("no object {object}")))?;
        Ok(())
    })
}

/// The session's inference refinements in force (see `sam3d_session_set_inference`).
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_inference(
    s: *const Sam3dSession,
    test_time_flips: *mut u32,
    keep_clicked_components: *mut i32,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session; NULL or writable outputs (the documented contract).
        let (sess, f, k) = unsafe {
            (
                arg(s, "session")?,
                out(test_time_flips, "test_time_flips")?,
                out(keep_clicked_components, "keep_clicked_components")?,
            )
        };
        let (flips, keep) = lock(sess)?.inference();
        *f = flips;
        *k = keep as i32;
        Ok(())
    })
}

/// Cancel the session's running interaction; any thread, also from the progress callback. The
/// interrupted call returns `SAM3D_STATUS_CANCELLED` and leaves the object's mask and history as
/// they were; a cancel while nothing runs is dropped when the next interaction starts.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_cancel(s: *const Sam3dSession) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the documented contract).
        unsafe { arg(s, "session") }?.canceller.cancel();
        Ok(())
    })
}

/// Write `object`'s mask into the caller's buffer: `size` bytes = the volume's voxel count, uint8
/// 0/1, i fastest. The buffer is written only on success.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (size,
/// no such object); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_mask(
    s: *mut Sam3dSession,
    object: u32,
    buffer: *mut u8,
    size: usize,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the documented contract).
        let sess = unsafe { arg(s, "session") }?;
        if buffer.is_null() {
            return Err(super::null("buffer"));
        }
        let seg = lock(sess)?;
        let n = seg.check_mask_buffer(size)?;
        // written in place, no whole-volume copy (write_mask checks the object before writing)
        // SAFETY: `buffer` holds `size` writable bytes (the documented contract), checked = n.
        let dst = unsafe { std::slice::from_raw_parts_mut(buffer, n) };
        seg.write_mask(object as usize, dst)
    })
}

/// Write `object`'s mask inside `box` into the caller's buffer: `size` bytes = the box's voxel
/// count, uint8 0/1, i fastest within the box. A host that keeps its own copy of the mask copies only
/// an interaction's changed box (`Sam3dResult.changed`) this way. The buffer is written only on
/// success.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_OUT_OF_BOUNDS` (the box is
/// not inside the volume, or has lo > hi); `SAM3D_STATUS_INVALID_ARGUMENT` (size, no such object);
/// `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_get_mask_box(
    s: *mut Sam3dSession,
    object: u32,
    bx: *const Sam3dBox,
    buffer: *mut u8,
    size: usize,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session (the documented contract).
        let sess = unsafe { arg(s, "session") }?;
        // SAFETY: NULL or a readable box (the documented contract).
        let bx = *unsafe { arg(bx, "box") }?;
        if buffer.is_null() && size > 0 {
            return Err(super::null("buffer"));
        }
        let seg = lock(sess)?;
        let mut empty = [0u8; 0];
        let dst = if size == 0 {
            &mut empty[..]
        } else {
            // SAFETY: `buffer` holds `size` writable bytes (the documented contract); the engine
            // checks that `size` is the box's voxel count before writing.
            unsafe { std::slice::from_raw_parts_mut(buffer, size) }
        };
        seg.write_mask_box(object as usize, bx.lo, bx.hi, dst)
    })
}

/// `object`'s mask as a mask handle (a copy, with the volume's geometry).
///
/// Ownership: on success `*out_mask` is a new mask; free it with `sam3d_mask_free`.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (no such
/// object); `SAM3D_STATUS_TOO_LARGE` (beyond the memory budget); `SAM3D_STATUS_BUSY`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_mask(
    s: *mut Sam3dSession,
    object: u32,
    out_mask: *mut *mut Sam3dMask,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live session; NULL or writable (the documented contract).
        let (sess, o) = unsafe { (arg(s, "session")?, out(out_mask, "out_mask")?) };
        let seg = lock(sess)?;
        let data = seg.mask_vec(object as usize)?;
        *o = Box::into_raw(Box::new(Sam3dMask {
            geom: seg.volume().geom,
            data,
        }));
        Ok(())
    })
}

/// Free a session (not from its own progress callback, and not while another thread uses it).
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_session_free(s: *mut Sam3dSession) {
    // SAFETY: NULL or a handle from sam3d_session_new, freed once (the documented contract).
    unsafe { free_handle(s) }
}
