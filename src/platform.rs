//! What differs between operating systems, in one place: ONNX Runtime's library file name, loading
//! a shared library, and finding the file a loaded symbol lives in. (The floating-point guard of
//! `fpmode` is x86-64 only and does nothing elsewhere; the SONAME is set in build.rs for Linux.)
//!
//! Linux x86-64 is what is built and tested. The macOS arm shares the Unix code (dlopen, dladdr);
//! the Windows arm (LoadLibraryW, GetModuleFileNameW) is written but has never been compiled:
//! no other target's standard library can be installed on the machines this project is built on.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};

/// The operating systems whose conventions this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Mac,
    Windows,
}

/// The system this library was built for (other Unix systems follow Linux's names).
pub const CURRENT: Os = if cfg!(target_os = "macos") {
    Os::Mac
} else if cfg!(windows) {
    Os::Windows
} else {
    Os::Linux
};

/// File name of ONNX Runtime's shared library, as its release archives and wheels name it.
pub fn ort_library_name(os: Os) -> &'static str {
    match os {
        Os::Linux => "libonnxruntime.so",
        Os::Mac => "libonnxruntime.dylib",
        Os::Windows => "onnxruntime.dll",
    }
}

/// A name without a folder: the system loader searches for it (LD_LIBRARY_PATH, the cache and
/// default folders on Linux; DYLD_* on macOS; the application folder and PATH on Windows).
pub fn is_bare(path: &Path) -> bool {
    path.components().count() == 1
}

/// An opened shared library (never closed while in use: ONNX Runtime stays loaded).
pub struct Library(*mut c_void);

// SAFETY: the handle is an opaque token of the system loader, valid on any thread.
unsafe impl Send for Library {}

#[cfg(unix)]
mod imp {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    pub fn open(path: &Path) -> Result<Library, String> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| "path contains a NUL byte".to_string())?;
        // SAFETY: `c` is a valid C string; dlopen runs the library's initialisers, which is what
        // loading ONNX Runtime means.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns NULL or a C string valid until the next dl* call.
            let e = unsafe { libc::dlerror() };
            return Err(if e.is_null() {
                "dlopen failed".into()
            } else {
                // SAFETY: non-NULL, NUL-terminated (see above).
                unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
            });
        }
        Ok(Library(h))
    }

    pub fn symbol(lib: &Library, name: &CStr) -> *mut c_void {
        // SAFETY: the handle came from dlopen and has not been closed; `name` is a C string.
        unsafe { libc::dlsym(lib.0, name.as_ptr()) }
    }

    pub fn close(lib: Library) {
        // SAFETY: the handle came from dlopen and is closed once (it is consumed).
        unsafe { libc::dlclose(lib.0) };
    }

    pub fn file_of(addr: *const c_void) -> Option<PathBuf> {
        // SAFETY: Dl_info is plain data; dladdr only writes it.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: any address may be asked about; `info` is valid for writes.
        if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
        let name = unsafe { CStr::from_ptr(info.dli_fname) };
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
    }
}

#[cfg(windows)]
mod imp {
    use super::*;
    use std::os::windows::ffi::{OsStrExt, OsStringExt};

    #[link(name = "kernel32")]
    extern "system" {
        fn LoadLibraryW(name: *const u16) -> *mut c_void;
        fn GetProcAddress(module: *mut c_void, name: *const std::ffi::c_char) -> *mut c_void;
        fn FreeLibrary(module: *mut c_void) -> i32;
        fn GetLastError() -> u32;
        fn GetModuleHandleExW(flags: u32, address: *const u16, module: *mut *mut c_void) -> i32;
        fn GetModuleFileNameW(module: *mut c_void, name: *mut u16, size: u32) -> u32;
    }
    const FROM_ADDRESS: u32 = 0x4;
    const UNCHANGED_REFCOUNT: u32 = 0x2;

    pub fn open(path: &Path) -> Result<Library, String> {
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        // SAFETY: `wide` is a NUL-terminated UTF-16 string.
        let h = unsafe { LoadLibraryW(wide.as_ptr()) };
        if h.is_null() {
            // SAFETY: no arguments; reads the thread's last error.
            return Err(format!("LoadLibraryW failed (error {})", unsafe {
                GetLastError()
            }));
        }
        Ok(Library(h))
    }

    pub fn symbol(lib: &Library, name: &CStr) -> *mut c_void {
        // SAFETY: the module handle is loaded; `name` is a C string.
        unsafe { GetProcAddress(lib.0, name.as_ptr()) }
    }

    pub fn close(lib: Library) {
        // SAFETY: the handle came from LoadLibraryW and is freed once.
        unsafe { FreeLibrary(lib.0) };
    }

    pub fn file_of(addr: *const c_void) -> Option<PathBuf> {
        let mut module = std::ptr::null_mut();
        // SAFETY: with FROM_ADDRESS the "name" is an address inside the module; `module` is
        // valid for writes; UNCHANGED_REFCOUNT takes no reference.
        let ok = unsafe {
            GetModuleHandleExW(
                FROM_ADDRESS | UNCHANGED_REFCOUNT,
                addr as *const u16,
                &mut module,
            )
        };
        if ok == 0 {
            return None;
        }
        let mut buf = vec![0u16; 32768];
        // SAFETY: `buf` holds `buf.len()` u16 values.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) };
        (n > 0).then(|| PathBuf::from(std::ffi::OsString::from_wide(&buf[..n as usize])))
    }
}

/// Open a file for reading without waiting for a writer when it is a FIFO (Unix: O_NONBLOCK,
/// which regular files ignore); the caller then checks what it opened.
pub fn open_without_blocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Load the shared library at `path` (a bare name goes through the system's search).
pub fn open_library(path: &Path) -> Result<Library, String> {
    imp::open(path)
}

/// The address of `name` in `lib`, NULL when it does not export it.
pub fn symbol(lib: &Library, name: &CStr) -> *mut c_void {
    imp::symbol(lib, name)
}

/// Unload a library that turned out unusable.
pub fn close_library(lib: Library) {
    imp::close(lib)
}

/// The file of the loaded library holding `addr` (what a bare name resolved to).
pub fn file_of(addr: *const c_void) -> Option<PathBuf> {
    imp::file_of(addr)
}

/// The folder holding this library (libsam3d itself, or the test binary it is linked into).
pub fn own_directory() -> Option<PathBuf> {
    let p = file_of(own_directory as *const c_void)?;
    std::fs::canonicalize(&p)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_per_system() {
        assert_eq!(ort_library_name(Os::Linux), "libonnxruntime.so");
        assert_eq!(ort_library_name(Os::Mac), "libonnxruntime.dylib");
        assert_eq!(ort_library_name(Os::Windows), "onnxruntime.dll");
        assert_eq!(CURRENT, Os::Linux, "built and tested on Linux only");
        assert!(is_bare(Path::new("libonnxruntime.so")));
        assert!(!is_bare(Path::new("./libonnxruntime.so")));
        assert!(!is_bare(Path::new("/opt/ort/libonnxruntime.so")));
    }

    #[test]
    fn a_loaded_symbol_names_its_file() {
        // this test binary's own folder, found through the address of one of its functions
        let dir = own_directory().expect("dladdr on our own code");
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        assert_eq!(Some(dir.as_path()), exe.parent());
        let e = open_library(Path::new("/nonexistent/libnothing.so"))
            .err()
            .unwrap();
        assert!(e.contains("nonexistent"), "{e}");
    }
}
