//! The C-visible structs and enums, and their decoding into the engine's own types. Enum-typed
//! arguments cross the boundary as `int32_t` and are decoded here (an out-of-range value in a Rust
//! enum would be undefined behaviour); the enums below exist for their constants in the header.

use std::ffi::{c_char, c_void};

use super::{cstr_path, Sam3dStatus};
use crate::engine::{Coord, Device, GpuOptions, Interaction, ModelOptions, Stage, VoxelBox};
use crate::error::{err, Result};
use crate::geometry::Geometry;
use crate::volume::Dtype;

/// Execution provider asked for in `Sam3dModelOptions.device`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dDevice {
    /// ONNX Runtime's CPU provider
    Cpu = 0,
    /// NVIDIA CUDA (falls back to the CPU with the reason in `Sam3dModelInfo.provider_note`)
    Cuda = 1,
    /// NVIDIA TensorRT, with CUDA for the nodes it does not take (falls back likewise)
    TensorRt = 2,
    /// Intel OpenVINO on the CPU: an ONNX Runtime built with it (the `onnxruntime-openvino`
    /// build; any x86-64 CPU), else Intel's plugin execution provider beside a stock ONNX Runtime
    /// or at `SAM3D_OPENVINO_PLUGIN` (Intel CPUs only); falls back to the CPU provider likewise
    OpenVino = 3,
}

/// Label of a click (`sam3d_session_click_ex`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dLabel {
    /// "not this": a negative click (only packages trained with them; see `sam3d_model_prompts`)
    Negative = 0,
    /// "this": a positive click
    Positive = 1,
}

/// Coordinate system of a click (`coord` of `sam3d_session_click`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dCoord {
    /// continuous voxel index (i, j, k), voxel centres at integers
    Ijk = 0,
    /// physical point, LPS (ITK), mm
    Lps = 1,
    /// physical point, RAS (NIfTI, 3D Slicer), mm
    Ras = 2,
}

/// Pipeline stages reported to progress callbacks (`stage` of `Sam3dProgressFn`), in their order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dStage {
    /// reading a volume (reported by the command-line example only)
    Load = 0,
    /// resampling the crop around the clicks to the model's spacing
    Resample = 1,
    /// the encoder (only when the clicks leave the cached region)
    Encode = 2,
    /// the decoder
    Decode = 3,
    /// resampling the probabilities back to the volume's grid and thresholding
    Paste = 4,
}

/// Element type of a borrowed buffer (`Sam3dBufferDesc.dtype`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dDtype {
    /// uint8_t
    U8 = 1,
    /// int8_t
    I8 = 2,
    /// uint16_t
    U16 = 3,
    /// int16_t
    I16 = 4,
    /// uint32_t
    U32 = 5,
    /// int32_t
    I32 = 6,
    /// float
    F32 = 7,
    /// double
    F64 = 8,
}

/// An axis-aligned box of voxel indices, [lo, hi) per axis (i, j, k).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sam3dBox {
    /// first voxel index along i, j, k
    pub lo: [u64; 3],
    /// one past the last voxel index along i, j, k (empty when hi <= lo on an axis)
    pub hi: [u64; 3],
}

/// What one interaction (click, undo, redo) did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Sam3dResult {
    /// voxels in the object's mask
    pub voxels: u64,
    /// the voxels whose value may have changed
    pub changed: Sam3dBox,
    /// 1 when the encoder ran for this interaction, 0 when the cached region served it
    pub encoded: i32,
}

/// Progress callback: `stage` (`Sam3dStage`), `done` 0 at the start of a stage, 1 at its end,
/// `user` as given to `sam3d_session_set_progress`. It must return normally (no C++ exception, no
/// `longjmp`).
pub type Sam3dProgressFn = Option<unsafe extern "C" fn(stage: i32, done: i32, user: *mut c_void)>;

/// Model options. Zero-initialise, set `struct_size` to `sizeof(Sam3dModelOptions)`, then what you
/// need; later versions only append fields (a caller compiled against an older header passes its
/// smaller `struct_size` and gets the defaults of the fields it does not know).
#[repr(C)]
pub struct Sam3dModelOptions {
    /// `sizeof(Sam3dModelOptions)` as the caller was compiled
    pub struct_size: u32,
    /// `Sam3dDevice`: 0 CPU, 1 CUDA, 2 TensorRT, 3 OpenVINO (falls back to CPU with the reason
    /// reported)
    pub device: i32,
    /// ONNX Runtime intra-op threads, also the engine's resampling workers; 0 = all cores; at most
    /// `SAM3D_MAX_THREADS` (more: `SAM3D_STATUS_INVALID_ARGUMENT`)
    pub threads: u32,
    /// 1 skips the SHA-256 check of the package files (faster open of trusted packages)
    pub skip_hash_check: i32,
    /// OpenVINO: 1 computes in bf16 where the CPU has AMX-BF16 or AVX512-BF16 (faster, about 1e-2
    /// on probabilities); elsewhere, and by default, fp32. `Sam3dModelInfo.provider` says which ran.
    pub bf16: i32,
    /// OpenVINO: a folder for compiled models, so a later open does not compile again (created when
    /// missing); NULL: none
    pub cache_dir: *const c_char,
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
    /// the package's name (manifest `name`)
    pub name: *const c_char,
    /// the package's description
    pub description: *const c_char,
    /// the licence of the weights, as the package states it
    pub licence: *const c_char,
    /// SHA-256 of the package manifest (which holds the SHA-256 of every graph file)
    pub hash: *const c_char,
    /// execution provider in use: "CPU", "CUDA", "TensorRT", "OpenVINO fp32" or "OpenVINO bf16"
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
    /// voxel size along i, j, k in mm (positive)
    pub spacing: [f64; 3],
    /// LPS position of voxel (0, 0, 0) in mm
    pub origin: [f64; 3],
    /// row-major 3x3: `direction[3*r + c]` = LPS component r of index axis c (unit columns)
    pub direction: [f64; 9],
}

/// A caller's voxel buffer, borrowed without a copy.
#[repr(C)]
pub struct Sam3dBufferDesc {
    /// the first voxel (index 0, 0, 0)
    pub data: *const c_void,
    /// bytes readable from `data`
    pub size_bytes: usize,
    /// `Sam3dDtype`
    pub dtype: i32,
    /// positive byte strides of i, j, k (dense ITK/VTK buffers: esize, esize*nx, esize*nx*ny); no
    /// two voxels may share bytes, and every voxel must lie within `size_bytes`
    pub strides: [i64; 3],
    /// the voxels' geometry
    pub geometry: Sam3dGeometry,
}

fn invalid(msg: String) -> crate::error::Error {
    err(Sam3dStatus::InvalidArgument, msg)
}

pub(crate) fn device_from_c(v: i32) -> Result<Device> {
    Ok(match v {
        0 => Device::Cpu,
        1 => Device::Cuda,
        2 => Device::TensorRt,
        3 => Device::OpenVino,
        d => return Err(invalid(format!("device {d} is not a Sam3dDevice"))),
    })
}

pub(crate) fn coord_from_c(v: i32) -> Result<Coord> {
    Ok(match v {
        0 => Coord::Ijk,
        1 => Coord::Lps,
        2 => Coord::Ras,
        c => return Err(invalid(format!("coord {c} is not a Sam3dCoord"))),
    })
}

/// true for a positive click, false for a negative one.
pub(crate) fn label_from_c(v: i32) -> Result<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        l => Err(invalid(format!("label {l} is not a Sam3dLabel"))),
    }
}

pub(crate) fn dtype_from_c(v: i32) -> Result<Dtype> {
    Ok(match v {
        1 => Dtype::U8,
        2 => Dtype::I8,
        3 => Dtype::U16,
        4 => Dtype::I16,
        5 => Dtype::U32,
        6 => Dtype::I32,
        7 => Dtype::F32,
        8 => Dtype::F64,
        d => return Err(invalid(format!("dtype {d} is not a Sam3dDtype"))),
    })
}

pub(crate) fn stage_to_c(s: Stage) -> Sam3dStage {
    match s {
        Stage::Load => Sam3dStage::Load,
        Stage::Resample => Sam3dStage::Resample,
        Stage::Encode => Sam3dStage::Encode,
        Stage::Decode => Sam3dStage::Decode,
        Stage::Paste => Sam3dStage::Paste,
    }
}

fn box_to_c(b: VoxelBox) -> Sam3dBox {
    Sam3dBox { lo: b.lo, hi: b.hi }
}

pub(crate) fn result_to_c(r: Interaction) -> Sam3dResult {
    Sam3dResult {
        voxels: r.voxels,
        changed: box_to_c(r.changed),
        encoded: r.encoded as i32,
    }
}

pub(crate) fn geometry_from_c(g: &Sam3dGeometry) -> Result<Geometry> {
    let d = &g.direction;
    let dims = g.dims.map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    Geometry::new(
        dims,
        g.spacing,
        g.origin,
        [[d[0], d[1], d[2]], [d[3], d[4], d[5]], [d[6], d[7], d[8]]],
    )
}

pub(crate) fn geometry_to_c(g: &Geometry) -> Sam3dGeometry {
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

/// The size of each options struct's first version: a caller's `struct_size` must cover it.
const MODEL_OPTIONS_V1: usize = std::mem::offset_of!(Sam3dModelOptions, skip_hash_check) + 4;
const GPU_OPTIONS_V1: usize = std::mem::offset_of!(Sam3dGpuOptions, cuda_tf32);
const _: () = assert!(MODEL_OPTIONS_V1 == 16 && GPU_OPTIONS_V1 == 32);

/// Where each field appended after an options struct's first version ends (its offset plus its size).
fn appended_fields<T: 'static>() -> &'static [usize] {
    use std::any::TypeId;
    use std::mem::offset_of;
    const MODEL: [usize; 2] = [
        offset_of!(Sam3dModelOptions, bf16) + 4,
        offset_of!(Sam3dModelOptions, cache_dir) + std::mem::size_of::<*const c_char>(),
    ];
    const GPU: [usize; 1] = [offset_of!(Sam3dGpuOptions, cuda_tf32) + 4];
    if TypeId::of::<T>() == TypeId::of::<Sam3dModelOptions>() {
        &MODEL
    } else if TypeId::of::<T>() == TypeId::of::<Sam3dGpuOptions>() {
        &GPU
    } else {
        &[]
    }
}

/// A versioned options struct as its caller wrote it: `struct_size` (its first field) is read
/// alone, then the whole fields within that many bytes are copied into a zeroed struct, so a caller
/// built against an older, shorter version is never read past its end, and the fields it does not
/// know are 0 (every field's default).
///
/// # Safety
/// `p` points to a struct whose first 4 bytes are `struct_size` and which holds at least
/// `min(struct_size, size_of::<T>())` readable bytes.
unsafe fn read_versioned<T: 'static>(p: *const T, what: &str, first: usize) -> Result<T> {
    // SAFETY: the first 4 bytes are readable (the caller's contract).
    let size = unsafe { (p as *const u32).read_unaligned() } as usize;
    if size < first {
        return Err(err(
            Sam3dStatus::AbiMismatch,
            format!(
                "{what}.struct_size is {size}, at least {first} expected (this library's is {}): \
                 set it to sizeof({what})",
                std::mem::size_of::<T>()
            ),
        ));
    }
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // only whole fields: a size that ends inside an appended pointer (a caller's mistake) must not
    // leave half a pointer to dereference
    let whole = appended_fields::<T>()
        .iter()
        .copied()
        .filter(|end| *end <= size)
        .max()
        .unwrap_or(first)
        .max(first)
        .min(size)
        .min(std::mem::size_of::<T>());
    // SAFETY: `whole <= min(size, size_of::<T>())` bytes are readable at `p` (the caller's
    // contract) and writable in `v`; the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, v.as_mut_ptr() as *mut u8, whole) };
    // SAFETY: every field of the options structs is an integer or a pointer, for which any bytes,
    // zeros included, are a valid value.
    Ok(unsafe { v.assume_init() })
}

/// The engine's options from the C structs (either may be NULL: defaults).
///
/// # Safety
/// Each pointer is NULL or points to its struct, whose `struct_size` says how much of it the
/// caller wrote; `trt_cache_dir` is NULL or a NUL-terminated string.
pub(crate) unsafe fn model_options_from_c(
    options: *const Sam3dModelOptions,
    gpu: *const Sam3dGpuOptions,
) -> Result<ModelOptions> {
    let mut opts = ModelOptions::default();
    if !options.is_null() {
        // SAFETY: a struct of `struct_size` bytes (the caller's contract).
        let o = unsafe { read_versioned(options, "Sam3dModelOptions", MODEL_OPTIONS_V1) }?;
        opts.device = device_from_c(o.device)?;
        opts.threads = o.threads as usize;
        opts.verify_hashes = o.skip_hash_check == 0;
        // appended after the first version: 0 and NULL for older callers
        opts.bf16 = o.bf16 != 0;
        if !o.cache_dir.is_null() {
            // SAFETY: a NUL-terminated string (the caller's contract).
            opts.cache_dir = Some(unsafe { cstr_path(o.cache_dir, "cache_dir") }?);
        }
    }
    if !gpu.is_null() {
        // SAFETY: as above; `cuda_tf32`, appended after the first version, reads 0 for older callers
        let g = unsafe { read_versioned(gpu, "Sam3dGpuOptions", GPU_OPTIONS_V1) }?;
        opts.gpu = GpuOptions {
            device_id: g.device_id,
            memory_limit: usize::try_from(g.memory_limit_bytes).unwrap_or(usize::MAX),
            fp16: g.trt_fp16 != 0,
            tf32: g.cuda_tf32 != 0,
            trt_cache_dir: match g.trt_cache_dir.is_null() {
                true => None,
                // SAFETY: a NUL-terminated string (the caller's contract).
                false => Some(unsafe { cstr_path(g.trt_cache_dir, "trt_cache_dir") }?),
            },
        };
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C enums' values and the decoders agree, for every variant.
    #[test]
    fn enum_values_round_trip() {
        for d in [
            Sam3dDevice::Cpu,
            Sam3dDevice::Cuda,
            Sam3dDevice::TensorRt,
            Sam3dDevice::OpenVino,
        ] {
            let back = device_from_c(d as i32).unwrap();
            assert_eq!(format!("{back:?}"), format!("{d:?}"));
        }
        for c in [Sam3dCoord::Ijk, Sam3dCoord::Lps, Sam3dCoord::Ras] {
            assert_eq!(
                format!("{:?}", coord_from_c(c as i32).unwrap()),
                format!("{c:?}")
            );
        }
        for t in [
            Sam3dDtype::U8,
            Sam3dDtype::I8,
            Sam3dDtype::U16,
            Sam3dDtype::I16,
            Sam3dDtype::U32,
            Sam3dDtype::I32,
            Sam3dDtype::F32,
            Sam3dDtype::F64,
        ] {
            assert_eq!(
                format!("{:?}", dtype_from_c(t as i32).unwrap()),
                format!("{t:?}")
            );
        }
        for s in [
            Stage::Load,
            Stage::Resample,
            Stage::Encode,
            Stage::Decode,
            Stage::Paste,
        ] {
            assert_eq!(format!("{:?}", stage_to_c(s)), format!("{s:?}"));
        }
        assert!(device_from_c(4).is_err() && coord_from_c(-1).is_err() && dtype_from_c(0).is_err());
    }

    /// A caller built against the first version of Sam3dGpuOptions (32 bytes) is read no further,
    /// and gets cuda_tf32 = 0 even when the bytes after its struct are not zero.
    #[test]
    fn an_older_options_struct_is_read_only_as_far_as_it_goes() {
        let mut bytes = [0xffu8; 40];
        bytes[..4].copy_from_slice(&32u32.to_le_bytes());
        bytes[8..16].copy_from_slice(&0u64.to_le_bytes()); // memory_limit_bytes
        bytes[16..20].copy_from_slice(&0i32.to_le_bytes()); // trt_fp16
        bytes[24..32].copy_from_slice(&0u64.to_le_bytes()); // trt_cache_dir NULL
        let p = bytes.as_ptr() as *const Sam3dGpuOptions;
        // SAFETY: 40 readable bytes, struct_size 32
        let g = unsafe { read_versioned(p, "Sam3dGpuOptions", GPU_OPTIONS_V1) }.unwrap();
        assert_eq!(g.cuda_tf32, 0);
        assert_eq!(g.device_id, -1);
        bytes[..4].copy_from_slice(&31u32.to_le_bytes());
        // SAFETY: as above
        let e = unsafe { read_versioned(p, "Sam3dGpuOptions", GPU_OPTIONS_V1) }
            .err()
            .unwrap();
        assert_eq!(e.status, Sam3dStatus::AbiMismatch);
    }
}
