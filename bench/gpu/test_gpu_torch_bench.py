"""The GPU script (`torch_bench.py`) is run on a CPU with the tiny configuration, so that the code a lent
GPU machine runs once is known to work and to measure what it claims."""
import math

import torch_bench


def test_gpu_script_runs_on_cpu_and_measures_the_bf16_difference():
    rec = torch_bench.run("tiny", "cpu", repeat=1)
    assert rec["engine_way_max_abs_diff"] < 1e-5          # cached features = the official whole pass
    for key in ("reference_click_s", "encoder_fp32_s", "follow_up_fp32_s"):
        assert rec[key] > 0
    assert math.isnan(rec["reference_peak_mb"])           # no device memory on the CPU
    bf = rec["bf16"]
    assert 0 < bf["max_abs_prob_diff"] < 0.5               # bf16 differs, but not wildly
    assert 0.0 <= bf["dice_vs_fp32"] <= 1.0
    assert "fp16" not in rec                                # CPU autocast is bf16 only
    assert rec["onnxruntime_cuda"].startswith("unmeasured")
