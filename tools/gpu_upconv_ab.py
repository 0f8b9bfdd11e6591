#!/usr/bin/env python3
"""How UpsampledConv should sum its kernel taps: three exact layouts timed in ONNX Runtime.

    python3 tools/gpu_upconv_ab.py [--ort-path DIR] [--providers cuda,cpu] [--threads N]

`graphs.UpsampledConv` (onnx/sam3d_onnx/graphs.py) sums over the 3 taps of two axes. Which ONNX form
of that sum is fast depends on the execution provider: ONNX Runtime's CUDA ReduceSum has its own
kernel only for leading axes (others go to cuDNN's generic reduction), its CPU ReduceSum is fastest
on a middle axis. The variants, all equal to conv3d(trilinear x2(h), w, padding=1):
  middle   rows (o, k1, k2, k0), ReduceSum over axis 1   (graphs.UpsampledConv as exported)
  leading  rows (k1, k2, o, k0), ReduceSum over axis 0
  ones     rows (o, k1, k2, k0), MatMul of ones(1, 3) with the (c, 3, M) field
Paper-size shapes (the click half of cls.0: 128 -> 128 channels, 32^3 -> 64^3), fp32 and fp16, each
checked against the first variant and timed (median of --repeat runs after 2 warm-up runs).
`--ort-path` puts a folder holding an `onnxruntime` Python package first on the path (the GPU machines
have a CPU-only one; tools/gpu_carry.py brings the CUDA one there). Run by tools/gpu_check.sh.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def variants(torch, graphs):
    """A factory (w, g, scale, mode, group) -> module: "middle" is graphs.UpsampledConv itself, the
    others subclass it (same buffers and arithmetic, only the tap sums differ)."""
    base = graphs.UpsampledConv          # taken now: export_packages later replaces the module's name

    def over_groups(mod, h, taps):
        """UpsampledConv's loop over output-channel groups; `taps(z, c, g, n)` does one group's
        per-axis products and tap sums from its channel mixing z."""
        g, n = mod.g, mod.n
        flat = h.reshape(h.shape[1], g ** 3)
        out = [taps(torch.matmul(getattr(mod, f"mix{i}"), flat).reshape(c * 9, 3 * g, g * g), c, g, n)
               for i, c in enumerate(mod.groups)]
        return torch.cat(out, 0).reshape(1, -1, n, n, n)

    class Leading(base):
        def __init__(self, w, g, scale, group):
            super().__init__(w, g, scale, group)
            rows = w.detach().permute(3, 4, 0, 2, 1)                             # (k1, k2, o, k0, cin)
            for i, c0 in enumerate(range(0, w.shape[0], group)):
                setattr(self, f"mix{i}", rows[:, :, c0:c0 + group].reshape(-1, w.shape[1]).contiguous())

        def forward(self, h):
            def taps(z, c, g, n):
                z = torch.matmul(self.m0, z).reshape(3, 3 * c * n, g, g)
                z = torch.matmul(self.m1, z).sum(0)
                return torch.matmul(z.reshape(3, c * n * n, g), self.m2).sum(0)
            return over_groups(self, h, taps)

    class Ones(base):
        def __init__(self, w, g, scale, group):
            super().__init__(w, g, scale, group)
            self.register_buffer("ones", torch.ones(1, 3, dtype=w.dtype))

        def forward(self, h):
            def taps(z, c, g, n):
                z = torch.matmul(self.m0, z).reshape(c, 3, 3 * n, g, g)
                z = torch.matmul(self.ones, torch.matmul(self.m1, z).reshape(c, 3, -1))
                z = torch.matmul(z.reshape(c, 3, n * n, g), self.m2).reshape(c, 3, -1)
                return torch.matmul(self.ones, z)
            return over_groups(self, h, taps)

    kinds = {"middle": base, "leading": Leading, "ones": Ones}
    return lambda w, g, scale, mode, group=32: kinds[mode](w, g, scale, group)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ort-path")
    ap.add_argument("--providers", default="cuda,cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--modes", default="middle,leading,ones")
    ap.add_argument("--export-packages", metavar="DIR",
                    help="instead: export the paper-size benchmark package once per variant after the first "
                         "(graphs.UpsampledConv replaced) to DIR/<variant>, for tools/gpu_carry.py pack")
    a = ap.parse_args(argv)
    if a.export_packages:
        return export_packages(a.export_packages, a.modes.split(",")[1:])
    if a.ort_path:
        sys.path.insert(0, a.ort_path)
    sys.path.insert(0, os.path.join(HERE, "..", "onnx"))
    import numpy as np
    import onnxruntime as ort
    import torch
    from sam3d_onnx import graphs
    make_variant = variants(torch, graphs)
    print(f"onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)}; providers {ort.get_available_providers()}")
    g, cin, cout = 32, 128, 128
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(cout, cin, 3, 3, 3, generator=gen) * 0.02
    h = torch.randn(1, cin, g, g, g, generator=gen)
    tmp = tempfile.mkdtemp(prefix="upconv-ab-")
    modes = a.modes.split(",")
    for dtype in (torch.float32, torch.float16):
        files = {}
        for m in modes:
            f = os.path.join(tmp, f"{m}-{str(dtype)[6:]}.onnx")
            torch.onnx.export(make_variant(w.to(dtype), g, 2, m), (h.to(dtype),), f, input_names=["h"],
                              output_names=["y"], opset_version=17, dynamo=False)
            files[m] = f
        x = h.to(dtype).numpy()
        for prov in a.providers.split(","):
            name = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[prov]
            if name not in ort.get_available_providers() or (prov == "cpu" and dtype == torch.float16):
                continue
            so = ort.SessionOptions()
            if a.threads:
                so.intra_op_num_threads = a.threads
            opts = [{"use_tf32": "0"}] if prov == "cuda" else None
            sess = {m: ort.InferenceSession(f, so, providers=[name], provider_options=opts) for m, f in files.items()}
            ref, times, runs = None, {m: [] for m in modes}, {}
            for m, s in sess.items():
                y = s.run(None, {"h": x})[0].astype(np.float32)
                ref = y if ref is None else ref
                err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
                print(f"  {prov} {str(dtype)[6:]} {m}: max rel. diff to {modes[0]} {err:.2e}")
                # input and output stay on the provider's device (IO binding): only the graph is timed
                io = s.io_binding()
                io.bind_ortvalue_input("h", ort.OrtValue.ortvalue_from_numpy(x, prov, 0))
                io.bind_output("y", prov)
                runs[m] = (s, io)
                s.run_with_iobinding(io)
                io.synchronize_outputs()
            for r in range(a.repeat):
                for m in (modes if r % 2 else modes[::-1]):
                    s, io = runs[m]
                    t = time.perf_counter()
                    s.run_with_iobinding(io)
                    io.synchronize_outputs()
                    times[m].append(time.perf_counter() - t)
            print(f"{prov} {str(dtype)[6:]}: " + ", ".join(f"{m} {1e3 * np.median(v):.2f} ms" for m, v in times.items()))


def export_packages(out, modes):
    import shutil
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "onnx"))
    from sam3d_onnx import bench, graphs
    make_variant = variants(torch, graphs)
    for mode in modes:
        graphs.UpsampledConv = lambda w, g, scale, group=32, _m=mode: make_variant(w, g, scale, _m, group)
        scratch = os.path.join(out, f".export-{mode}")
        shutil.rmtree(scratch, ignore_errors=True)
        path = bench.paper_package(scratch)
        shutil.rmtree(os.path.join(out, mode), ignore_errors=True)
        shutil.move(path, os.path.join(out, mode))
        shutil.rmtree(scratch)
        print(f"{out}/{mode}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
