//! libsam3d: promptable 3D segmentation (3DSAM-adapter) on ONNX Runtime, behind a stable C ABI.
//!
//! The C boundary lives in `ffi` alone; a Rust host uses the items re-exported here:
//! `load_runtime`, `Model::open`, `read_nifti` or `Volume::new`, `Segmenter` (clicks, undo, redo,
//! masks), `write_mask`. The library's limits: `set_memory_budget`, `MAX_THREADS`.
//!
//! Modules: `geometry` (ITK image geometry), `volume` (voxels, owned or borrowed), `nifti_read` and
//! `nifti_io` (NIfTI-1 in and out with ITK's rules), `files` (regular files only), `manifest`
//! (model packages), `runtime` (finding ONNX Runtime), `platform` (what differs between systems),
//! `arena` (one ONNX Runtime CPU arena for the open models), `fpmode` (the floating-point mode of
//! threads calling ONNX Runtime), `frame` and `resample` (the contract's model frame and
//! resampling), `refine` (test-time flips, clicked components), `limits` (memory budget, caps),
//! `engine` (model, segmenter, the click pipeline, warm-up), `ffi` (the C ABI).

// every unsafe operation sits in an `unsafe {}` block with a `// SAFETY:` comment saying why it holds
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// 3x3 matrices and 3-vectors read better with their indices (m[r][c] next to v[c]) than zipped
#![allow(clippy::needless_range_loop)]

mod arena;
mod engine;
mod error;
mod files;
mod fpmode;
mod frame;
mod geometry;
mod limits;
mod manifest;
mod nifti_io;
mod nifti_read;
mod platform;
mod refine;
mod resample;
mod runtime;
mod volume;

/// The C ABI (`include/sam3d.h` is generated from it).
pub mod ffi;

// The Rust API: what the examples, the tests and a Rust host use.
pub use engine::{
    Canceller, Coord, Device, GpuOptions, Interaction, Model, ModelOptions, Progress, Segmenter,
    Stage, VoxelBox, ZOOM_LEVELS,
};
pub use error::{Error, Result, Sam3dStatus};
pub use geometry::Geometry;
pub use limits::{memory_budget, set_memory_budget, DEFAULT_MEMORY_BUDGET, MAX_THREADS};
pub use manifest::{Manifest, Package, MANIFEST_FILE};
pub use nifti_io::{read as read_nifti, read_bytes as read_nifti_bytes, write_mask};
pub use runtime::{load as load_runtime, Runtime};
pub use volume::{Dtype, Volume};

/// Internals the project's own tests and fuzz harness observe; not part of the API, may change
/// in any version.
#[doc(hidden)]
pub mod internals {
    pub use crate::arena::leases;
    pub use crate::engine::cpu_has_bf16;
    pub use crate::fpmode::mode;
    pub use crate::manifest::sha256_file;
    pub use crate::volume::Voxels;
}
