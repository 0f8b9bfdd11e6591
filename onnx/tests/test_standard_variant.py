"""The standard-operator variant (`quantize --precision standard`): ONNX Runtime's MultiHeadAttention and
BiasGelu rewritten as ONNX operators compute what ONNX Runtime's own kernels compute, on a hand-built
graph (scale other than 1, two heads, key and value widths apart) and on the tiny fixture package."""
import json
import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sam3d_onnx.export.quantize import quantize_package
from sam3d_onnx.export.standard import standard_graph

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")


def domains(path):
    m = onnx.load(path, load_external_data=False)
    return {n.domain for n in m.graph.node} | {o.domain for o in m.opset_import}


def run(path, feeds):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def contrib_graph(path, scale):
    b, t, heads, dk, dv = 3, 5, 2, 4, 3
    nodes = [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["a"], domain="com.microsoft",
                              num_heads=heads, scale=scale, name="mha0"),
             helper.make_node("BiasGelu", ["a", "bias"], ["y"], domain="com.microsoft", name="gelu0")]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("q", TensorProto.FLOAT, [b, t, heads * dk]),
                           helper.make_tensor_value_info("k", TensorProto.FLOAT, [b, t, heads * dk]),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, [b, t, heads * dv])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, t, heads * dv])],
                          [helper.make_tensor("bias", TensorProto.FLOAT, [heads * dv],
                                              np.linspace(-1, 1, heads * dv).astype(np.float32))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(m, path)
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal((b, t, heads * (dv if n == "v" else dk))).astype(np.float32) for n in "qkv"}


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_rewritten_nodes_compute_what_onnx_runtime_computes(tmp_path, scale):
    src, dst = str(tmp_path / "c.onnx"), str(tmp_path / "s.onnx")
    feeds = contrib_graph(src, scale)
    rec = standard_graph(src, dst)
    assert rec == {"rewritten": {"MultiHeadAttention": 1, "BiasGelu": 1}}
    assert "com.microsoft" not in domains(dst)
    want, got = run(src, feeds)[0], run(dst, feeds)[0]
    assert np.abs(got - want).max() < 1e-5, np.abs(got - want).max()
    # and the attention itself against numpy (softmax over keys, per head)
    q, k, v = (feeds[n].reshape(3, 5, 2, -1).transpose(0, 2, 1, 3) for n in "qkv")
    logits = scale * q @ k.transpose(0, 1, 3, 2)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    a = ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(3, 5, -1)
    x = a + np.linspace(-1, 1, 6).astype(np.float32)
    erf = np.vectorize(math.erf)
    assert np.abs(got - 0.5 * x * (1 + erf(x / np.sqrt(2)))).max() < 1e-5


def test_an_operator_without_a_standard_form_is_refused(tmp_path):
    g = helper.make_graph([helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft")], "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    src = str(tmp_path / "c.onnx")
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20),
                                                        helper.make_opsetid("com.microsoft", 1)]), src)
    with pytest.raises(ValueError, match="FusedMatMul"):
        standard_graph(src, str(tmp_path / "s.onnx"))
    assert not os.path.exists(tmp_path / "s.onnx")


def test_the_tiny_package_variant_has_the_same_outputs(tmp_path):
    out = str(tmp_path / "std")
    m = quantize_package(TINY, out, graphs=("encoder", "decoder"), precision="standard")
    assert m["precision"] == {"encoder": "fp32", "decoder": "fp32"}
    assert m["quantisation"]["encoder"]["rewritten"]["MultiHeadAttention"] > 0
    with open(os.path.join(out, "sam3d-model.json")) as f:
        assert json.load(f)["name"].endswith("-standard")
    assert "com.microsoft" in domains(os.path.join(TINY, "encoder.onnx"))
    for g in ("encoder", "decoder"):
        assert "com.microsoft" not in domains(os.path.join(out, f"{g}.onnx"))
    c = m["architecture"]["crop"]
    crop = np.random.default_rng(1).standard_normal((1, 1, c, c, c)).astype(np.float32)
    want = run(os.path.join(TINY, "encoder.onnx"), {"crop": crop})
    got = run(os.path.join(out, "encoder.onnx"), {"crop": crop})
    for w, g in zip(want, got):
        assert np.abs(w - g).max() < 1e-5
    s = ort.InferenceSession(os.path.join(out, "decoder.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    feeds = dict(zip(names[:2], got))
    feeds["points"] = np.full((1, 1, 3), c / 2.0, np.float32)
    p_std = s.run(None, feeds)[0]
    p_ref = run(os.path.join(TINY, "decoder.onnx"), feeds)[0]
    assert np.abs(p_std - p_ref).max() < 1e-5
