//! The library's documented limits: how much a caller, a file or a model package may ask of it.
//! Every size that comes from outside (a file header, a manifest, a caller's struct) is checked
//! against these before memory is allocated, and the large allocations are fallible, so a hostile
//! or broken input costs an error status, never an abort of the host.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{err, Result, Sam3dStatus};

/// Default memory budget: 4 GiB for one whole-volume array (a file's voxels decoded to float32,
/// a mask copy): a 1024 x 1024 x 1024 volume, or eight 512 x 512 x 512 CTs' worth of slices.
pub const DEFAULT_MEMORY_BUDGET: u64 = 4 << 30;

/// Most ONNX Runtime intra-op threads (and engine workers) a model may ask for: more threads than
/// any host has cores only cost memory and start-up time (thousands made open and close hang).
pub const MAX_THREADS: u32 = 256;

/// Largest crop edge a model package may declare (the paper's models use 128): a 256^3 crop
/// already needs several GB of activations.
pub const MAX_CROP: usize = 256;

/// Most clicks per object a model package may declare.
pub const MAX_CLICKS: usize = 1024;

/// Largest extent of a volume along one axis in the model's voxels (dimension x spacing / the
/// model's spacing): 16 Mi, kilometres at any model spacing. Beyond it the grid positions of
/// clicks and crops would leave 64-bit integers (a spacing of 1e30 mm is a valid float).
pub const MAX_MODEL_EXTENT: f64 = (1u64 << 24) as f64;

static MEMORY_BUDGET: AtomicU64 = AtomicU64::new(DEFAULT_MEMORY_BUDGET);

/// The memory budget in force (bytes).
pub fn memory_budget() -> u64 {
    MEMORY_BUDGET.load(Ordering::Relaxed)
}

/// Set the memory budget in bytes; 0 restores the default.
pub fn set_memory_budget(bytes: u64) {
    let v = if bytes == 0 {
        DEFAULT_MEMORY_BUDGET
    } else {
        bytes
    };
    MEMORY_BUDGET.store(v, Ordering::Relaxed);
}

/// Refuse `bytes` for `what` when they exceed the budget (before anything is allocated).
pub fn check_budget(bytes: u64, what: &str) -> Result<()> {
    let budget = memory_budget();
    if bytes > budget {
        return Err(err(
            Sam3dStatus::TooLarge,
            format!(
                "{what} needs {bytes} bytes, more than the memory budget of {budget} bytes \
                 (sam3d_set_memory_budget)"
            ),
        ));
    }
    Ok(())
}

/// A vector of `n` copies of `fill`, within the budget and allocated fallibly: an allocation
/// failure is `TOO_LARGE`, not an abort.
pub fn filled_vec<T: Clone>(n: usize, fill: T, what: &str) -> Result<Vec<T>> {
    let mut v = empty_vec(n, what)?;
    v.resize(n, fill);
    Ok(v)
}

/// An empty vector with room for `n` elements, within the budget and allocated fallibly.
pub fn empty_vec<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    check_budget(bytes, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        err(
            Sam3dStatus::TooLarge,
            format!("{what}: cannot allocate {bytes} bytes"),
        )
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_before_allocating_and_zero_restores_the_default() {
        let e = empty_vec::<f32>(usize::MAX / 4, "test").unwrap_err();
        assert_eq!(e.status, Sam3dStatus::TooLarge);
        assert!(e.message.contains("memory budget"), "{}", e.message);
        assert_eq!(filled_vec(3, 7u8, "test").unwrap(), [7, 7, 7]);
        // other tests read the budget concurrently: only values that keep 3 bytes allowed
        set_memory_budget(0);
        assert_eq!(memory_budget(), DEFAULT_MEMORY_BUDGET);
    }
}
