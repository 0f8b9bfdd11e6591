"""Convert a released 3DSAM-adapter checkpoint into a model package.

    python -m sam3d_onnx convert CHECKPOINT --dataset kits --out PKG_DIR

The checkpoint is `last.pth.tar` / `best.pth.tar` of the official code; the dataset preset gives the
intensity constants and array transpose (`model/presets.py`). Exit status 0 on success, 2 for a wrong
or corrupt checkpoint (the message names the problem)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from ..model import checkpoint, presets
from ..model.config import NAMED, Sam3DConfig
from . import package


def _config(args) -> Sam3DConfig:
    if args.config_json:
        with open(args.config_json) as f:
            return Sam3DConfig.from_dict(json.load(f))
    return NAMED[args.config]


def convert(args) -> int:
    cfg = _config(args)
    t0 = time.time()
    model = checkpoint.load_official(args.checkpoint, cfg)
    fields = presets.preset_fields(args.dataset)
    if args.name:
        fields["name"] = args.name
    prov = (f"converted by sam3d_onnx from {os.path.basename(args.checkpoint)} "
            f"(sha256 {package.sha256_file(args.checkpoint)}); official 3DSAM-adapter weights "
            f"(med-air/3DSAM-adapter), dataset preset '{args.dataset}'")
    manifest = package.export_package(model, args.out, provenance=prov, **fields)
    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for g in manifest["graphs"].values()
             for f in g["sha256"]}
    print(f"wrote {args.out} in {time.time() - t0:.1f} s: "
          + ", ".join(f"{f} {s / 1e6:.1f} MB" for f, s in sizes.items()))
    return 0


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="released last.pth.tar / best.pth.tar")
    ap.add_argument("--dataset", required=True, choices=sorted(presets.DATASETS),
                    help="dataset the checkpoint was trained on (intensity constants, array transpose)")
    ap.add_argument("--out", required=True, help="package directory to write")
    ap.add_argument("--name", help="package name (default: <dataset>-tumour)")
    ap.add_argument("--config", default="paper", choices=sorted(NAMED),
                    help="architecture (default: the paper's)")
    ap.add_argument("--config-json", help="architecture as a JSON object of Sam3DConfig fields")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return convert(args)
    except (checkpoint.CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
