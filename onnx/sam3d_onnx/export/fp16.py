"""fp16 copy of one graph file (ONNX Runtime's float16 converter, inputs and outputs kept float32).
Packages: `quantize.quantize_package`."""
from __future__ import annotations


def drop_repeated_nodes(graph) -> int:
    """Remove nodes that repeat an earlier node exactly (same name, op, inputs, outputs, attributes).
    ONNX Runtime 1.30's float16 converter inserts the Cast of a graph output once per consumer, all
    three the same node, which ONNX Runtime then rejects ("two nodes with same node name"); 1.32's does
    not. Returns how many were removed."""
    seen, keep = set(), []
    for n in graph.node:
        key = n.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            keep.append(n)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
    return removed


def half_graph(src: str, dst: str) -> dict:
    """fp16 copy of one graph file (external data is read; the result is one file: fp16 halves it)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
    drop_repeated_nodes(model.graph)
    onnx.save(model, dst)
    ops = [n.op_type for n in model.graph.node]
    return {"fp16_nodes": len(ops) - ops.count("Cast"), "casts": ops.count("Cast")}
