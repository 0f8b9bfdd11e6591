//! Replays the fuzz inputs on the stable toolchain, without libFuzzer: every file of the seed
//! corpora (`fuzz/seeds/<target>/`, made by `make fuzz-seeds`) and of the committed reproducers
//! (`fuzz/regressions/<target>/`) goes through the same harness as the fuzz target
//! (`fuzz/harness/mod.rs`).
//!
//! A harness panic fails the test, naming the input. As in the fuzz runs (`-malloc_limit_mb`,
//! `-timeout`), so does one allocation above `ALLOC_LIMIT` (allocations above `ALLOC_REFUSED` are
//! refused: the process aborts after naming the input, unless the library handles the failure)
//! and an input that runs longer than `SAM3D_FUZZ_REPLAY_TIMEOUT` seconds (default 60: the
//! process aborts, naming it). ONNX Runtime comes from `SAM3D_ORT_LIBRARY` (`make test-rust`).

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// One allocation above this fails the input (the fuzz runs' `-malloc_limit_mb`).
const ALLOC_LIMIT: usize = 512 << 20;
/// One allocation above this is refused.
const ALLOC_REFUSED: usize = 4 << 30;

/// Largest single allocation since the last reset.
static BIGGEST: AtomicUsize = AtomicUsize::new(0);
/// The input being replayed, for the messages of the allocator and the watchdog.
static NAME: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);
/// Start of the current input (ms since `epoch()`), 0 between inputs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static IN_RUN: AtomicBool = AtomicBool::new(false);

struct Tracking;

fn note(size: usize) -> bool {
    BIGGEST.fetch_max(size, Ordering::Relaxed);
    if size > ALLOC_REFUSED {
        say(&["one allocation of ", &size.to_string(), " bytes refused"]);
        return false;
    }
    true
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT && !note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT && !note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT && !note(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Write "fuzz replay: <input>: <parts>" to the process's stderr, past the test harness's output
/// capture (the process may abort next). Small allocations only.
fn say(parts: &[&str]) {
    let mut name = [0u8; 256];
    let len = NAME_LEN.load(Ordering::Relaxed).min(name.len());
    for (i, b) in name.iter_mut().take(len).enumerate() {
        *b = NAME[i].load(Ordering::Relaxed);
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\nfuzz replay: ");
    let _ = err.write_all(&name[..len]);
    let _ = err.write_all(b": ");
    for p in parts {
        let _ = err.write_all(p.as_bytes());
    }
    let _ = err.write_all(b"\n");
}

fn set_name(name: &str) {
    let b = name.as_bytes();
    let len = b.len().min(NAME.len());
    for (i, &c) in b[..len].iter().enumerate() {
        NAME[i].store(c, Ordering::Relaxed);
    }
    NAME_LEN.store(len, Ordering::Relaxed);
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A thread that aborts the process when one input runs past the time limit.
fn start_watchdog() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        let limit_s: u64 = std::env::var("SAM3D_FUZZ_REPLAY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        epoch();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let started = STARTED_MS.load(Ordering::Relaxed);
            let now = epoch().elapsed().as_millis() as u64;
            if IN_RUN.load(Ordering::Relaxed) && now.saturating_sub(started) > limit_s * 1000 {
                say(&[&format!(
                    "still running after {limit_s} s (a hang?); aborting"
                )]);
                std::process::abort();
            }
        });
    });
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            p.is_file() && !name.starts_with('.') && name != "README.md"
        })
        .collect();
    files.sort();
    files
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Replay the seeds and reproducers of `target` through `run`; one target at a time.
fn replay(target: &str, run: fn(&[u8])) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    start_watchdog();
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = fuzz.join("seeds").join(target);
    let regressions = fuzz.join("regressions").join(target);
    assert!(
        seeds.is_dir(),
        "{} is missing: generate the seed corpora with `make fuzz-seeds` \
         (python3 tools/fuzz_seeds.py)",
        seeds.display()
    );
    assert!(
        regressions.is_dir(),
        "{} is missing (committed reproducers; see fuzz/README.md)",
        regressions.display()
    );
    let seed_files = inputs(&seeds);
    let regression_files = inputs(&regressions);
    assert!(
        !seed_files.is_empty(),
        "{} holds no inputs: run `make fuzz-seeds`",
        seeds.display()
    );
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let all = seed_files.iter().chain(regression_files.iter());
    let count = seed_files.len() + regression_files.len();
    for path in all {
        let name = path
            .strip_prefix(&fuzz)
            .unwrap_or(path)
            .display()
            .to_string();
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        set_name(&name);
        if std::env::var_os("SAM3D_FUZZ_TRACE").is_some() {
            eprintln!("{name}");
        }
        BIGGEST.store(0, Ordering::Relaxed);
        let t = Instant::now();
        STARTED_MS.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
        IN_RUN.store(true, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(|| run(&data));
        IN_RUN.store(false, Ordering::Relaxed);
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, name.clone());
        }
        if let Err(p) = outcome {
            failures.push(format!("{name}: panic: {}", message(&*p)));
        }
        let biggest = BIGGEST.load(Ordering::Relaxed);
        if biggest > ALLOC_LIMIT {
            failures.push(format!(
                "{name}: one allocation of {biggest} bytes (limit {ALLOC_LIMIT})"
            ));
        }
    }
    harness::cleanup();
    eprintln!(
        "fuzz replay {target}: {} seeds + {} regressions, slowest {:.2} s ({})",
        seed_files.len(),
        regression_files.len(),
        slowest.0.as_secs_f64(),
        slowest.1
    );
    assert!(count > 0, "no {target} inputs replayed");
    assert!(
        failures.is_empty(),
        "{} of {count} {target} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nifti_inputs_replay_cleanly() {
    replay("nifti", harness::nifti);
}

#[test]
fn manifest_inputs_replay_cleanly() {
    replay("manifest", harness::manifest);
}

#[test]
fn buffer_inputs_replay_cleanly() {
    replay("buffer", harness::buffer);
}
