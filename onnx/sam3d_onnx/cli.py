"""Command line: `python -m sam3d_onnx convert CHECKPOINT --dataset kits --out PKG_DIR`.

Converts a released 3DSAM-adapter checkpoint (`last.pth.tar` / `best.pth.tar`) into a model package.
Exit status 0 on success, 2 for a wrong or corrupt checkpoint (the message names the problem)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from . import checkpoint, package, presets
from .config import NAMED, Sam3DConfig


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sam3d_onnx", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="official checkpoint (+ dataset preset) -> model package")
    c.add_argument("checkpoint", help="released last.pth.tar / best.pth.tar")
    c.add_argument("--dataset", required=True, choices=sorted(presets.DATASETS),
                   help="dataset the checkpoint was trained on (intensity constants, array transpose)")
    c.add_argument("--out", required=True, help="package directory to write")
    c.add_argument("--name", help="package name (default: <dataset>-tumour)")
    c.add_argument("--config", default="paper", choices=sorted(NAMED),
                   help="architecture (default: the paper's)")
    c.add_argument("--config-json", help="architecture as a JSON object of Sam3DConfig fields")
    c.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return convert(args)
    except (checkpoint.CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
