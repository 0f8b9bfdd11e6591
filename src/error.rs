//! Status codes and errors. Every fallible call of the C ABI returns one `Sam3dStatus`; the message
//! is kept per thread (see `ffi.rs`). The numeric values are part of the ABI: never renumber.

use std::fmt;

/// Result status of every fallible libsam3d call. Values are stable across versions.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam3dStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// An argument is out of its domain (sizes, strides, enum values, options).
    InvalidArgument = 2,
    /// A file could not be read or written.
    Io = 3,
    /// A volume file is corrupt, truncated or of an unsupported kind.
    BadVolume = 4,
    /// A model package is malformed (manifest, missing graph, wrong interface).
    BadModel = 5,
    /// A model package file does not match the SHA-256 in its manifest.
    HashMismatch = 6,
    /// ONNX Runtime could not be found or loaded (the message lists the paths tried).
    RuntimeMissing = 7,
    /// ONNX Runtime reported an error while creating a session or running a graph.
    Runtime = 8,
    /// The caller was built against another ABI version.
    AbiMismatch = 9,
    /// The volume holds NaN or infinite voxels and the model's policy is "error".
    NonFinite = 10,
    /// A click lies outside the volume.
    OutOfBounds = 11,
    /// The operation was cancelled from another thread.
    Cancelled = 12,
    /// The requested size exceeds the library's limits (refused before allocating).
    TooLarge = 13,
    /// Nothing to undo or redo, or no such object.
    NothingToDo = 14,
    /// The model package's format version is not supported by this library.
    UnsupportedFormat = 15,
    /// The session is in use: another call on it is running (on another thread, or this call
    /// was made from that call's progress callback). Nothing was changed; try again later.
    Busy = 16,
    /// An internal error (a bug): a panic was caught at the C boundary.
    Internal = 99,
}

impl Sam3dStatus {
    /// Every status, in numeric order.
    pub const ALL: [Sam3dStatus; 18] = [
        Self::Ok,
        Self::NullPointer,
        Self::InvalidArgument,
        Self::Io,
        Self::BadVolume,
        Self::BadModel,
        Self::HashMismatch,
        Self::RuntimeMissing,
        Self::Runtime,
        Self::AbiMismatch,
        Self::NonFinite,
        Self::OutOfBounds,
        Self::Cancelled,
        Self::TooLarge,
        Self::NothingToDo,
        Self::UnsupportedFormat,
        Self::Busy,
        Self::Internal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "SAM3D_STATUS_OK",
            Self::NullPointer => "SAM3D_STATUS_NULL_POINTER",
            Self::InvalidArgument => "SAM3D_STATUS_INVALID_ARGUMENT",
            Self::Io => "SAM3D_STATUS_IO",
            Self::BadVolume => "SAM3D_STATUS_BAD_VOLUME",
            Self::BadModel => "SAM3D_STATUS_BAD_MODEL",
            Self::HashMismatch => "SAM3D_STATUS_HASH_MISMATCH",
            Self::RuntimeMissing => "SAM3D_STATUS_RUNTIME_MISSING",
            Self::Runtime => "SAM3D_STATUS_RUNTIME",
            Self::AbiMismatch => "SAM3D_STATUS_ABI_MISMATCH",
            Self::NonFinite => "SAM3D_STATUS_NON_FINITE",
            Self::OutOfBounds => "SAM3D_STATUS_OUT_OF_BOUNDS",
            Self::Cancelled => "SAM3D_STATUS_CANCELLED",
            Self::TooLarge => "SAM3D_STATUS_TOO_LARGE",
            Self::NothingToDo => "SAM3D_STATUS_NOTHING_TO_DO",
            Self::UnsupportedFormat => "SAM3D_STATUS_UNSUPPORTED_FORMAT",
            Self::Busy => "SAM3D_STATUS_BUSY",
            Self::Internal => "SAM3D_STATUS_INTERNAL",
        }
    }
}

/// An error with its status and a message for the user.
#[derive(Debug, Clone)]
pub struct Error {
    pub status: Sam3dStatus,
    pub message: String,
}

impl Error {
    pub fn new(status: Sam3dStatus, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// `bail!(Status, "format", args)` returns an `Error` early.
#[macro_export]
macro_rules! bail {
    ($status:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::new($crate::error::Sam3dStatus::$status, format!($($arg)*)))
    };
}

/// Shorthand constructor used with `map_err`.
pub fn err(status: Sam3dStatus, message: impl Into<String>) -> Error {
    Error::new(status, message)
}
