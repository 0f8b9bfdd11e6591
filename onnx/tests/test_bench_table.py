"""The benchmark's printed table: one row per configuration and stage, OpenVINO rows labelled with the
provider that actually ran (a fallback shows as the CPU's)."""
from sam3d_onnx.bench.run import print_table


def config(provider="CPU"):
    e = {"model_open_s": 1.0, "nifti_load_s": 1.0, "resample_s": 0.1, "encode_s": 40.0, "encode_first_s": 42.0,
         "encode_later_s": 38.0, "first_click_s": 43.0, "follow_up_click_s": 1.1, "paste_s": 0.1,
         "peak_rss_mb": 3000.0, "peak_rss_first_session_mb": 2900.0, "repeat": 2, "provider": provider}
    r = {"model_build_s": 2.0, "nifti_load_s": 1.0, "preprocess_s": 3.0, "encoder_s": 130.0,
         "first_click_s": 140.0, "follow_up_click_s": 140.0, "peak_rss_mb": 5000.0}
    return {"engine": e, "reference": r, "floor_encoder_s": 30.0, "floor_click_s": 0.5, "encoder_gflop": 2000.0}


def test_each_stage_is_printed_once_per_configuration(capsys):
    rec = {"machine": "x86_64", "cpus": 2, "threads": 2, "ct": [512, 512, 300], "fp32_matmul_gflops": 70.0,
           "fp32_matmul_gflops_range": [60.0, 80.0], "cpu_model": "test CPU", "bf16_flags": ["avx512_bf16"],
           "ort": "/ort/libonnxruntime.so", "ort_openvino": "/ov/libonnxruntime.so",
           "product_rates": {"torch_4096": 70.0, "ort_4096": 120.0, "torch_vit_mlp": 60.0, "ort_vit_mlp": 110.0},
           "configs": {"paper": config(), "paper-int8": config(), "paper-openvino": config("OpenVINO fp32"),
                       "paper-openvino-bf16": config("CPU")}}
    print_table(rec)
    rows = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| paper")]
    keys = [tuple(r) for r in rows]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    labels = {k[0] for k in keys}
    assert labels == {"| paper", "| paper-int8", "| paper-openvino [OpenVINO fp32]", "| paper-openvino-bf16 [CPU]"}
    # the runtime-rate row belongs to the fp32 CPU configuration only
    assert sum("ViT-product rate" in k[1] for k in keys) == 1
