"""Model-side demo: seeded paper-size checkpoint (official layout) -> package -> ONNX Runtime -> the
official model's answer. Prints each stage's time and the parity figures.

    python -m sam3d_onnx.demo [--workdir build/demo]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(os.path.dirname(HERE), "tests", "parity")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "build", "demo"))
    args = ap.parse_args(argv)
    sys.path.insert(0, PARITY)
    import check_parity
    import make_weights
    import onnxruntime as ort
    import torch

    from . import cli
    from .package import session_options

    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "last.pth.tar")
    pkg = os.path.join(args.workdir, "paper-seed0")
    t = time.time()
    if not os.path.exists(ckpt):
        torch.save(make_weights.to_torch(make_weights.make_state(0)), ckpt)
    print(f"[1/4] checkpoint in the official layout: {ckpt} ({time.time() - t:.1f} s)")
    t = time.time()
    if cli.main(["convert", ckpt, "--dataset", "kits", "--out", pkg]) != 0:
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


if __name__ == "__main__":
    sys.exit(main())
