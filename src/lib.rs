//! libsam3d: promptable 3D segmentation (3DSAM-adapter) on ONNX Runtime, behind a stable C ABI.
//!
//! Modules: `geometry` (ITK image geometry), `volume` (voxels, owned or borrowed), `nifti_io`
//! (NIfTI-1 with ITK's rules), `manifest` (model packages), `runtime` (finding ONNX Runtime),
//! `arena` (one ONNX Runtime CPU arena for the open models), `fpmode` (the floating-point mode of
//! threads calling ONNX Runtime), `frame` and `resample` (the contract's model frame and
//! resampling), `refine` (test-time flips, clicked components), `engine` (model, segmenter),
//! `warmup` (a model's first runs before the user's first click).
//! The C boundary lives in `ffi` alone.

// every unsafe operation sits in an `unsafe {}` block with a `// SAFETY:` comment saying why it holds
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// 3x3 matrices and 3-vectors read better with their indices (m[r][c] next to v[c]) than zipped
#![allow(clippy::needless_range_loop)]

pub mod arena;
pub mod engine;
pub mod error;
pub mod files;
pub mod fpmode;
pub mod frame;
pub mod geometry;
pub mod limits;
pub mod manifest;
pub mod nifti_io;
pub mod nifti_read;
pub mod platform;
pub mod refine;
pub mod resample;
pub mod runtime;
pub mod volume;
pub mod warmup;

pub use engine::{Coord, Device, Model, ModelOptions, Segmenter, Stage};
pub use error::{Error, Result, Sam3dStatus};
pub use volume::Volume;
pub mod ffi;
