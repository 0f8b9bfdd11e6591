"""int8 rewrites of one graph file: ONNX Runtime's dynamic quantisation of the weight MatMuls, and the
3x3x3 convolutions as int8 im2col products (`int8_convs`). Packages: `quantize.quantize_package`."""
from __future__ import annotations

import numpy as np


def weight_matmuls(model) -> tuple[list[str], list[str]]:
    """(names of MatMul nodes whose second input is a constant 2-D weight matrix, names of the other
    MatMul nodes). Constant 3-D operands (the per-position relative-position tables, when the export
    folded them) stay fp32: ONNX Runtime's int8 MatMul takes per-channel scales of 2-D weights only."""
    dims = {i.name: len(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    dims[n.output[0]] = len(a.t.dims)
    weights, others = [], []
    for n in model.graph.node:
        if n.op_type == "MatMul":
            (weights if dims.get(n.input[1]) == 2 else others).append(n.name)
    return weights, others


def quantize_graph(src: str, dst: str, convs: bool = True) -> dict:
    """Dynamic int8 quantisation of the weight MatMuls of one graph file (external data is read), and
    with `convs` its 3x3x3 convolutions (`int8_convs`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(src)
    weights, others = weight_matmuls(model)
    if not weights:
        raise ValueError(f"{src}: no MatMul with a constant weight to quantise")
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                     nodes_to_quantize=weights, nodes_to_exclude=others,
                     extra_options={"MatMulConstBOnly": True})
    record = {"quantised_matmuls": len(weights), "fp32_matmuls": len(others), "int8_convs": 0}
    if convs:
        model = onnx.load(dst)
        record["int8_convs"] = int8_convs(model)
        onnx.save(model, dst)
    return record


IM2COL_MIN_CHANNELS = 8   # the one-channel image-level conv stays fp32 (27 products per voxel: no gain)
INT64_MAX = 2 ** 63 - 1


def im2col_candidate(node, inits) -> bool:
    """A Conv that `int8_convs` rewrites: constant 5-D weight with a 3x3x3 kernel, one group, stride
    1, dilation 1, padding 1 on every side (the necks' and the decoder heads' convolutions)."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in inits:
        return False
    dims = list(inits[node.input[1]].dims)
    if len(dims) != 5 or dims[2:] != [3, 3, 3] or dims[1] < IM2COL_MIN_CHANNELS:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (at.get("group", 1) == 1 and list(at.get("strides", [1, 1, 1])) == [1, 1, 1]
            and list(at.get("dilations", [1, 1, 1])) == [1, 1, 1] and list(at.get("pads", [])) == [1] * 6
            and at.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def int8_convs(model) -> int:
    """Rewrite the 3x3x3 convolutions (`im2col_candidate`) of a graph as int8 products, in place;
    returns how many. ONNX Runtime's ConvInteger is slower than its fp32 Conv here, so each becomes:
    the input quantised once per tensor (DynamicQuantizeLinear, uint8), moved channels-last, padded
    with its zero point (= padding with 0), its 27 shifted views concatenated along the channels
    (im2col, in uint8: a quarter of the fp32 copy), one MatMulInteger with the weight as (27 Ci, Co)
    int8, per output channel symmetric, and the int32 result scaled back (ONNX Runtime fuses
    MatMulInteger + Cast + Mul into MatMulIntegerToFloat), plus the bias, moved channels-first.
    At paper size the four neck convs (256 -> 256, 32^3) take about half their fp32 time."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    shared = {"im2col_pads": np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 0], np.int64),
              "im2col_axes": np.array([1, 2, 3], np.int64), "im2col_wzero": np.array(0, np.int8)}
    taps = [(a, b, c) for a in range(3) for b in range(3) for c in range(3)]
    for t in taps:   # tap t of a padded axis: [t, n + t), n + 2 the padded length
        shared["im2col_start_%d%d%d" % t] = np.array(t, np.int64)
        shared["im2col_end_%d%d%d" % t] = np.array([INT64_MAX if k == 2 else k - 2 for k in t], np.int64)
    nodes, added, count = [], [], 0
    for n in g.node:
        if not im2col_candidate(n, inits):
            nodes.append(n)
            continue
        count += 1
        p = n.name or f"conv{count}"
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)      # (Co, Ci, 3, 3, 3)
        co, ci = w.shape[:2]
        # rows (tap, input channel), the order of the concatenated views below
        wt = w.transpose(2, 3, 4, 1, 0).reshape(27 * ci, co)
        scale = np.abs(wt).max(0) / 127.0
        scale[scale == 0] = 1.0
        added += [numpy_helper.from_array(np.clip(np.rint(wt / scale), -127, 127).astype(np.int8), p + "_wq"),
                  numpy_helper.from_array(scale.astype(np.float32), p + "_wscale")]
        x = n.input[0]
        nodes += [helper.make_node("DynamicQuantizeLinear", [x], [p + "_xq", p + "_xs", p + "_xz"], name=p + "_quant"),
                  helper.make_node("Transpose", [p + "_xq"], [p + "_xt"], perm=[0, 2, 3, 4, 1], name=p + "_last"),
                  helper.make_node("Pad", [p + "_xt", "im2col_pads", p + "_xz"], [p + "_xp"], name=p + "_pad")]
        views = []
        for t in taps:
            tag = "%d%d%d" % t
            nodes.append(helper.make_node("Slice", [p + "_xp", "im2col_start_" + tag, "im2col_end_" + tag,
                                                    "im2col_axes"], [p + "_v" + tag], name=p + "_view" + tag))
            views.append(p + "_v" + tag)
        nodes += [helper.make_node("Concat", views, [p + "_cols"], axis=-1, name=p + "_im2col"),
                  helper.make_node("MatMulInteger", [p + "_cols", p + "_wq", p + "_xz", "im2col_wzero"],
                                   [p + "_acc"], name=p + "_matmul"),
                  helper.make_node("Cast", [p + "_acc"], [p + "_accf"], to=TensorProto.FLOAT, name=p + "_cast"),
                  helper.make_node("Mul", [p + "_xs", p + "_wscale"], [p + "_scale"], name=p + "_scales"),
                  helper.make_node("Mul", [p + "_accf", p + "_scale"], [p + "_y"], name=p + "_dequant")]
        y = p + "_y"
        if len(n.input) > 2 and n.input[2]:
            nodes.append(helper.make_node("Add", [y, n.input[2]], [p + "_yb"], name=p + "_bias"))
            y = p + "_yb"
        nodes.append(helper.make_node("Transpose", [y], [n.output[0]], perm=[0, 4, 1, 2, 3], name=p + "_first"))
    if count:
        used = {i for n in nodes for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep + added + [numpy_helper.from_array(v, k) for k, v in shared.items()])
        del g.node[:]
        g.node.extend(nodes)
    return count
