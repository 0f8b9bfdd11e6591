"""int8 and fp16 variants of a model package, and their accuracy against the fp32 package.

    python -m sam3d_onnx quantize PKG OUT [--graphs encoder]          # write the int8 package
    python -m sam3d_onnx quantize PKG OUT --precision fp16            # fp16 (for GPUs), both graphs
    python -m sam3d_onnx quantize PKG OUT --precision standard        # fp32, standard operators (OpenVINO)
    python -m sam3d_onnx quantize --compare PKG OUT --volume CT.nii.gz  # probabilities and masks

The encoder's weight MatMuls (qkv, proj, MLP, adapters: about 70 % of an encoding's FLOPs) become
ONNX Runtime's dynamic int8 quantisation (weights int8 per output channel, activations quantised per
tensor at run time), and so do its 3x3x3 convolutions (necks, decoder heads: `int8.int8_convs`, an
int8 im2col product; `--fp32-convs` keeps them). The package contract is unchanged (same inputs, outputs,
manifest), so the engine runs it like any package. The attention products (activation x activation),
the depth-wise and 1x1 convolutions and the decoder stay fp32.

fp16 (ONNX Runtime's float16 converter): every float weight and activation in fp16, the graphs' inputs
and outputs kept float32 (Casts at the edges), so the engine and the manifest's graph interface are
unchanged too. Meant for CUDA/TensorRT (tensor cores); on a CPU it runs, slower than fp32.

standard (`standard.standard_graph`): the same fp32 math with ONNX Runtime's own attention and GELU
nodes written as standard ONNX operators, so that OpenVINO runs the whole graph.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from functools import partial

import numpy as np

from .fp16 import half_graph
from .int8 import quantize_graph
from .standard import standard_graph
from .package import publish, read_manifest, sha256_file


PRECISIONS = {"int8": ("int8-dynamic", quantize_graph,
                       "weight MatMuls quantised to int8 (ONNX Runtime dynamic quantisation, per-channel weights)"),
              "fp16": ("fp16", half_graph, "converted to fp16, inputs and outputs float32 (ONNX Runtime's float16 "
                                           "converter)"),
              "standard": ("fp32", standard_graph, "ONNX Runtime's com.microsoft nodes rewritten as standard ONNX "
                                                   "operators (for OpenVINO)")}


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
        manifest["provenance"] += f"; {'+'.join(graphs)} {what} by python -m sam3d_onnx quantize"
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
    from ..evaluation.reference_pipeline import Pipeline

    runs = [Pipeline(p, threads) for p in (fp32, variant)]
    thr = runs[0].manifest["threshold"]
    rows = []
    for crop, pts in zip(crops, clicks):
        probs = []
        for pipe in runs:
            f3, cls_partial = pipe.enc.run(None, {"crop": crop})
            feeds = {"f3": f3, "cls_partial": cls_partial, "points": pts}
            if pipe.takes_labels:
                # alternate labels from a fixed pattern: negative clicks are compared as well
                feeds["labels"] = (np.arange(pts.shape[1]) % 2 == 0).astype(np.float32)[None]
            probs.append(pipe.dec.run(None, feeds)[0])
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
    from ..training.dataset import crop_at, load_oriented, resample_image

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


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("package", help="the fp32 package")
    ap.add_argument("out", help="the variant package to write (with --compare: to read)")
    ap.add_argument("--precision", choices=sorted(PRECISIONS), default="int8",
                    help="int8 (default), fp16, or standard (fp32 in standard operators, for OpenVINO)")
    ap.add_argument("--graphs", help="comma-separated: encoder, decoder (default: encoder for int8, both for fp16)")
    ap.add_argument("--compare", action="store_true", help="compare OUT (int8 or fp16) with PACKAGE (fp32) instead")
    ap.add_argument("--volume", help="CT (.nii.gz) whose crops --compare uses")
    ap.add_argument("--crops", type=int, default=8, help="--compare: crops of the volume (default 8)")
    ap.add_argument("--threads", type=int, default=2, help="--compare: ONNX Runtime threads (default 2)")
    ap.add_argument("--fp32-convs", action="store_true", help="int8: keep the 3x3x3 convolutions fp32")
    ap.add_argument("--json", help="--compare: also write the figures to this JSON file")
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
