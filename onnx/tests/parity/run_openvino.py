"""Run a package's graphs on the golden input through ONNX Runtime's OpenVINO provider; write the
probabilities of every case to an .npz (`<precision>_<case>`, plus `<precision>_<stage>_s` timings).

    PYTHONPATH=.cache/onnxruntime-openvino-py python tests/parity/run_openvino.py PKG OUT.npz \
        [--precision fp32,bf16] [--threads 2]

A separate process because ONNX Runtime cannot be imported twice under one name: the test process
holds the stock onnxruntime, this one the build with OpenVINO (first on PYTHONPATH). The settings
are the engine's (sam3d_onnx.export.package.execution_providers).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))   # onnx/, for sam3d_onnx

import check_parity  # noqa: E402
import onnxruntime as ort  # noqa: E402

from sam3d_onnx.export.package import execution_providers, require_openvino, session_options  # noqa: E402


def run(pkg: str, precision: str, threads: int) -> dict:
    providers = execution_providers(f"openvino-{precision}", threads)
    opts = session_options(threads)
    out = {}
    t = time.time()
    enc = ort.InferenceSession(os.path.join(pkg, "encoder.onnx"), opts, providers=providers)
    dec = ort.InferenceSession(os.path.join(pkg, "decoder.onnx"), opts, providers=providers)
    out[f"{precision}_load_s"] = time.time() - t
    # a silent fall-back to the CPU provider would make the comparison meaningless
    assert enc.get_providers()[0] == "OpenVINOExecutionProvider", enc.get_providers()
    crop = np.load(os.path.join(HERE, "input_crop.npy"))[None, None]
    t = time.time()
    cache = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"crop": crop})))
    out[f"{precision}_encoder_s"] = time.time() - t
    for which in check_parity.CASES:
        case = check_parity.load_case(which)
        t = time.time()
        out[f"{precision}_{which}"] = dec.run(["prob"], {**cache, "points": case["clicks_dhw"]})[0][0]
        out[f"{precision}_decoder_{which}_s"] = time.time() - t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("out", help=".npz to write")
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (default both)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    require_openvino()
    res = {"onnxruntime_version": np.asarray(ort.__version__)}
    for precision in args.precision.split(","):
        res.update(run(args.package, precision, args.threads))
        gc.collect()   # one paper-size compiled encoder at a time
    np.savez(args.out, **res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
