//! Opening files named by callers and packages: regular files only. Opening a FIFO for reading
//! blocks until a writer appears, and a device or a folder never reads as the file it stands for.

use std::fs::File;
use std::path::Path;

/// Open `path` for reading if it is a regular file; the file and its length, or a plain message.
pub fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let file = crate::platform::open_without_blocking(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => format!("cannot open: {e}"),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read its metadata: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a FIFO, socket or device)".into());
    }
    Ok((file, meta.len()))
}
