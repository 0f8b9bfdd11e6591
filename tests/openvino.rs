//! The OpenVINO device on an ONNX Runtime built with OpenVINO (`make ort-openvino`, the
//! `onnxruntime-openvino` build; any x86-64 CPU): both graphs on OpenVINO's CPU device, fp32 with
//! the CPU provider's masks, bf16 exactly where the CPU multiplies bf16 and then within Dice 0.99
//! of fp32 on the demo model, and the compiled-model cache. This binary loads that runtime
//! (`SAM3D_ORT_OPENVINO_LIBRARY`, set by the Makefile); `tests/openvino_fallback.rs` covers a
//! stock ONNX Runtime.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{dice, fixture, two_click_mask};
use sam3d::{load_runtime, Coord, Device, Model, ModelOptions, Runtime, Segmenter, Volume};

fn runtime() -> Runtime {
    let lib = std::env::var_os("SAM3D_ORT_OPENVINO_LIBRARY").expect(
        "SAM3D_ORT_OPENVINO_LIBRARY: the ONNX Runtime built with OpenVINO (`make ort-openvino`; \
         `make test-rust` sets it)",
    );
    let rt = load_runtime(Some(Path::new(&lib))).unwrap();
    assert!(
        rt.has_built_in_openvino(),
        "{} has no OpenVINO provider",
        rt.path().display()
    );
    rt
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The bf16 flags as the kernel lists them (what `lscpu` prints), read here rather than through
/// the library so the test checks the library's reading.
fn cpu_multiplies_bf16() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    flags
        .split_whitespace()
        .any(|f| f == "amx_bf16" || f == "avx512_bf16")
}

fn open(rt: &Runtime, package: &Path, device: Device, bf16: bool) -> Arc<Model> {
    let opts = ModelOptions {
        device,
        threads: 1,
        bf16,
        ..Default::default()
    };
    Arc::new(Model::open(rt, package, &opts).unwrap())
}

/// The demo model on the sample CT's lesion, one click, the package's own refinements.
fn demo_mask(m: Arc<Model>) -> Vec<u8> {
    let ct: Arc<Volume> =
        Arc::new(sam3d::read_nifti(&repo("examples/data/sample_ct_lesion.nii.gz")).unwrap());
    let mut s = Segmenter::new(m, ct).unwrap();
    let o = s.add_object();
    s.click(o, [95.0, 96.0, 11.0], Coord::Ijk, &mut |_, _| {})
        .unwrap();
    s.mask_vec(o).unwrap()
}

#[test]
fn fp32_on_openvino_gives_the_cpu_providers_masks() {
    let rt = runtime();
    for (package, mask) in [
        (fixture("tiny-orient"), two_click_mask as fn(_) -> _),
        (repo("models/demo-lesion"), demo_mask),
    ] {
        let ov = open(&rt, &package, Device::OpenVino, false);
        assert_eq!(ov.provider, "OpenVINO fp32", "{}", ov.provider_note);
        // the tiny fixture's encoder has ONNX Runtime's own attention nodes (the demo's graphs have
        // only standard operators): the note says so and names the variant that OpenVINO runs whole
        let contrib = package.ends_with("tiny-orient");
        assert_eq!(
            ov.provider_note.contains("standard-operator variant"),
            contrib,
            "{}",
            ov.provider_note
        );
        if !contrib {
            assert_eq!(ov.provider_note, "");
        }
        let (got, want) = (mask(ov), mask(open(&rt, &package, Device::Cpu, false)));
        assert!(
            want.iter().any(|v| *v != 0),
            "{}: empty mask",
            package.display()
        );
        let d = dice(&got, &want);
        assert!(
            d >= 0.999,
            "{}: Dice {d:.5} against the CPU provider",
            package.display()
        );
    }
}

#[test]
fn bf16_runs_exactly_where_the_cpu_multiplies_bf16() {
    let rt = runtime();
    let demo = repo("models/demo-lesion");
    let bf16 = open(&rt, &demo, Device::OpenVino, true);
    if cpu_multiplies_bf16() {
        assert_eq!(bf16.provider, "OpenVINO bf16", "{}", bf16.provider_note);
        assert_eq!(bf16.provider_note, "");
        let fp32 = demo_mask(open(&rt, &demo, Device::OpenVino, false));
        let d = dice(&demo_mask(bf16), &fp32);
        assert!(
            d >= 0.99,
            "bf16 against fp32 on the demo lesion: Dice {d:.5}"
        );
    } else {
        assert_eq!(bf16.provider, "OpenVINO fp32");
        assert!(
            bf16.provider_note
                .contains("neither AMX-BF16 nor AVX512-BF16"),
            "{}",
            bf16.provider_note
        );
    }
}

#[test]
fn the_cache_folder_keeps_compiled_models_and_must_be_a_folder() {
    let rt = runtime();
    let tiny = fixture("tiny-orient");
    let cache = std::env::temp_dir().join(format!("sam3d-ov-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let opts = ModelOptions {
        device: Device::OpenVino,
        threads: 1,
        cache_dir: Some(cache.join("nested")),
        ..Default::default()
    };
    let first = two_click_mask(Arc::new(Model::open(&rt, &tiny, &opts).unwrap()));
    let blobs = std::fs::read_dir(cache.join("nested")).unwrap().count();
    assert!(
        blobs >= 2,
        "{blobs} compiled graphs in the cache, want encoder and decoder"
    );
    // a second open reads them back and computes the same mask
    let again = Model::open(&rt, &tiny, &opts).unwrap();
    assert_eq!(again.provider, "OpenVINO fp32");
    assert_eq!(two_click_mask(Arc::new(again)), first);
    // a file where the folder should be: an error naming it, not a fallback
    let file = cache.join("file");
    std::fs::write(&file, b"x").unwrap();
    let bad = ModelOptions {
        cache_dir: Some(file.join("sub")),
        ..opts
    };
    let e = Model::open(&rt, &tiny, &bad)
        .err()
        .expect("a cache under a file");
    assert_eq!(e.status, sam3d::Sam3dStatus::Io, "{e}");
    assert!(e.to_string().contains("cache"), "{e}");
    let _ = std::fs::remove_dir_all(&cache);
}
