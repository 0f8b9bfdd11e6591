"""Parity with the official model: seeded paper-size checkpoint -> package -> ONNX Runtime -> answer.

The checkpoint is written in the official layout from the seeded generator, converted, run under ONNX
Runtime and compared with the official model's stored answers; prints each stage's time and the
parity figures.

    python -m sam3d_onnx demo-parity [--workdir build/demo]

Needs a source checkout: the seeded generator and the official goldens are in onnx/tests/parity.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ONNX_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # onnx/
PARITY = os.path.join(ONNX_DIR, "tests", "parity")


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=os.path.join(os.path.dirname(ONNX_DIR), "build", "demo"),
                    help="folder for the checkpoint and the package (default: build/demo of the repository)")
    args = ap.parse_args(argv)
    sys.path.insert(0, PARITY)
    import check_parity
    import make_weights
    import onnxruntime as ort
    import torch

    from ..export import convert
    from ..export.package import session_options

    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "last.pth.tar")
    pkg = os.path.join(args.workdir, "paper-seed0")
    t = time.time()
    if not os.path.exists(ckpt):
        torch.save(make_weights.to_torch(make_weights.make_state(0)), ckpt)
    print(f"[1/4] checkpoint in the official layout: {ckpt} ({time.time() - t:.1f} s)")
    t = time.time()
    if convert.main([ckpt, "--dataset", "kits", "--out", pkg]) != 0:
        return 1
    print(f"[2/4] converted in {time.time() - t:.1f} s")
    opts = session_options(os.cpu_count() or 1)
    enc = ort.InferenceSession(os.path.join(pkg, "encoder.onnx"), opts)
    dec = ort.InferenceSession(os.path.join(pkg, "decoder.onnx"), opts)
    crop = np.load(os.path.join(PARITY, "input_crop.npy"))[None, None]
    t = time.time()
    cache = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"crop": crop})))
    print(f"[3/4] encoder pass (ONNX Runtime, once per region): {time.time() - t:.1f} s")
    ok = True
    for which in check_parity.CASES:
        case = check_parity.load_case(which)
        t = time.time()
        prob = dec.run(["prob"], {**cache, "points": case["clicks_dhw"]})[0][0]
        m = check_parity.compare(prob, which)
        ok &= m["pass"]
        print(f"[4/4] {which}: decoder {time.time() - t:.2f} s, max |p - official| {m['max_abs']:.2e}, "
              f"Dice vs official mask {m['dice']:.6f}, {m['count_gt_0.5']} voxels > 0.5")
    print("parity with the official 3DSAM-adapter:", "OK" if ok else "FAILED")
    return 0 if ok else 1
