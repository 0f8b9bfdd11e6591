"""The int8 package variant (`quantize.py`): a valid package whose weight MatMuls are int8 and whose
probabilities stay close to the fp32 package's."""
import os

import numpy as np
import onnx

from sam3d_onnx.package import read_manifest
from sam3d_onnx.quantize import compare, quantize_package, weight_matmuls

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")


def test_int8_package_is_valid_and_close_to_fp32(tmp_path):
    out = str(tmp_path / "tiny-int8")
    m = quantize_package(TINY, out)
    again = read_manifest(out)                      # hashes verified
    assert again["precision"] == {"encoder": "int8-dynamic", "decoder": "fp32"}
    assert again["quantised_from"]["encoder"] == read_manifest(TINY)["graphs"]["encoder"]["sha256"]
    enc = onnx.load(os.path.join(out, "encoder.onnx"))
    ops = {n.op_type for n in enc.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    weights, others = weight_matmuls(enc)
    assert weights == []                            # every weight MatMul was quantised
    assert len(others) == m["quantisation"]["encoder"]["fp32_matmuls"] > 0   # attention stays fp32
    rng = np.random.default_rng(0)
    crops = [rng.standard_normal((1, 1, 32, 32, 32)).astype(np.float32) for _ in range(3)]
    clicks = [np.full((1, 1, 3), 16.0, np.float32) for _ in crops]
    res = compare(TINY, out, crops, clicks, threads=1)
    assert 0 < res["max_abs"] < 0.2, res["max_abs"]
    assert res["dice_mean"] > 0.8, res["dice_mean"]
    assert not any(f.startswith(".int8-") for f in os.listdir(tmp_path))   # no temporary left behind
