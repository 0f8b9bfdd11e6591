"""An int8 variant of a model package, and its accuracy against the fp32 package it came from.

    python -m sam3d_onnx.quantize PKG OUT [--graphs encoder]          # write the int8 package
    python -m sam3d_onnx.quantize --compare PKG OUT --volume CT.nii.gz  # probabilities and masks

The encoder's weight MatMuls (qkv, proj, MLP, adapters: about 70 % of an encoding's FLOPs) become
ONNX Runtime's dynamic int8 quantisation (weights int8 per output channel, activations quantised per
tensor at run time): the package contract is unchanged (same inputs, outputs, manifest), so the engine
runs it like any package. The attention products (activation x activation), the convolutions and the
decoder stay fp32: quantising them costs accuracy for little time (measured: `make bench-int8`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

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


def quantize_graph(src: str, dst: str) -> dict:
    """Dynamic int8 quantisation of the weight MatMuls of one graph file (external data is read)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(src)
    weights, others = weight_matmuls(model)
    if not weights:
        raise ValueError(f"{src}: no MatMul with a constant weight to quantise")
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                     nodes_to_quantize=weights, nodes_to_exclude=others,
                     extra_options={"MatMulConstBOnly": True})
    return {"quantised_matmuls": len(weights), "fp32_matmuls": len(others)}


def quantize_package(pkg: str, out: str, graphs=("encoder",)) -> dict:
    """Write `out`: `pkg` with the named graphs quantised, the manifest's hashes and provenance updated.
    Written to a temporary folder next to `out` and renamed, so `out` is never half-written."""
    manifest = read_manifest(pkg)
    manifest_src = json.loads(json.dumps(manifest["graphs"]))
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".int8-", dir=parent)
    try:
        record = {}
        for key, g in manifest["graphs"].items():
            src = os.path.join(pkg, g["file"])
            if key in graphs:
                record[key] = quantize_graph(src, os.path.join(tmp, g["file"]))
                g["data_files"] = []
            else:
                for f in [g["file"]] + g["data_files"]:
                    shutil.copy2(os.path.join(pkg, f), os.path.join(tmp, f))
            g["sha256"] = {f: sha256_file(os.path.join(tmp, f)) for f in [g["file"]] + g["data_files"]}
        manifest["name"] = manifest["name"] + "-int8"
        manifest["precision"] = {k: ("int8-dynamic" if k in graphs else "fp32") for k in manifest["graphs"]}
        manifest["provenance"] += (f"; {'+'.join(graphs)} weight MatMuls quantised to int8 (ONNX Runtime dynamic "
                                   "quantisation, per-channel weights) by python -m sam3d_onnx.quantize")
        manifest["quantisation"] = record
        manifest["quantised_from"] = {k: manifest_src[k]["sha256"] for k in graphs}
        publish(tmp, manifest, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def sessions(pkg: str, threads: int):
    import onnxruntime as ort

    m = read_manifest(pkg, verify=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return [ort.InferenceSession(os.path.join(pkg, m["graphs"][k]["file"]), opts,
                                 providers=["CPUExecutionProvider"]) for k in ("encoder", "decoder")]


def compare(fp32: str, int8: str, crops: list, clicks: list, threads: int = 2) -> dict:
    """Probabilities of the two packages on the same normalised crops (1,1,C,C,C) and clicks (1,N,3):
    max and mean |p_int8 - p_fp32|, and the Dice of the masks at the manifest threshold."""
    thr = read_manifest(fp32, verify=False)["threshold"]
    runs = [sessions(p, threads) for p in (fp32, int8)]
    rows = []
    for crop, pts in zip(crops, clicks):
        probs = []
        for enc, dec in runs:
            f3, cls_partial = enc.run(None, {"crop": crop})
            probs.append(dec.run(None, {"f3": f3, "cls_partial": cls_partial, "points": pts})[0])
        a, b = (p > thr for p in probs)
        denom = int(a.sum()) + int(b.sum())
        rows.append({"max_abs": float(np.abs(probs[0] - probs[1]).max()),
                     "mean_abs": float(np.abs(probs[0] - probs[1]).mean()),
                     "dice": 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom,
                     "fp32_voxels": int(a.sum()), "int8_voxels": int(b.sum())})
    return {"crops": len(rows), "max_abs": max(r["max_abs"] for r in rows),
            "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
            "dice_mean": float(np.mean([r["dice"] for r in rows])),
            "dice_min": float(min(r["dice"] for r in rows)), "rows": rows}


def volume_crops(pkg: str, volume: str, n: int, seed: int = 0):
    """`n` crops of a CT, preprocessed by the package's contract (model frame, spacing, intensity),
    centred on random voxels above -300 HU (tissue), each with its centre as the click."""
    import nibabel as nib

    from .reference_pipeline import frame_transform

    m = read_manifest(pkg, verify=False)
    img = nib.load(volume)
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    t = frame_transform(img.affine, m["frame"])
    if t is not None:
        from nibabel import orientations as nio
        arr = nio.apply_orientation(arr, t)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    if t is not None:
        zooms = zooms[[int(np.where(t[:, 0] == a)[0][0]) for a in range(3)]]
    import torch
    import torch.nn.functional as F
    scale = [float(z) / float(s) for z, s in zip(zooms, m["spacing_mm"])]
    arr = F.interpolate(torch.from_numpy(np.ascontiguousarray(arr))[None, None], scale_factor=scale,
                        mode="trilinear", align_corners=False)[0, 0].numpy()
    it = m["intensity"]
    norm = (np.clip(arr, *it["clip"]) - it["mean"]) / it["std"]
    c = m["architecture"]["crop"]
    rng = np.random.default_rng(seed)
    tissue = np.argwhere(arr > -300.0)
    from .dataset import crop_at
    crops, clicks = [], []
    for _ in range(n):
        centre = tissue[int(rng.integers(0, len(tissue)))]
        crop, _ = crop_at(norm.astype(np.float32), np.zeros(norm.shape, np.uint8), centre - c // 2, c)
        crops.append(crop[None, None])
        clicks.append(np.full((1, 1, 3), c / 2.0, np.float32))
    return crops, clicks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("out")
    ap.add_argument("--graphs", default="encoder", help="comma-separated: encoder, decoder")
    ap.add_argument("--compare", action="store_true", help="compare OUT (int8) with PACKAGE (fp32) instead")
    ap.add_argument("--volume", help="CT (.nii.gz) whose crops --compare uses")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.compare:
        if not args.volume:
            ap.error("--compare needs --volume")
        crops, clicks = volume_crops(args.package, args.volume, args.crops)
        res = compare(args.package, args.out, crops, clicks, args.threads)
        print(f"{res['crops']} crops: |p_int8 - p_fp32| max {res['max_abs']:.4f} mean {res['mean_abs']:.5f}; "
              f"mask Dice int8 vs fp32 mean {res['dice_mean']:.4f} min {res['dice_min']:.4f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    m = quantize_package(args.package, args.out, tuple(g for g in args.graphs.split(",") if g))
    print(f"wrote {args.out}: {m['quantisation']}")


if __name__ == "__main__":
    main()
