"""int8 and fp16 variants of a model package, and their accuracy against the fp32 package.

    python -m sam3d_onnx.quantize PKG OUT [--graphs encoder]          # write the int8 package
    python -m sam3d_onnx.quantize PKG OUT --precision fp16            # fp16 (for GPUs), both graphs
    python -m sam3d_onnx.quantize --compare PKG OUT --volume CT.nii.gz  # probabilities and masks

The encoder's weight MatMuls (qkv, proj, MLP, adapters: about 70 % of an encoding's FLOPs) become
ONNX Runtime's dynamic int8 quantisation (weights int8 per output channel, activations quantised per
tensor at run time), and so do its 3x3x3 convolutions (necks, decoder heads: `int8_convs`, an int8
im2col product; `--fp32-convs` keeps them). The package contract is unchanged (same inputs, outputs,
manifest), so the engine runs it like any package. The attention products (activation x activation),
the depth-wise and 1x1 convolutions and the decoder stay fp32.

fp16 (ONNX Runtime's float16 converter): every float weight and activation in fp16, the graphs' inputs
and outputs kept float32 (Casts at the edges), so the engine and the manifest's graph interface are
unchanged too. Meant for CUDA/TensorRT (tensor cores); on a CPU it runs, slower than fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from functools import partial

import numpy as np

from .package import publish, read_manifest, sha256_file


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
    The paper size's four neck convs (256 -> 256, 32^3) take about 0.26 s each instead of 0.5 s on
    2 cores."""
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


PRECISIONS = {"int8": ("int8-dynamic", quantize_graph,
                       "weight MatMuls quantised to int8 (ONNX Runtime dynamic quantisation, per-channel weights)"),
              "fp16": ("fp16", half_graph, "converted to fp16, inputs and outputs float32 (ONNX Runtime's float16 "
                                           "converter)")}


def quantize_package(pkg: str, out: str, graphs=("encoder",), precision: str = "int8", convs: bool = True) -> dict:
    """Write `out`: `pkg` with the named graphs quantised (int8; `convs`: their 3x3x3 convolutions too)
    or halved (fp16), the manifest's hashes and provenance updated. Written to a temporary folder next
    to `out` and renamed, so `out` is never half-written."""
    label, convert, what = PRECISIONS[precision]
    if precision == "int8":
        convert = partial(quantize_graph, convs=convs)
        if convs:
            what += ", 3x3x3 convolutions as int8 im2col products"
    manifest = read_manifest(pkg)
    quantised_from = {k: manifest["graphs"][k]["sha256"] for k in graphs}
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{precision}-", dir=parent)
    try:
        record = {}
        for key, g in manifest["graphs"].items():
            src = os.path.join(pkg, g["file"])
            if key in graphs:
                record[key] = convert(src, os.path.join(tmp, g["file"]))
                g["data_files"] = []
            else:
                for f in [g["file"]] + g["data_files"]:
                    shutil.copy2(os.path.join(pkg, f), os.path.join(tmp, f))
            g["sha256"] = {f: sha256_file(os.path.join(tmp, f)) for f in [g["file"]] + g["data_files"]}
        manifest["name"] = manifest["name"] + "-" + precision
        manifest["precision"] = {k: (label if k in graphs else "fp32") for k in manifest["graphs"]}
        manifest["provenance"] += f"; {'+'.join(graphs)} {what} by python -m sam3d_onnx.quantize"
        manifest["quantisation"] = record
        manifest["quantised_from"] = quantised_from
        publish(tmp, manifest, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def compare(fp32: str, variant: str, crops: list, clicks: list, threads: int = 2) -> dict:
    """Probabilities of the two packages on the same normalised crops (1,1,C,C,C) and clicks (1,N,3):
    max and mean |p_variant - p_fp32|, and the Dice of the masks at the manifest threshold."""
    from .reference_pipeline import Pipeline

    runs = [Pipeline(p, threads) for p in (fp32, variant)]
    thr = runs[0].manifest["threshold"]
    rows = []
    for crop, pts in zip(crops, clicks):
        probs = []
        for pipe in runs:
            f3, cls_partial = pipe.enc.run(None, {"crop": crop})
            probs.append(pipe.dec.run(None, {"f3": f3, "cls_partial": cls_partial, "points": pts})[0])
        a, b = (p > thr for p in probs)
        denom = int(a.sum()) + int(b.sum())
        rows.append({"max_abs": float(np.abs(probs[0] - probs[1]).max()),
                     "mean_abs": float(np.abs(probs[0] - probs[1]).mean()),
                     "dice": 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom,
                     "fp32_voxels": int(a.sum()), "variant_voxels": int(b.sum())})
    return {"crops": len(rows), "max_abs": max(r["max_abs"] for r in rows),
            "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
            "dice_mean": float(np.mean([r["dice"] for r in rows])),
            "dice_min": float(min(r["dice"] for r in rows)), "rows": rows}


def volume_crops(pkg: str, volume: str, n: int, seed: int = 0):
    """`n` crops of a CT, preprocessed by the package's contract (model frame, spacing, intensity),
    centred on random voxels above -300 HU (tissue), each with its centre as the click.
    "orient"-frame packages only (the shipped and benchmark packages are)."""
    from .dataset import crop_at, load_oriented, resample_image

    m = read_manifest(pkg, verify=False)
    if m["frame"]["mode"] != "orient":
        raise ValueError(f"{pkg}: --compare needs an \"orient\"-frame package")
    arr, spacing, _, _ = load_oriented(volume, m["frame"]["orientation"])
    arr = resample_image(arr, spacing, m["spacing_mm"])
    it = m["intensity"]
    norm = ((np.clip(arr, *it["clip"]) - it["mean"]) / it["std"]).astype(np.float32)
    no_label = np.zeros(norm.shape, np.uint8)
    c = m["architecture"]["crop"]
    rng = np.random.default_rng(seed)
    tissue = np.argwhere(arr > -300.0)
    crops, clicks = [], []
    for _ in range(n):
        centre = tissue[int(rng.integers(0, len(tissue)))]
        crops.append(crop_at(norm, no_label, centre - c // 2, c)[0][None, None])
        clicks.append(np.full((1, 1, 3), c / 2.0, np.float32))
    return crops, clicks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("out")
    ap.add_argument("--precision", choices=sorted(PRECISIONS), default="int8")
    ap.add_argument("--graphs", help="comma-separated: encoder, decoder (default: encoder for int8, both for fp16)")
    ap.add_argument("--compare", action="store_true", help="compare OUT (int8 or fp16) with PACKAGE (fp32) instead")
    ap.add_argument("--volume", help="CT (.nii.gz) whose crops --compare uses")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32-convs", action="store_true", help="int8: keep the 3x3x3 convolutions fp32")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.compare:
        if not args.volume:
            ap.error("--compare needs --volume")
        crops, clicks = volume_crops(args.package, args.volume, args.crops)
        res = compare(args.package, args.out, crops, clicks, args.threads)
        print(f"{res['crops']} crops: |p_variant - p_fp32| max {res['max_abs']:.4f} mean {res['mean_abs']:.5f}; "
              f"mask Dice variant vs fp32 mean {res['dice_mean']:.4f} min {res['dice_min']:.4f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    graphs = args.graphs or ("encoder" if args.precision == "int8" else "encoder,decoder")
    m = quantize_package(args.package, args.out, tuple(g for g in graphs.split(",") if g), args.precision,
                         convs=not args.fp32_convs)
    print(f"wrote {args.out}: {m['quantisation']}")


if __name__ == "__main__":
    main()
