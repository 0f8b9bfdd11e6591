"""The PyTorch model on a GPU, in one script for a lent GPU machine (README.md here).

    python3 bench/gpu/torch_bench.py --out gpu.json                  # on the GPU machine
    python3 bench/gpu/torch_bench.py --device cpu --config tiny      # the same code on a CPU (tested)

What such a machine has: PyTorch with CUDA and a CPU-only onnxruntime (no onnxruntime-gpu, no
TensorRT), so it measures what it can and marks the rest:

* the straightforward PyTorch model (random paper-size weights, `sam3d_onnx.model.network`, the model
  that passes the official-parity test) run as the official code runs it (the whole network per
  click), fp32;
* the same model the way the engine runs it: encoder once, then per click only the prompt encoder and
  decoder on the cached features; fp32, and fp16 / bf16 autocast with the probability difference to
  fp32 and the Dice of the masks at 0.5;
* peak device memory of each (torch.cuda.max_memory_allocated);
* ONNX Runtime's CUDA provider only when the installed onnxruntime has it (otherwise "unmeasured").

Timings are medians of `--repeat` runs after one warm-up, with device synchronisation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "onnx"))
from sam3d_onnx.model.config import NAMED  # noqa: E402
from sam3d_onnx.model.network import Sam3D, dhw_to_dwh, random_init_  # noqa: E402


def timed(fn, device, repeat: int):
    """(median seconds, last result) of fn() after one warm-up run."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = fn()
    sync()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def peak_memory(device, fn) -> float:
    """Peak device memory (MB) of fn(); NaN on the CPU (fn is not run there)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def run(config: str, device: str, repeat: int, dtypes=("fp16", "bf16")) -> dict:
    dev = torch.device(device)
    cfg = NAMED[config]
    model = random_init_(Sam3D(cfg), seed=0).eval().to(dev)
    c = cfg.crop
    g = torch.Generator().manual_seed(0)
    crop3 = torch.randn(1, 1, c, c, c, generator=g).repeat(1, 3, 1, 1, 1).to(dev)
    pts = dhw_to_dwh(torch.tensor([[[c / 2, c / 2, c / 2]]], dtype=torch.float32)).to(dev)
    pts2 = dhw_to_dwh(torch.tensor([[[c / 2, c / 2, c / 2], [c / 2 + 3, c / 2, c / 2]]],
                                   dtype=torch.float32)).to(dev)
    rec = {"config": config, "device": device, "repeat": repeat,
           "card": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
           "torch": torch.__version__}
    with torch.inference_mode():
        rec["reference_click_s"], ref = timed(lambda: model(crop3, pts), dev, repeat)
        rec["reference_peak_mb"] = peak_memory(dev, lambda: model(crop3, pts))
        rec["encoder_fp32_s"], feats = timed(lambda: model.encoder(crop3), dev, repeat)
        rec["follow_up_fp32_s"], p32 = timed(lambda: model.decode(feats, crop3, pts2), dev, repeat)
        rec["engine_way_peak_mb"] = peak_memory(dev, lambda: model.decode(model.encoder(crop3), crop3, pts2))
        for name in dtypes:
            dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
            if dev.type == "cpu" and name == "fp16":
                continue          # CPU autocast is bf16 only
            with torch.autocast(dev.type, dtype=dt):
                t_enc, f = timed(lambda: model.encoder(crop3), dev, repeat)
                t_dec, p = timed(lambda: model.decode(f, crop3, pts2), dev, repeat)
                mem = peak_memory(dev, lambda: model.decode(model.encoder(crop3), crop3, pts2))
            p = p.float()
            rec[name] = {"encoder_s": t_enc, "follow_up_s": t_dec, "peak_mb": mem,
                         "max_abs_prob_diff": float((p - p32).abs().max()),
                         "mean_abs_prob_diff": float((p - p32).abs().mean()),
                         "dice_vs_fp32": dice(p > 0.5, p32 > 0.5)}
        # the cached-features way computes what the official way computes
        rec["engine_way_max_abs_diff"] = float((ref - model.decode(feats, crop3, pts)).abs().max())
    rec["onnxruntime_cuda"] = ort_cuda_status()
    return rec


def ort_cuda_status() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "unmeasured: onnxruntime not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"unmeasured: onnxruntime {ort.__version__} has no CUDA provider (CPU wheel)"
    return f"available: onnxruntime {ort.__version__} (run make bench with ORT_FLAVOR=gpu and --device cuda)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="paper", choices=sorted(NAMED), help="model size (default paper)")
    ap.add_argument("--device", default="cuda", help="PyTorch device (default cuda)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per figure after one warm-up (default 5)")
    ap.add_argument("--out", help="also write the record to this JSON file")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to PyTorch")
    rec = run(args.config, args.device, args.repeat)
    print(json.dumps(rec, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
