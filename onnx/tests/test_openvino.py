"""ONNX Runtime's OpenVINO provider (fp32 and bf16, the engine's settings) against its CPU provider,
on the demo model and the shipped sample (`python -m sam3d_onnx precision`). The OpenVINO build runs
in a subprocess (ONNX Runtime cannot be imported twice under one name): the tests marked `openvino`
skip unless SAM3D_ORT_OPENVINO_PYTHONPATH names its folder (`make test-python` sets it)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import openvino_env
from sam3d_onnx.export.package import PROVIDER_NAMES, cpu_has_bf16, execution_providers

ONNX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(os.path.dirname(ONNX_DIR), "models", "demo-lesion")


def _precision(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sam3d_onnx", "precision", *args], cwd=ONNX_DIR, env=env,
                          capture_output=True, text=True, timeout=600)


def test_openvino_settings_are_the_engines():
    assert execution_providers("cpu", 2) == ["CPUExecutionProvider"]
    for name, hint in (("openvino-fp32", "f32"), ("openvino-bf16", "bf16")):
        ((ep, opts),) = execution_providers(name, 2)
        assert ep == "OpenVINOExecutionProvider"
        assert opts["device_type"] == "CPU" and opts["num_of_threads"] == "2"
        # no `precision` key: on the CPU device it takes only FP32 or ACCURACY
        assert "precision" not in opts
        assert json.loads(opts["load_config"]) == {
            "CPU": {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "CPU_DENORMALS_OPTIMIZATION": "YES",
                    "INFERENCE_NUM_THREADS": "2"}}
    assert set(PROVIDER_NAMES) == {"cpu", "openvino-fp32", "openvino-bf16"}
    with pytest.raises(ValueError):
        execution_providers("openvino-fp16", 2)


def test_precision_needs_the_openvino_build():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)          # the stock onnxruntime of the environment
    r = _precision(DEMO, "--sets", "sample", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "has no OpenVINOExecutionProvider" in r.stderr and "PYTHONPATH" in r.stderr, r.stderr


@pytest.mark.openvino
def test_openvino_matches_the_cpu_provider_on_the_demo_model(tmp_path):
    env = openvino_env()
    out = tmp_path / "precision.json"
    r = _precision(DEMO, "--sets", "sample", "--json", str(out), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        res = json.load(f)
    assert res["model"] == "demo-lesion"
    (row,) = res["rows"]
    print(f"\ndemo sample: Dice OpenVINO fp32/CPU {row['dice_fp32_cpu']:.6f}, bf16/fp32 {row['dice_bf16_fp32']:.6f}, "
          f"max |dp| fp32/CPU {row['maxdp_fp32_cpu']:.1e}, bf16/fp32 {row['maxdp_bf16_fp32']:.1e}, "
          f"Dice vs truth {row['truth_cpu']:.3f} / {row['truth_fp32']:.3f} / {row['truth_bf16']:.3f}")
    assert row["voxels_cpu"] > 0 and row["truth_cpu"] > 0.5, row     # a mask worth comparing
    assert row["dice_fp32_cpu"] >= 0.999, row
    assert row["maxdp_fp32_cpu"] <= 1e-4, row                         # fp32 differs in summation order only
    assert res["cpu_bf16"] == cpu_has_bf16()
    if res["cpu_bf16"]:
        # bf16 (8-bit mantissa) moves p by ~1e-2 on this model; only voxels near the threshold flip
        assert row["dice_bf16_fp32"] >= 0.99, row
        # and bf16 really ran: fp32 differs from the CPU provider by ~1e-6, bf16 by ~1e-2
        assert row["maxdp_bf16_fp32"] > 1e-4, row
