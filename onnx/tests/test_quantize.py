"""The int8 package variant (`quantize.py`): a valid package whose weight MatMuls are int8 and whose
probabilities stay close to the fp32 package's."""
import os

import numpy as np
import onnx
import pytest

from sam3d_onnx.export.fp16 import drop_repeated_nodes
from sam3d_onnx.export.int8 import int8_convs, weight_matmuls
from sam3d_onnx.export.package import read_manifest
from sam3d_onnx.export.quantize import compare, quantize_package

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")


def compare_on_random_crops(variant: str, seed: int) -> dict:
    """`compare` of a variant of the tiny fixture with it on three random crops, clicked at the centre."""
    rng = np.random.default_rng(seed)
    crops = [rng.standard_normal((1, 1, 32, 32, 32)).astype(np.float32) for _ in range(3)]
    clicks = [np.full((1, 1, 3), 16.0, np.float32) for _ in crops]
    return compare(TINY, variant, crops, clicks, threads=1)


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
    # the 3x3x3 convolutions too (the tiny fixture: 4 necks, 3 decoder heads with 2 each); the
    # one-channel image-level conv, the 1x1 and the depth-wise ones stay Conv
    assert m["quantisation"]["encoder"]["int8_convs"] == 10
    convs = [n for n in enc.graph.node if n.op_type == "Conv"]
    fp32 = onnx.load(os.path.join(TINY, "encoder.onnx"))
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32.graph.node) - 10
    res = compare_on_random_crops(out, seed=0)
    assert 0 < res["max_abs"] < 0.2, res["max_abs"]
    assert res["dice_mean"] > 0.8, res["dice_mean"]
    assert not any(f.startswith(".int8-") for f in os.listdir(tmp_path))   # no temporary left behind


def conv_model(w, b, **attrs):
    """One Conv over a (1, Ci, 5, 6, 7) input, its weight and bias as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    ci = w.shape[1]
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if b is not None else []), ["y"], name="conv", **attrs)
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, 5, 6, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_convs_equal_the_convolution_when_nothing_needs_rounding():
    """int8_convs on values that quantise exactly: weights integers with |w| max 127 in every output
    channel (scale 1), the input integers from -100 to 155 (DynamicQuantizeLinear: scale 1, zero point
    100, so the padding is the zero point, not 0). Then the rewrite is an integer convolution, equal to
    the fp32 Conv's (sums below 2^24 are exact in float32): wrong tap order, channel order, padding or
    scale would show."""
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (4, 8, 3, 3, 3)).astype(np.float32)
    w[np.arange(4), rng.integers(0, 8, 4), 1, 2, 0] = [127, -127, 127, -127]
    b = rng.standard_normal(4).astype(np.float32)
    x = rng.integers(-100, 156, (1, 8, 5, 6, 7)).astype(np.float32)
    x.flat[:2] = [-100, 155]
    attrs = dict(kernel_shape=[3, 3, 3], pads=[1] * 6)
    ref = ort.InferenceSession(conv_model(w, b, **attrs).SerializeToString(), providers=["CPUExecutionProvider"])
    rewritten = conv_model(w, b, **attrs)
    assert int8_convs(rewritten) == 1
    assert "Conv" not in {n.op_type for n in rewritten.graph.node}
    assert "w" not in {i.name for i in rewritten.graph.initializer}      # the fp32 weight is gone
    got = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    want = ref.run(None, {"x": x})[0]
    assert want.shape == (1, 4, 5, 6, 7)
    np.testing.assert_array_equal(got.run(None, {"x": x})[0], want)
    # on values that do need rounding: close (per-tensor uint8 input, int8 weights)
    xr = rng.standard_normal(x.shape).astype(np.float32)
    wr = rng.standard_normal(w.shape).astype(np.float32)
    rounded = conv_model(wr, None, **attrs)
    int8_convs(rounded)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xr})[0]
    want = run(conv_model(wr, None, **attrs))
    err = run(rounded) - want
    assert 0 < np.abs(err).max() and np.sqrt((err ** 2).mean() / (want ** 2).mean()) < 0.03


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3, 3], pads=[1] * 6, strides=[2, 2, 2]),
                                   dict(kernel_shape=[3, 3, 3], pads=[0] * 6),
                                   dict(kernel_shape=[3, 3, 3], pads=[1] * 6, group=2)])
def test_int8_convs_leave_other_convolutions_alone(attrs):
    w = np.ones((4, 8 // attrs.get("group", 1), 3, 3, 3), np.float32)
    model = conv_model(w, None, **attrs)
    assert int8_convs(model) == 0 and [n.op_type for n in model.graph.node] == ["Conv"]


def test_fp16_package_keeps_the_interface_and_stays_close_to_fp32(tmp_path):
    out = str(tmp_path / "tiny-fp16")
    m = quantize_package(TINY, out, graphs=("encoder", "decoder"), precision="fp16")
    again = read_manifest(out)                      # hashes verified
    assert again["precision"] == {"encoder": "fp16", "decoder": "fp16"} and again["name"].endswith("-fp16")
    for g in ("encoder", "decoder"):
        model = onnx.load(os.path.join(out, f"{g}.onnx"))
        ref = onnx.load(os.path.join(TINY, f"{g}.onnx"))
        # the graph interface of the package contract: same names, float32 in and out
        assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == \
            [(i.name, i.type.tensor_type.elem_type) for i in ref.graph.input]
        assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == \
            [(o.name, o.type.tensor_type.elem_type) for o in ref.graph.output]
        types = {t.data_type for t in model.graph.initializer if len(t.dims) >= 2}
        assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types   # int/bool stay
        assert m["quantisation"][g]["casts"] > 0
    res = compare_on_random_crops(out, seed=1)
    assert 0 < res["max_abs"] < 0.02, res["max_abs"]
    assert res["dice_mean"] > 0.97, res["dice_mean"]


def test_repeated_nodes_are_dropped_so_onnx_runtime_loads_the_graph():
    """What ONNX Runtime 1.30's float16 converter writes: one Cast node three times."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cast = helper.make_node("Cast", ["x"], ["y"], name="x_cast_to_fp32_node", to=TensorProto.FLOAT)
    graph = helper.make_graph([cast, cast, cast], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(Exception, match="same node name"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert drop_repeated_nodes(model.graph) == 2
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = s.run(None, {"x": np.array([1.5, -2.0], np.float16)})[0]
    assert out.dtype == np.float32 and out.tolist() == [1.5, -2.0]
