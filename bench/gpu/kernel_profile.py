#!/usr/bin/env python3
"""Where the engine's GPU time goes: CUDA kernel times of libsam3d on ONNX Runtime's CUDA provider.

    python3 bench/gpu/kernel_profile.py --lib libsam3d.so --ort libonnxruntime.so.1.x --model PKG --ct CT.nii \
        [--tf32] [--out profile.json]

ONNX Runtime's own profiler times a CUDA node by its launch on the host (the release wheels carry no
CUPTI support), which says nothing about the card. PyTorch's profiler records every CUDA kernel of its
process through CUPTI, whoever launched it, so this script loads libsam3d through the ctypes binding
(python/sam3d) into a process with PyTorch, runs one encoding click and follow-up clicks under the
profiler and prints the kernels grouped by kind (matrix products, convolutions, attention,
normalisation, copies/transposes, element-wise), the busy time against the wall time of each stage
and the 25 most expensive kernels. Run on a lent GPU machine by bench/gpu/check.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

KINDS = [  # (kind, pattern on the kernel name), first match wins
    ("attention", r"fmha|flash|attention|mha|softmax"),
    ("conv", r"conv|implicit_gemm|xmma_fprop|dgrad|wgrad|winograd|cudnn|sm90_xmma"),
    ("matmul", r"gemm|cutlass|cublas|ampere_|sm80_|sm90_|hopper|nvjet"),
    ("norm", r"norm"),
    ("copy/transpose", r"transpose|copy|memcpy|memset|concat|slice|gather|pad|permute|split"),
    ("reduce", r"reduce"),
]


def kind(name: str) -> str:
    low = name.lower()
    for k, pat in KINDS:
        if re.search(pat, low):
            return k
    return "element-wise/other"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="libsam3d.so")
    ap.add_argument("--ort", required=True, help="ONNX Runtime's libonnxruntime.so with the CUDA provider")
    ap.add_argument("--model", required=True)
    ap.add_argument("--ct", required=True)
    ap.add_argument("--click", default="256,256,150")
    ap.add_argument("--follow", type=int, default=5, help="follow-up clicks profiled")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--trace", default="/tmp/sam3d-trace.json", help="scratch file for the Chrome trace")
    a = ap.parse_args(argv)
    os.environ["SAM3D_LIBRARY"] = a.lib
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import torch
    import sam3d

    gpu = torch.cuda.is_available()                     # (without one: a dry run of this script on the CPU)
    if gpu:
        torch.zeros(1, device="cuda")                   # the CUDA context before the profiler
    rt = sam3d.Runtime(a.ort)
    model = sam3d.Model(rt, a.model, device="cuda", threads=os.cpu_count(), cuda_tf32=a.tf32)
    info = model.info
    vol = sam3d.Volume.read_nifti(a.ct)
    click = [float(v) for v in a.click.split(",")]
    stamps: list[tuple[str, bool, float]] = []

    def session():
        s = sam3d.Session(model, vol, progress=lambda st, done: stamps.append((st, done, time.perf_counter())))
        s.set_inference(1, False)
        return s

    with session() as s:                                # warm-up: cuDNN's algorithm search, the arena
        o = s.add_object()
        s.click(o, click)
        s.click(o, [click[0] + 1] + click[1:])
    stamps.clear()
    with session() as s:
        o = s.add_object()
        first = profiled(lambda: s.click(o, click), a.trace)
        t1 = time.perf_counter()
        follow = profiled(lambda: [s.click(o, [click[0] + 1 + i % 2] + click[1:]) for i in range(a.follow)], a.trace)
    walls: dict[str, float] = {}
    open_at: dict[str, float] = {}
    for st, done, t in stamps:
        key = ("first " if t < t1 else "follow-up ") + st
        if done and key in open_at:
            walls[key] = walls.get(key, 0.0) + t - open_at.pop(key)
        elif not done:
            open_at[key] = t
    print(f"provider {info.get('provider')!r}, tf32 {a.tf32}: stage walls under the profiler (ms; the "
          f"{a.follow} follow-ups together) "
          + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in walls.items()))
    record = {"provider": info.get("provider"), "tf32": a.tf32, "follow_ups": a.follow, "stage_walls_s": walls}
    for label, kernels in (("first click", first), (f"{a.follow} follow-up clicks", follow)):
        total = sum(d for _, d in kernels)
        by_kind: dict[str, list] = {}
        by_name: dict[str, list] = {}
        for name, d in kernels:
            for table, key in ((by_kind, kind(name)), (by_name, name)):
                table.setdefault(key, [0.0, 0])
                table[key][0] += d
                table[key][1] += 1
        print(f"== {label}: {len(kernels)} kernels, {total / 1e3:.2f} ms busy on the card")
        for k, (us, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
            print(f"  {k:20s} {us / 1e3:9.2f} ms  {100 * us / max(total, 1):5.1f} %  {n:6d} kernels")
        top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:25]
        for name, (us, n) in top:
            print(f"  {us / 1e3:8.2f} ms {n:5d}x  {name[:160]}")
        record[label] = {"busy_ms": total / 1e3, "kernels": len(kernels),
                         "by_kind_ms": {k: v[0] / 1e3 for k, v in by_kind.items()},
                         "top": [{"name": n, "ms": v[0] / 1e3, "count": v[1]} for n, v in top]}
    if a.out:
        json.dump(record, open(a.out, "w"), indent=1)


def profiled(fn, trace_path):
    """Run fn under PyTorch's profiler (CUDA activity); the (name, microseconds) of every GPU kernel,
    read from the exported Chrome trace (its format is steadier across PyTorch versions than the
    event objects')."""
    from torch.profiler import ProfilerActivity, profile
    import torch
    gpu = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        fn()
        if gpu:
            torch.cuda.synchronize()
    prof.export_chrome_trace(trace_path)
    events = json.load(open(trace_path))
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    return [(e["name"], float(e.get("dur", 0))) for e in events
            if isinstance(e, dict) and e.get("ph") == "X" and e.get("cat") in ("kernel", "Kernel")]


if __name__ == "__main__":
    sys.exit(main())
