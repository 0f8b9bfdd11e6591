//! The floating-point mode of the host threads that call into ONNX Runtime.
//!
//! Subnormal floats cost a microcode assist per operation on Intel cores. The paper-size encoder's
//! shifted-window blocks produce them by the million (the flash-attention loop rescales by
//! exp(-100)), so its sessions ask ONNX Runtime to flush them (`session.set_denormal_as_zero`). ONNX
//! Runtime applies that to its own pool threads, but the thread that calls `Run` does its share of
//! the work too, and that thread gets the mode only if it is the one that initialised the process's
//! first session (a `call_once`), which then keeps it for good. A host that opens the model on one
//! thread and clicks from a worker thread started earlier ran the paper encoder far slower
//! (docs/performance.md); and the opening thread's own arithmetic silently flushed subnormals from
//! then on.
//!
//! So the engine sets flush-to-zero and denormals-are-zero on the calling thread for each run
//! (`ModeGuard::flush_subnormals`) and puts back the caller's mode after creating a session
//! (`ModeGuard::keep`): the library never leaves a host thread's mode changed.
//!
//! Rust assumes the default mode in its own code; the guards only wrap calls into ONNX Runtime
//! (C++, which runs its pool threads in this mode), and the Rust code between setting and restoring
//! the mode does no arithmetic on subnormals. x86-64 only (MXCSR); elsewhere the guards do nothing.

/// MXCSR flush-to-zero: subnormal results become 0.
pub(crate) const FTZ: u32 = 1 << 15;
/// MXCSR denormals-are-zero: subnormal inputs read as 0.
pub(crate) const DAZ: u32 = 1 << 6;

/// The calling thread's floating-point mode: MXCSR without its exception status flags (bits 0-5,
/// which any arithmetic may raise); 0 on other architectures.
pub fn mode() -> u32 {
    mxcsr() & !0x3f
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stores the 32-bit register into `v`, which is valid for writes.
    unsafe {
        std::arch::asm!("stmxcsr dword ptr [{p}]", p = in(reg) &mut v as *mut u32,
                        options(nostack, preserves_flags))
    };
    v
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(v: u32) {
    // SAFETY: loads a value read from the register earlier, or such a value with FTZ and DAZ set
    // (neither unmasks an exception).
    unsafe {
        std::arch::asm!("ldmxcsr dword ptr [{p}]", p = in(reg) &v as *const u32,
                        options(nostack, preserves_flags, readonly))
    };
}

#[cfg(not(target_arch = "x86_64"))]
fn mxcsr() -> u32 {
    0
}

#[cfg(not(target_arch = "x86_64"))]
fn set_mxcsr(_: u32) {}

/// Restores the calling thread's floating-point mode when dropped (also when unwinding).
#[must_use = "the mode is restored when the guard is dropped"]
pub struct ModeGuard {
    saved: u32,
}

impl ModeGuard {
    /// Remember the mode, change nothing.
    pub fn keep() -> ModeGuard {
        ModeGuard { saved: mxcsr() }
    }

    /// Remember the mode and flush subnormals (FTZ and DAZ) until the guard is dropped.
    pub fn flush_subnormals() -> ModeGuard {
        let saved = mxcsr();
        set_mxcsr(saved | FTZ | DAZ);
        ModeGuard { saved }
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        set_mxcsr(self.saved);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn guards_set_and_restore_the_threads_mode() {
        std::thread::spawn(|| {
            let before = mode();
            assert_eq!(
                before & (FTZ | DAZ),
                0,
                "a new thread starts in the default mode"
            );
            {
                let _g = ModeGuard::flush_subnormals();
                assert_eq!(mode() & (FTZ | DAZ), FTZ | DAZ);
            }
            assert_eq!(mode(), before);
            {
                let _g = ModeGuard::keep();
                set_mxcsr(before | FTZ); // what ONNX Runtime's first session does to its thread
            }
            assert_eq!(mode(), before, "keep() puts back a mode changed under it");
            // restored when a panic unwinds through the guard too
            let r = std::panic::catch_unwind(|| {
                let _g = ModeGuard::flush_subnormals();
                panic!("inside the guard");
            });
            assert!(r.is_err());
            assert_eq!(mode(), before);
        })
        .join()
        .unwrap();
    }
}
