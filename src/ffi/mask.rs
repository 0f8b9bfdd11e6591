//! `Sam3dMask`: a copy of an object's mask with the volume's geometry.

use std::ffi::c_char;

use super::{arg, cstr_path, free_handle, guard, out, Sam3dStatus};
use crate::geometry::Geometry;

/// A mask on a volume's grid (uint8, 0/1, i fastest), with the volume's geometry. Immutable.
pub struct Sam3dMask {
    pub(crate) geom: Geometry,
    pub(crate) data: Vec<u8>,
}

/// The mask's voxels and their count (the volume's voxel count).
///
/// Ownership: `*data` is owned by the mask, valid until `sam3d_mask_free`. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_data(
    mask: *const Sam3dMask,
    data: *mut *const u8,
    size: *mut usize,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live mask handle; NULL or writable outputs (the documented contract).
        let (m, d, n) = unsafe { (arg(mask, "mask")?, out(data, "data")?, out(size, "size")?) };
        *d = m.data.as_ptr();
        *n = m.data.len();
        Ok(())
    })
}

/// Write the mask as a uint8 NIfTI-1 file (`.nii` or `.nii.gz`) with the volume's geometry (qform
/// and sform, code 1): written to a temporary file in the same folder and renamed into place, so
/// the file appears complete or not at all. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (the
/// name does not end in .nii or .nii.gz, or is not UTF-8); `SAM3D_STATUS_TOO_LARGE` (a dimension
/// beyond NIfTI-1's 32767); `SAM3D_STATUS_IO` (cannot write or rename).
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_write_nifti(
    mask: *const Sam3dMask,
    path: *const c_char,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live mask handle; NULL or a C string (the documented contract).
        let (m, p) = unsafe { (arg(mask, "mask")?, cstr_path(path, "path")?) };
        crate::nifti_io::write_mask(&p, &m.geom, &m.data)
    })
}

/// Free a mask. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_mask_free(mask: *mut Sam3dMask) {
    // SAFETY: NULL or a handle from sam3d_session_mask, freed once (the documented contract).
    unsafe { free_handle(mask) }
}
