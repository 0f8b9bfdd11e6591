//! `Sam3dVolume`: voxels and geometry, read from a file or borrowed from the caller.

use std::ffi::c_char;
use std::sync::Arc;

use super::types::{dtype_from_c, geometry_from_c, geometry_to_c};
use super::{arg, cstr_path, free_handle, guard, out, Sam3dBufferDesc, Sam3dGeometry, Sam3dStatus};
use crate::volume::Volume;

/// A volume: geometry and voxels (owned, or a caller's buffer borrowed without a copy).
/// Immutable after creation: may be shared by sessions on several threads.
pub struct Sam3dVolume {
    pub(crate) vol: Arc<Volume>,
}

/// Read a NIfTI-1 image: `.nii`, `.nii.gz`, or a `.hdr`/`.img` pair given by either name
/// (uint8/int8/int16/uint16/int32/uint32/int64/uint64/float32/float64, scl_slope/scl_inter applied),
/// with ITK's geometry rules. Only regular files are opened.
///
/// Ownership: on success `*out_volume` is a new volume; free it with `sam3d_volume_free`. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`; `SAM3D_STATUS_INVALID_ARGUMENT` (path not
/// UTF-8); `SAM3D_STATUS_IO` (missing, unreadable, not a regular file); `SAM3D_STATUS_BAD_VOLUME`
/// (the message names the field and its value: dims, pixdim, vox_offset, datatype, magic; a
/// corrupt or truncated gzip stream); `SAM3D_STATUS_TOO_LARGE` (beyond 2^32 voxels or the memory
/// budget, refused before allocating; see `sam3d_set_memory_budget`).
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_read_nifti(
    path: *const c_char,
    out_volume: *mut *mut Sam3dVolume,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or writable; NULL or a C string (the documented contract).
        let (o, p) = unsafe { (out(out_volume, "out_volume")?, cstr_path(path, "path")?) };
        let vol = crate::nifti_io::read(&p)?;
        *o = Box::into_raw(Box::new(Sam3dVolume { vol: Arc::new(vol) }));
        Ok(())
    })
}

/// Borrow a caller's buffer (ITK, VTK, numpy) without a copy: `desc->data` must hold
/// `desc->size_bytes` readable bytes, stay valid and unchanged until the volume and every session
/// using it are freed. Every voxel the strides reach is checked to lie inside the buffer.
///
/// Ownership: on success `*out_volume` is a new volume; free it with `sam3d_volume_free`. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER` (`desc`, `desc->data` or `out_volume`);
/// `SAM3D_STATUS_INVALID_ARGUMENT` (dtype, a zero dimension, non-positive spacing, a direction
/// whose columns are not unit vectors or are singular, non-positive, misaligned or overlapping
/// strides, voxels beyond `size_bytes`); `SAM3D_STATUS_TOO_LARGE` (beyond 2^32 voxels).
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_from_buffer(
    desc: *const Sam3dBufferDesc,
    out_volume: *mut *mut Sam3dVolume,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a valid description; NULL or writable (the documented contract).
        let (d, o) = unsafe { (arg(desc, "desc")?, out(out_volume, "out_volume")?) };
        if d.data.is_null() {
            return Err(super::null("desc->data"));
        }
        let dtype = dtype_from_c(d.dtype)?;
        let geom = geometry_from_c(&d.geometry)?;
        let strides = d.strides.map(|s| s as isize);
        // SAFETY: `data` holds `size_bytes` readable bytes that outlive the volume (the documented
        // contract); `borrowed` checks every voxel against that range.
        let vol =
            unsafe { Volume::borrowed(geom, d.data as *const u8, d.size_bytes, dtype, strides) }?;
        *o = Box::into_raw(Box::new(Sam3dVolume { vol: Arc::new(vol) }));
        Ok(())
    })
}

/// The volume's geometry. Any thread.
///
/// @return `SAM3D_STATUS_OK`; `SAM3D_STATUS_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_geometry(
    vol: *const Sam3dVolume,
    out_geometry: *mut Sam3dGeometry,
) -> Sam3dStatus {
    guard(|| {
        // SAFETY: NULL or a live volume handle; NULL or writable (the documented contract).
        let (v, o) = unsafe { (arg(vol, "volume")?, out(out_geometry, "out_geometry")?) };
        *o = geometry_to_c(&v.vol.geom);
        Ok(())
    })
}

/// Free a volume. Sessions made from it keep it alive until they are freed. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn sam3d_volume_free(vol: *mut Sam3dVolume) {
    // SAFETY: NULL or a handle from this library's volume functions, freed once.
    unsafe { free_handle(vol) }
}
