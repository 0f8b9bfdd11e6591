//! Status codes and errors. Every fallible call of the C ABI returns one `Sam3dStatus`; the message
//! is kept per thread (see `ffi`). The numeric values are part of the ABI: never renumber.

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
    /// The operation was cancelled (`sam3d_session_cancel`; a warm-up by a click or
    /// `sam3d_model_cancel_warm_up`).
    Cancelled = 12,
    /// The requested size exceeds the library's limits (refused before allocating).
    TooLarge = 13,
    /// Nothing to undo or redo.
    NothingToDo = 14,
    /// The model package's format version is not supported by this library.
    UnsupportedFormat = 15,
    /// The session is in use: another call on it is running (on another thread, or this call
    /// was made from that call's progress callback). Nothing was changed; try again later.
    Busy = 16,
    /// The model package does not accept this kind of prompt (e.g. a negative click on a package
    /// trained with positive clicks only); the message names the prompts it accepts.
    Unsupported = 17,
    /// An internal error (a bug): a panic was caught at the C boundary.
    Internal = 99,
}

/// Every status, in numeric order (not `pub`: cbindgen would write it into the header).
pub(crate) const ALL_STATUSES: [Sam3dStatus; 19] = [
    Sam3dStatus::Ok,
    Sam3dStatus::NullPointer,
    Sam3dStatus::InvalidArgument,
    Sam3dStatus::Io,
    Sam3dStatus::BadVolume,
    Sam3dStatus::BadModel,
    Sam3dStatus::HashMismatch,
    Sam3dStatus::RuntimeMissing,
    Sam3dStatus::Runtime,
    Sam3dStatus::AbiMismatch,
    Sam3dStatus::NonFinite,
    Sam3dStatus::OutOfBounds,
    Sam3dStatus::Cancelled,
    Sam3dStatus::TooLarge,
    Sam3dStatus::NothingToDo,
    Sam3dStatus::UnsupportedFormat,
    Sam3dStatus::Busy,
    Sam3dStatus::Unsupported,
    Sam3dStatus::Internal,
];

impl Sam3dStatus {
    /// The C name, e.g. `SAM3D_STATUS_BAD_VOLUME`: "SAM3D_STATUS_" and the variant's name in
    /// upper snake case, as cbindgen writes the C enum's constants (tested against the header).
    pub fn name(self) -> &'static str {
        static NAMES: once_cell::sync::Lazy<Vec<String>> = once_cell::sync::Lazy::new(|| {
            ALL_STATUSES
                .iter()
                .map(|s| {
                    let mut name = String::from("SAM3D_STATUS");
                    for c in format!("{s:?}").chars() {
                        if c.is_ascii_uppercase() {
                            name.push('_');
                        }
                        name.push(c.to_ascii_uppercase());
                    }
                    name
                })
                .collect()
        });
        let i = ALL_STATUSES
            .iter()
            .position(|&s| s == self)
            .expect("every status is in ALL_STATUSES (tested against the header)");
        &NAMES[i]
    }
}

/// An error with its status and a message for the user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", status.name())]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL_STATUSES` and the derived names against the enum cbindgen generated: every constant of the C
    /// enum is in `ALL` with the same value and name, and nothing else is.
    #[test]
    fn the_status_list_matches_the_header() {
        let header = include_str!(concat!(env!("OUT_DIR"), "/sam3d.h"));
        let body = header
            .split("typedef enum Sam3dStatus {")
            .nth(1)
            .and_then(|b| b.split("} Sam3dStatus;").next())
            .expect("the header declares Sam3dStatus");
        let in_header: Vec<(String, i32)> = body
            .lines()
            .filter_map(|l| {
                let (name, value) = l.trim().trim_end_matches(',').split_once(" = ")?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        let ours: Vec<(String, i32)> = ALL_STATUSES
            .iter()
            .map(|s| (s.name().to_string(), *s as i32))
            .collect();
        assert_eq!(ours, in_header);
    }
}
