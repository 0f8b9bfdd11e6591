//! Finding and loading ONNX Runtime (`ort` with `load-dynamic`: nothing is linked at build time).
//!
//! A path the caller gives is the only one tried. Without one: `SAM3D_ORT_LIBRARY`, `ORT_DYLIB_PATH`,
//! the directory of `libsam3d.so` itself, then the system's library search (`libonnxruntime.so`). ONNX Runtime can be
//! loaded once per process; later requests reuse it. A failure lists every path tried.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::{err, Result, Sam3dStatus};

pub const LIB_NAME: &str = "libonnxruntime.so";

struct Loaded {
    path: PathBuf,
    version: String,
    env: Environment,
}

static LOADED: Mutex<Option<&'static Loaded>> = Mutex::new(None);

/// The process-wide ONNX Runtime: its environment, where it came from and its version.
#[derive(Clone, Copy)]
pub struct Runtime {
    inner: &'static Loaded,
}

impl Runtime {
    pub fn environment(&self) -> &'static Environment {
        &self.inner.env
    }
    pub fn path(&self) -> &'static Path {
        &self.inner.path
    }
    pub fn version(&self) -> &'static str {
        &self.inner.version
    }
}

/// Directory holding the shared object this code lives in (libsam3d.so, or the test binary).
fn own_directory() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = own_directory as *const libc::c_void;
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let p = PathBuf::from(name.to_string_lossy().into_owned());
    std::fs::canonicalize(&p)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// Where to look: only the caller's path when one is given (a host that names a library must get
/// that library or an error naming it, never another ONNX Runtime found elsewhere), else the
/// search order.
fn candidates(explicit: Option<&Path>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(("caller".to_string(), p.to_path_buf()));
        return out;
    }
    for var in ["SAM3D_ORT_LIBRARY", "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            out.push((var.to_string(), PathBuf::from(v)));
        }
    }
    if let Some(dir) = own_directory() {
        out.push(("next to libsam3d".to_string(), dir.join(LIB_NAME)));
    }
    out.push(("system".to_string(), PathBuf::from(LIB_NAME)));
    out
}

/// The first two members of ONNX Runtime's `OrtApiBase` (stable C ABI since 1.0).
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const libc::c_void,
    get_version_string: unsafe extern "C" fn() -> *const libc::c_char,
}

/// Oldest ONNX Runtime accepted (`ort`'s `api-24` feature).
pub const MIN_MINOR_VERSION: u32 = 24;

/// dlopen the candidate and read its version, so that a wrong or old library gets a clear message
/// before `ort` sees it; also the file the loader actually opened (a bare name resolves through the
/// system's search). The handle stays open when it is usable (ort opens it again).
fn probe(path: &Path) -> std::result::Result<(String, PathBuf), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "path contains a NUL byte".to_string())?;
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = libc::dlerror();
            return Err(if e.is_null() {
                "dlopen failed".into()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            });
        }
        let sym = libc::dlsym(h, c"OrtGetApiBase".as_ptr());
        if sym.is_null() {
            libc::dlclose(h);
            return Err("does not export OrtGetApiBase (not ONNX Runtime)".into());
        }
        let get_base: unsafe extern "C" fn() -> *const OrtApiBase = std::mem::transmute(sym);
        let base = get_base();
        if base.is_null() {
            libc::dlclose(h);
            return Err("OrtGetApiBase returned NULL".into());
        }
        let v = ((*base).get_version_string)();
        let version = if v.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned()
        };
        let minor = version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if minor < MIN_MINOR_VERSION {
            libc::dlclose(h);
            return Err(format!(
                "version {version} is too old (libsam3d needs 1.{MIN_MINOR_VERSION} or newer)"
            ));
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        let file = if libc::dladdr(sym, &mut info) != 0 && !info.dli_fname.is_null() {
            let name = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy();
            PathBuf::from(name.into_owned())
        } else {
            path.to_path_buf()
        };
        Ok((version, file))
    }
}

/// Load ONNX Runtime (once per process) and return it.
pub fn load(explicit: Option<&Path>) -> Result<Runtime> {
    let mut guard = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = *guard {
        // one ONNX Runtime per process: a request for another file cannot be met
        if let Some(p) = explicit {
            let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            };
            if !same(p, &l.path) {
                return Err(err(
                    Sam3dStatus::RuntimeMissing,
                    format!(
                        "{} was not loaded: this process already runs ONNX Runtime from {}, and a \
                         process can load only one",
                        p.display(),
                        l.path.display()
                    ),
                ));
            }
        }
        return Ok(Runtime { inner: l });
    }
    let mut tried = Vec::new();
    for (source, path) in candidates(explicit) {
        let is_bare = path.components().count() == 1;
        if !is_bare && !path.exists() {
            tried.push(format!("{} ({source}): not found", path.display()));
            continue;
        }
        let (version, file) = match probe(&path) {
            Ok(v) => v,
            Err(e) => {
                tried.push(format!("{} ({source}): {e}", path.display()));
                continue;
            }
        };
        match ort::init_from(&path) {
            Ok(builder) => {
                let env = builder.with_name("libsam3d").build().map_err(|e| {
                    err(
                        Sam3dStatus::Runtime,
                        format!(
                            "ONNX Runtime at {} loaded but its environment failed: {e}",
                            path.display()
                        ),
                    )
                })?;
                let loaded: &'static Loaded = Box::leak(Box::new(Loaded {
                    path: file,
                    version,
                    env,
                }));
                *guard = Some(loaded);
                return Ok(Runtime { inner: loaded });
            }
            Err(e) => tried.push(format!("{} ({source}): {e}", path.display())),
        }
    }
    let what = if explicit.is_some() {
        "ONNX Runtime (>= 1.24) could not be loaded from the path given"
    } else {
        "ONNX Runtime (>= 1.24) not found"
    };
    Err(err(
        Sam3dStatus::RuntimeMissing,
        format!("{what}; tried: {}", tried.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_the_only_candidate() {
        let c = candidates(Some(Path::new("/nowhere/libonnxruntime.so")));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, Path::new("/nowhere/libonnxruntime.so"));
        let search = candidates(None);
        assert_eq!(search.last().unwrap().1, Path::new(LIB_NAME));
    }
}
