//! Finding and loading ONNX Runtime (`ort` with `load-dynamic`: nothing is linked at build time).
//!
//! A path the caller gives is the only one tried. Without one: `SAM3D_ORT_LIBRARY`, `ORT_DYLIB_PATH`,
//! the folder of libsam3d itself, then the system's library search (`libonnxruntime.so` on Linux;
//! names and loading per system in `platform`). ONNX Runtime can be loaded once per process; later
//! requests reuse it. A failure lists every path tried.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{err, Result, Sam3dStatus};
use crate::platform::{self, Os};

struct Loaded {
    path: PathBuf,
    version: String,
    env: Environment,
    /// The OpenVINO plugin: registered once, on first use (its path, or why it is not there).
    openvino: OnceLock<std::result::Result<PathBuf, String>>,
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

    /// Whether this ONNX Runtime was built with the OpenVINO execution provider (the
    /// `onnxruntime-openvino` build) rather than taking it as a plugin.
    pub fn has_built_in_openvino(&self) -> bool {
        use ort::ep::ExecutionProvider;
        ort::ep::OpenVINO::is_available().unwrap_or(false)
    }

    /// Register ONNX Runtime's OpenVINO plugin execution provider with the environment, once per
    /// process: from `SAM3D_OPENVINO_PLUGIN`, else beside ONNX Runtime's library (as `make ort
    /// ORT_OPENVINO=1` puts it). Err: why it is not available.
    pub fn openvino_plugin(&self) -> std::result::Result<&'static Path, String> {
        let found = self.inner.openvino.get_or_init(|| {
            let dir = self.inner.path.parent().unwrap_or(Path::new("."));
            let candidates: Vec<PathBuf> = match std::env::var_os("SAM3D_OPENVINO_PLUGIN") {
                Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
                _ => vec![
                    dir.join(OPENVINO_PLUGIN),
                    dir.join("onnxruntime_ep_openvino").join(OPENVINO_PLUGIN),
                ],
            };
            let Some(file) = candidates.iter().find(|p| p.is_file()) else {
                let tried: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                return Err(format!(
                    "the OpenVINO plugin is not installed (tried {}; `make ort ORT_OPENVINO=1` \
                     fetches it)",
                    tried.join(", ")
                ));
            };
            self.inner
                .env
                .register_ep_library(OPENVINO_EP, file)
                .map(|()| file.clone())
                .map_err(|e| {
                    format!(
                        "ONNX Runtime refused the OpenVINO plugin {}: {e}",
                        file.display()
                    )
                })
        });
        found.as_ref().map(|p| p.as_path()).map_err(|e| e.clone())
    }
}

/// The OpenVINO plugin's library and execution provider names.
pub const OPENVINO_PLUGIN: &str = "libonnxruntime_providers_openvino_plugin.so";
pub const OPENVINO_EP: &str = "OpenVINOExecutionProvider";

/// Where to look: only the caller's path when one is given (a host that names a library must get
/// that library or an error naming it, never another ONNX Runtime found elsewhere), else the
/// search order: the environment variables, libsam3d's own folder, the system's search.
fn candidates(explicit: Option<&Path>) -> Vec<(String, PathBuf)> {
    search_order(
        explicit,
        |var| std::env::var_os(var),
        platform::own_directory(),
        platform::CURRENT,
    )
}

/// `candidates` with its inputs given (tested for every system).
fn search_order(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    own_dir: Option<PathBuf>,
    os: Os,
) -> Vec<(String, PathBuf)> {
    if let Some(p) = explicit {
        return vec![("caller".to_string(), p.to_path_buf())];
    }
    let name = platform::ort_library_name(os);
    let mut out = Vec::new();
    for var in ["SAM3D_ORT_LIBRARY", "ORT_DYLIB_PATH"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            out.push((var.to_string(), PathBuf::from(v)));
        }
    }
    if let Some(dir) = own_dir {
        out.push(("next to libsam3d".to_string(), dir.join(name)));
    }
    out.push(("system".to_string(), PathBuf::from(name)));
    out
}

/// The first two members of ONNX Runtime's `OrtApiBase` (stable C ABI since 1.0).
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
    get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
}

/// Oldest ONNX Runtime accepted (`ort`'s `api-24` feature).
pub const MIN_MINOR_VERSION: u32 = 24;

/// Load the candidate and read its version, so that a wrong or old library gets a clear message
/// before `ort` sees it; also the file the loader actually opened (a bare name resolves through the
/// system's search). The library stays loaded when it is usable (ort loads it again).
fn probe(path: &Path) -> std::result::Result<(String, PathBuf), String> {
    let lib = platform::open_library(path)?;
    let sym = platform::symbol(&lib, c"OrtGetApiBase");
    if sym.is_null() {
        platform::close_library(lib);
        return Err("does not export OrtGetApiBase (not ONNX Runtime)".into());
    }
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime (its stable C entry point).
    let get_base: unsafe extern "C" fn() -> *const OrtApiBase = unsafe { std::mem::transmute(sym) };
    // SAFETY: a call without arguments into the library just loaded.
    let base = unsafe { get_base() };
    if base.is_null() {
        platform::close_library(lib);
        return Err("OrtGetApiBase returned NULL".into());
    }
    // SAFETY: `base` points to ONNX Runtime's static OrtApiBase; the version string is static.
    let v = unsafe { ((*base).get_version_string)() };
    let version = if v.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL, NUL-terminated, static.
        unsafe { std::ffi::CStr::from_ptr(v) }
            .to_string_lossy()
            .into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < MIN_MINOR_VERSION {
        platform::close_library(lib);
        return Err(format!(
            "version {version} is too old (libsam3d needs 1.{MIN_MINOR_VERSION} or newer)"
        ));
    }
    let file = platform::file_of(sym).unwrap_or_else(|| path.to_path_buf());
    // `lib` is not closed: `ort` opens the same library again and it stays loaded
    Ok((version, file))
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
        let is_bare = platform::is_bare(&path);
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
                    openvino: OnceLock::new(),
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
        let env = |_: &str| Some("/env/libonnxruntime.so".into());
        let c = search_order(Some(Path::new("/x/lib.so")), env, None, Os::Linux);
        assert_eq!(c, [("caller".to_string(), PathBuf::from("/x/lib.so"))]);
    }

    #[test]
    fn the_search_order_per_system() {
        let env = |v: &str| match v {
            "SAM3D_ORT_LIBRARY" => Some("/a/libonnxruntime.so".into()),
            "ORT_DYLIB_PATH" => Some("".into()),
            _ => None,
        };
        for (os, name) in [
            (Os::Linux, "libonnxruntime.so"),
            (Os::Mac, "libonnxruntime.dylib"),
            (Os::Windows, "onnxruntime.dll"),
        ] {
            let c = search_order(None, env, Some(PathBuf::from("/lib/dir")), os);
            let paths: Vec<PathBuf> = c.iter().map(|(_, p)| p.clone()).collect();
            assert_eq!(
                paths,
                [
                    PathBuf::from("/a/libonnxruntime.so"),
                    Path::new("/lib/dir").join(name),
                    PathBuf::from(name),
                ],
                "{os:?}"
            );
            assert_eq!(c[0].0, "SAM3D_ORT_LIBRARY");
        }
        let none = search_order(None, |_: &str| None, None, Os::Linux);
        assert_eq!(none.len(), 1);
    }
}
