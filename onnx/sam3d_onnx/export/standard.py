"""Standard-operator copy of one graph file: ONNX Runtime's own `com.microsoft` nodes rewritten as
ONNX operators, for runtimes that do not take them. Packages: `quantize.quantize_package`
(`--precision standard`).

The exporter writes attention as `com.microsoft.MultiHeadAttention` and the MLP's first GELU as
`com.microsoft.BiasGelu` because ONNX Runtime's CPU kernels for them are faster (export/graphs.py).
OpenVINO takes neither: ONNX Runtime then runs those nodes on its CPU provider and hands OpenVINO the
pieces between them, which at paper size cost a slower first run and about three times the memory.
The same math in standard operators runs whole on OpenVINO, which fuses the attention by itself.

    MultiHeadAttention(q, k, v; num_heads=H, scale=s), q/k (B, T, H*dk), v (B, T, H*dv):
        softmax(s * q_h . k_h^T) . v_h per head h, heads concatenated -> (B, T, H*dv)
    BiasGelu(x, b) = Gelu(x + b)   (erf form)
"""
from __future__ import annotations

import math


def _mha(node, helper, numpy_helper, np):
    """The nodes and constants that compute one 3-input MultiHeadAttention."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) < 3 or not all(node.input[:3]) or any(node.input[3:]) or len(node.output) != 1 \
            or set(attrs) - {"num_heads", "scale"}:
        raise ValueError(f"{node.name}: only MultiHeadAttention(query, key, value; num_heads, scale) is rewritten")
    heads, scale = int(attrs["num_heads"]), attrs.get("scale")
    q, k, v = node.input[:3]
    p = f"{node.name or 'mha_' + node.output[0]}_std"
    split = numpy_helper.from_array(np.array([0, 0, heads, -1], np.int64), f"{p}_heads")   # (B, T, H, d)
    merge = numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{p}_merge")         # (B, T, H*d)
    inits = [split, merge]
    nodes = [
        helper.make_node("Reshape", [q, split.name], [f"{p}_q4"]),
        helper.make_node("Transpose", [f"{p}_q4"], [f"{p}_qh"], perm=[0, 2, 1, 3]),      # (B, H, T, dk)
        helper.make_node("Reshape", [k, split.name], [f"{p}_k4"]),
        helper.make_node("Transpose", [f"{p}_k4"], [f"{p}_kt"], perm=[0, 2, 3, 1]),      # (B, H, dk, T)
        helper.make_node("Reshape", [v, split.name], [f"{p}_v4"]),
        helper.make_node("Transpose", [f"{p}_v4"], [f"{p}_vh"], perm=[0, 2, 1, 3]),      # (B, H, T, dv)
        helper.make_node("MatMul", [f"{p}_qh", f"{p}_kt"], [f"{p}_logits"]),
    ]
    logits = f"{p}_logits"
    # scale absent: ONNX Runtime's default 1/sqrt(dk), which needs dk; the exporter always sets it
    if scale is None:
        raise ValueError(f"{node.name}: MultiHeadAttention without a scale attribute is not rewritten")
    if not math.isclose(scale, 1.0):
        s = numpy_helper.from_array(np.array(scale, np.float32), f"{p}_scale")
        inits.append(s)
        nodes.append(helper.make_node("Mul", [logits, s.name], [f"{p}_scaled"]))
        logits = f"{p}_scaled"
    nodes += [
        helper.make_node("Softmax", [logits], [f"{p}_attn"], axis=-1),
        helper.make_node("MatMul", [f"{p}_attn", f"{p}_vh"], [f"{p}_oh"]),                # (B, H, T, dv)
        helper.make_node("Transpose", [f"{p}_oh"], [f"{p}_o4"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", [f"{p}_o4", merge.name], [node.output[0]]),
    ]
    return nodes, inits


def _bias_gelu(node, helper):
    x, b = node.input[:2]
    p = f"{node.name or 'bias_gelu_' + node.output[0]}_std"
    return [helper.make_node("Add", [x, b], [f"{p}_sum"]),
            helper.make_node("Gelu", [f"{p}_sum"], [node.output[0]])], []


def standard_graph(src: str, dst: str) -> dict:
    """Write `dst`: `src` with its MultiHeadAttention and BiasGelu nodes as standard operators (one
    file, external data folded in). Other `com.microsoft` nodes: ValueError (nothing written)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(src)
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opset.get("ai.onnx", 0) < 20:
        raise ValueError(f"{src}: opset {opset.get('ai.onnx')} has no Gelu (20 needed)")
    counts = {"MultiHeadAttention": 0, "BiasGelu": 0}
    out_nodes, new_inits = [], []
    for n in model.graph.node:
        if n.domain != "com.microsoft":
            out_nodes.append(n)
            continue
        if n.op_type == "MultiHeadAttention":
            nodes, inits = _mha(n, helper, numpy_helper, np)
        elif n.op_type == "BiasGelu":
            nodes, inits = _bias_gelu(n, helper)
        else:
            raise ValueError(f"{src}: no standard form for com.microsoft.{n.op_type} ({n.name})")
        counts[n.op_type] += 1
        out_nodes += nodes
        new_inits += inits
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    model.graph.initializer.extend(new_inits)
    keep = [o for o in model.opset_import if o.domain != "com.microsoft"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.checker.check_model(model)
    onnx.save_model(model, dst)
    return {"rewritten": counts}
