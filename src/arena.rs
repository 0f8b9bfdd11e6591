//! One ONNX Runtime CPU memory arena shared by the sessions of every open model.
//!
//! Each ONNX Runtime session has its own arena by default, so a model's decoder page-faults its
//! own memory at its first run while the encoder's arena holds gigabytes it no longer uses. With
//! one arena registered on ONNX Runtime's environment and used by both sessions
//! (`session.use_env_allocators`), the decoder reuses the encoder's freed blocks: a faster first
//! decoder run and a lower peak (figures in docs/performance.md).
//!
//! An arena never hands memory back, and one registered on the environment lives as long as the
//! environment (the process), so each open CPU model holds a lease (`ArenaLease`) and the arena is
//! unregistered when the last one goes: sessions keep a reference to it, so its memory is freed
//! when the last session using it is dropped, as per-session arenas were.

use std::sync::Mutex;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::AsPointer;

use crate::runtime::Runtime;

/// Open leases; the arena is registered while this is above 0.
static LEASES: Mutex<usize> = Mutex::new(0);

/// A model's share of the CPU arena: sessions created while it lives may use the environment's
/// allocators. Dropping the last lease unregisters the arena.
pub struct ArenaLease {
    runtime: Runtime,
}

fn cpu_arena_info() -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
}

/// `Err` with ONNX Runtime's message for a failed call, releasing its status.
fn status(s: ort::sys::OrtStatusPtr) -> std::result::Result<(), String> {
    if s.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from an ONNX Runtime call, released once after reading its message
    let msg = unsafe {
        let m = (api.GetErrorMessage)(s.0);
        let msg = if m.is_null() {
            String::from("(no message)")
        } else {
            std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (api.ReleaseStatus)(s.0);
        msg
    };
    Err(msg)
}

/// Register the CPU arena on ONNX Runtime's environment (`Err`: ONNX Runtime's message).
fn register(runtime: Runtime) -> std::result::Result<(), String> {
    let info = cpu_arena_info().map_err(|e| e.to_string())?;
    let env = runtime.environment().ptr() as *mut ort::sys::OrtEnv;
    // SAFETY: valid environment and memory info; a NULL arena configuration means defaults
    status(unsafe { (ort::api().CreateAndRegisterAllocator)(env, info.ptr(), std::ptr::null()) })
}

/// Unregister it; sessions still using it hold their own reference.
fn unregister(runtime: Runtime) -> std::result::Result<(), String> {
    let info = cpu_arena_info().map_err(|e| e.to_string())?;
    let env = runtime.environment().ptr() as *mut ort::sys::OrtEnv;
    // SAFETY: valid environment and memory info
    status(unsafe { (ort::api().UnregisterAllocator)(env, info.ptr()) })
}

/// A lease on the shared CPU arena, registering it first if no model holds one. `Err` (ONNX
/// Runtime's message) when it cannot be registered, e.g. because the process registered a CPU
/// allocator of its own: the sessions then keep their own arenas.
pub fn lease(runtime: Runtime) -> std::result::Result<ArenaLease, String> {
    let mut n = LEASES.lock().unwrap_or_else(|p| p.into_inner());
    if *n == 0 {
        register(runtime)?;
    }
    *n += 1;
    Ok(ArenaLease { runtime })
}

/// Leases open now (for tests).
pub fn leases() -> usize {
    *LEASES.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for ArenaLease {
    fn drop(&mut self) {
        let mut n = LEASES.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            // nothing to do on failure: the arena then stays registered, as per-session arenas
            // stayed allocated until their session went
            let _ = unregister(self.runtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases count up and down; after the last one the arena is unregistered, so the next lease
    /// registers it again (registering twice is an error in ONNX Runtime).
    #[test]
    fn the_last_lease_unregisters_the_arena() {
        let rt = crate::runtime::load(None).expect("ONNX Runtime: set SAM3D_ORT_LIBRARY");
        let base = leases();
        let a = lease(rt).unwrap();
        let b = lease(rt).unwrap();
        assert_eq!(leases(), base + 2);
        drop(a);
        drop(b);
        assert_eq!(leases(), base);
        if base == 0 {
            // registering now succeeds: the arena was unregistered; and it is unregistered again
            register(rt).unwrap();
            unregister(rt).unwrap();
        }
        let c = lease(rt).unwrap();
        assert_eq!(leases(), base + 1);
        drop(c);
    }
}
