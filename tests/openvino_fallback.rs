//! The OpenVINO device with a stock ONNX Runtime (no OpenVINO built in): on an Intel CPU with the
//! plugin beside ONNX Runtime (`make ort ORT_OPENVINO=1`), both graphs on OpenVINO, fp32 matching
//! the CPU provider and bf16 only where the CPU multiplies bf16; anywhere else the CPU provider,
//! with the reason, and the CPU's masks. One test: the plugin is registered once per process.
//! (`tests/openvino.rs` runs the ONNX Runtime built with OpenVINO.)

mod common;

use std::sync::Arc;

use common::{dice, fixture, model, two_click_mask};
use sam3d::{load_runtime, Device, Model, ModelOptions};

#[test]
fn openvino_runs_where_it_can_and_says_why_where_it_cannot() {
    let rt = load_runtime(None).unwrap();
    if rt.has_built_in_openvino() {
        // `make test ORT_FLAVOR=openvino`: tests/openvino.rs covers that runtime
        eprintln!(
            "skipped: {} has OpenVINO built in; this test is for a stock ONNX Runtime",
            rt.path().display()
        );
        return;
    }
    let want = two_click_mask(model("tiny-orient"));
    let intel = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("GenuineIntel"));
    let plugin = rt.openvino_plugin();
    let cache = std::env::temp_dir().join(format!("sam3d-openvino-cache-{}", std::process::id()));
    for bf16 in [false, true] {
        let opts = ModelOptions {
            device: Device::OpenVino,
            threads: 1,
            bf16,
            cache_dir: Some(cache.clone()),
            ..Default::default()
        };
        let m = Arc::new(Model::open(&rt, &fixture("tiny-orient"), &opts).unwrap());
        let (provider, note) = (m.provider.clone(), m.provider_note.clone());
        match (&plugin, intel) {
            (Err(why), _) => {
                assert_eq!(provider, "CPU");
                assert!(
                    note.starts_with("OpenVINO unavailable, running on CPU: ")
                        && note.contains("no OpenVINO provider built in")
                        && note.contains(why.as_str())
                        && why.contains("not installed"),
                    "{note}"
                );
            }
            (Ok(_), false) => {
                assert_eq!(provider, "CPU");
                assert!(note.contains("offers no device for this CPU"), "{note}");
            }
            (Ok(_), true) => {
                // bf16 only where the CPU has it, and said so where it has not
                let has = sam3d::internals::cpu_has_bf16();
                let precision = if bf16 && has { "bf16" } else { "fp32" };
                assert_eq!(provider, format!("OpenVINO {precision}"), "{note}");
                assert_eq!(
                    note.contains("neither AMX-BF16 nor AVX512-BF16"),
                    bf16 && !has,
                    "{note}"
                );
            }
        }
        let got = two_click_mask(m);
        if provider == "CPU" {
            assert_eq!(got, want, "the fallback changed the mask");
        } else {
            let d = dice(&got, &want);
            let bar = if provider.ends_with("fp32") {
                0.999
            } else {
                0.99
            };
            assert!(d >= bar, "{provider}: Dice {d:.5} against the CPU provider");
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
}
