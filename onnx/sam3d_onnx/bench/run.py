"""`make bench`: the engine against the straightforward PyTorch model, on the same machine, in one run.

    python -m sam3d_onnx bench --out ../build/bench [--configs tiny,demo,paper] [--threads 2]

For each configuration (tiny: the test fixture; demo: the shipped model; paper: random weights,
exported here into the output folder, never committed) it measures, on a 512 x 512 x 300 CT (the
TotalSegmentator example CT resampled to that grid and written once as .nii.gz):
  * engine (`examples/bench`, Rust + ONNX Runtime): model open, NIfTI load, first click (resample,
    encode, decode, paste-back stages), follow-up click (cached encoding), peak RSS (at paper size two
    sessions per run, so it includes a second encoding; also the peak after the first); run once before
    and once after the reference (mean of the two), so both sides see the same machine; with one
    pass per click (a package's test-time flips off: the reference's work), and for a package whose
    manifest asks for flips once more with them (rows "package's N test-time flips");
  * reference (`model.Sam3D`, the model that passes the official-parity test, run as the official code
    runs it): nibabel load, whole-volume `F.interpolate` preprocessing, one full forward per click
    (the official code reruns encoder and decoder for every click), peak RSS;
  * the fp32 floor: the encoder graph's FLOPs (counted by torch's FlopCounterMode on the exported
    graphs' modules) divided by this machine's rate on a large fp32 matrix product, sustained for 10 s
    just before and just after each of that configuration's engine runs (their mean; all recorded);
  * what the products can reach here, at the start and the end of the run: the 4096^2 product and the
    paper ViT's MLP product (32768 x 768 @ 768 x 3072) in PyTorch and in ONNX Runtime (its Python
    wheel, the same version and CPU kernels as the engine's library), so an encoder's distance from
    the floor can be split into the runtime's product rate and everything else.
It prints medians, ratios (reference / engine, engine / floor) and writes `bench.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from .floor import VIT_MLP_PRODUCT, graph_gflop, matmul_gflops, product_rates
from .packages import PACKAGES, REPO, SHAPE, int8_package, make_ct, paper_package, standard_package

ONNX_DIR = os.path.join(REPO, "onnx")


def reference(config: str, pkg: str, ct: str, click, threads: int, repeat: int) -> dict:
    """The straightforward PyTorch model as the official code runs it (in this process)."""
    import nibabel as nib
    import torch.nn.functional as F

    from ..model.config import NAMED
    from ..model.network import Sam3D, dhw_to_dwh, random_init_

    torch.set_num_threads(threads)
    cfg = NAMED[config]
    t = time.perf_counter()
    model = random_init_(Sam3D(cfg), seed=0).eval()
    t_model = time.perf_counter() - t
    load, prep, first, follow, encoder = [], [], [], [], []
    with open(os.path.join(pkg, "sam3d-model.json")) as f:
        spacing = float(json.load(f)["spacing_mm"][0])   # the packages here are isotropic
    for _ in range(repeat):
        t = time.perf_counter()
        img = nib.load(ct)
        arr = np.asarray(img.get_fdata(dtype=np.float32))
        load.append(time.perf_counter() - t)
        t = time.perf_counter()
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
        x = torch.from_numpy(arr)[None, None]
        x = F.interpolate(x, scale_factor=[float(z / spacing) for z in zooms], mode="trilinear", align_corners=False)
        x = (x.clamp(-160, 240) - 40.0) / 80.0
        prep.append(time.perf_counter() - t)
        g = np.floor((np.asarray(click) + 0.5) * zooms / spacing - 0.5).astype(int)
        lo = np.clip(g - cfg.crop // 2, 0, np.asarray(x.shape[2:]) - cfg.crop)
        crop = x[:, :, lo[0]:lo[0] + cfg.crop, lo[1]:lo[1] + cfg.crop, lo[2]:lo[2] + cfg.crop].repeat(1, 3, 1, 1, 1)
        for times, off in ((first, 0.0), (follow, 1.0)):
            pts = torch.tensor([[[cfg.crop / 2 + off, cfg.crop / 2, cfg.crop / 2]]], dtype=torch.float32)
            t = time.perf_counter()
            with torch.no_grad():
                model(crop, dhw_to_dwh(pts))
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            model.encoder(crop)
        encoder.append(time.perf_counter() - t)
    return {"model_build_s": t_model, "encoder_s": float(np.median(encoder)), "nifti_load_s": float(np.median(load)), "preprocess_s": float(np.median(prep)),
            "first_click_s": float(np.median(first)), "follow_up_click_s": float(np.median(follow)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def engine(pkg: str, ct: str, click, threads: int, repeat: int, ort: str, package_default: bool = False,
           device: tuple = ()) -> dict:
    """One engine run. By default with one pass, no component rule and no zoom-out (the reference's
    work: one encoder pass per encoding); `package_default`: with the manifest's `inference`
    refinements (zoom-out still off: its cost is `bench-interaction`'s)."""
    exe = os.path.join(REPO, "target", "release", "examples", "bench")
    plain = ["--zoom-out", "1"] + ([] if package_default else ["--flips", "1", "--keep-clicked", "0"])
    r = subprocess.run([exe, "--model", pkg, "--input", ct, "--click", ",".join(map(str, click)),
                        "--repeat", str(repeat), "--threads", str(threads)] + plain + list(device)
                      + (["--ort", ort] if ort else []),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench example failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def floor_fields(gflop: dict, rates: list) -> dict:
    """A configuration's FLOP counts and fp32 floors at the mean of the rates measured around its
    engine runs."""
    rate = float(np.mean(rates))
    return {**gflop, "fp32_matmul_gflops": rate, "floor_encoder_s": gflop["encoder_gflop"] / rate,
            "floor_click_s": gflop["click_gflop"] / rate}


def merge_runs(a: dict, b: dict) -> dict:
    """Two engine runs (before and after the reference) as one: mean of each timing, the larger peak
    RSS; the runs themselves are kept under "runs"."""
    out = {}
    for k, v in a.items():
        if k.startswith("peak_rss"):
            out[k] = max(v, b[k])
        elif k.endswith("_s") and isinstance(v, (int, float)):
            out[k] = (v + b[k]) / 2.0
        else:
            out[k] = v
    out["runs"] = [a, b]
    return out


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for bench.json, the CT and the generated packages")
    ap.add_argument("--data", default=os.path.join(REPO, ".cache", "data"),
                    help="folder written by tools/fetch_data.py (default: the repository's .cache/data)")
    ap.add_argument("--configs", default="tiny,demo,paper",
                    help="comma-separated: tiny, demo, paper, and <config>-int8 for the int8 variant, "
                         "<config>-openvino and <config>-openvino-bf16 for its standard-operator fp32 variant on OpenVINO "
                         "(default tiny,demo,paper)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of both sides (default: all CPUs)")
    ap.add_argument("--repeat", type=int, default=3, help="sessions per engine run and reference runs (default 3)")
    ap.add_argument("--paper-repeat", type=int, default=2,
                    help="sessions per engine run at paper size (2: the peak RSS includes a second encoding)")
    ap.add_argument("--ort", default=os.environ.get("SAM3D_ORT_LIBRARY"),
                    help="ONNX Runtime's shared library for the engine (default: $SAM3D_ORT_LIBRARY)")
    ap.add_argument("--ort-openvino", default=os.environ.get("SAM3D_ORT_OPENVINO_LIBRARY"),
                    help="ONNX Runtime built with OpenVINO, for the <config>-openvino rows (default: "
                         "SAM3D_ORT_OPENVINO_LIBRARY; none: those rows use --ort, with the plugin if it has one)")
    ap.add_argument("--reference-only", help=argparse.SUPPRESS)   # internal: one reference run per process
    ap.add_argument("--ct", help=argparse.SUPPRESS)
    ap.add_argument("--package", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    click = [256, 256, 150]
    if args.reference_only:
        print(json.dumps(reference(args.reference_only, args.package, args.ct, click, args.threads, args.repeat)))
        return
    os.makedirs(args.out, exist_ok=True)
    ct = make_ct(args.data, args.out)
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
              "ct": list(SHAPE), "configs": {}, **cpu_model(), "ort": args.ort, "ort_openvino": args.ort_openvino}
    rates = []
    product_runs = [product_rates(args.threads)]
    def ort_for(dev):
        # the OpenVINO rows on ONNX Runtime's OpenVINO build where one is given
        return args.ort_openvino if dev and args.ort_openvino else args.ort

    for name in args.configs.split(","):
        # "paper-int8": the int8 variant; "paper-openvino(-bf16)": the package's standard-operator
        # variant on OpenVINO; all against the same reference model
        device = {"-openvino": ("--device", "openvino"), "-openvino-bf16": ("--device", "openvino", "--bf16")}
        suffix = next((x for x in ("-openvino-bf16", "-openvino", "-int8") if name.endswith(x)), "")
        base = name.removesuffix(suffix)
        dev = device.get(suffix, ())
        rep = args.paper_repeat if base == "paper" else args.repeat
        pkg = paper_package(args.out) if base == "paper" else PACKAGES[base]
        if suffix == "-int8":
            pkg = int8_package(pkg, os.path.join(args.out, os.path.basename(pkg) + "-int8"))
        elif dev:
            # OpenVINO runs the standard-operator variant: ONNX Runtime's own attention nodes would
            # stay on its CPU provider and cut the graph (same math, same reference)
            pkg = standard_package(pkg, os.path.join(args.out, os.path.basename(pkg) + "-standard"))

        # the floor's rate is measured right before and right after each engine run
        def timed_engine():
            before = matmul_gflops(args.threads)
            e = engine(pkg, ct, click, args.threads, rep, ort_for(dev), device=dev)
            return e, [before, matmul_gflops(args.threads)]

        eng, around = timed_engine()
        if name != base and base in record["configs"]:
            rates += around
            eng["fp32_matmul_gflops_before_after"] = around
            fl = {k: record["configs"][base][k] for k in ("encoder_gflop", "click_gflop")}
            record["configs"][name] = {**record["configs"][base], "engine": eng, **floor_fields(fl, around)}
            if "engine_package_default" in record["configs"][base]:
                # the package's refinements on this variant and device, not the base's figures
                record["configs"][name]["engine_package_default"] = engine(
                    pkg, ct, click, args.threads, rep, ort_for(dev), package_default=True, device=dev)
            print(f"{name}: engine encode {eng['encode_s']:.3f} s", flush=True)
            continue
        r = subprocess.run([sys.executable, "-m", "sam3d_onnx", "bench", "--out", args.out, "--reference-only", base,
                            "--ct", ct, "--package", pkg, "--threads", str(args.threads), "--repeat", str(rep)],
                           capture_output=True, text=True, cwd=ONNX_DIR)
        if r.returncode != 0:
            raise SystemExit(f"reference run failed: {r.stderr[-2000:]}")
        ref = json.loads(r.stdout.strip().splitlines()[-1])
        # the engine again after the reference: the two runs bracket it in time, so a drift of the
        # machine's speed during the run moves both sides of the ratio alike
        eng2, around2 = timed_engine()
        eng = merge_runs(eng, eng2)
        around += around2
        rates += around
        eng["fp32_matmul_gflops_before_after"] = around
        from ..model.config import NAMED
        record["configs"][name] = {"engine": eng, "reference": ref, **floor_fields(graph_gflop(NAMED[base]), around)}
        from ..evaluation.reference_pipeline import inference_settings
        from ..export.package import read_manifest
        if inference_settings(read_manifest(pkg, verify=False))["test_time_flips"] > 1:
            # what a host gets with the package's refinements (e.g. the demo's 8 test-time flips)
            record["configs"][name]["engine_package_default"] = engine(pkg, ct, click, args.threads, rep, ort_for(dev),
                                                                       package_default=True, device=dev)
        print(f"{name}: engine encode {eng['encode_s']:.3f} s ({eng2['encode_s']:.3f} s after the reference), "
              f"reference first click {ref['first_click_s']:.3f} s", flush=True)
    record["fp32_matmul_gflops"] = float(np.mean(rates))
    record["fp32_matmul_gflops_range"] = [float(min(rates)), float(max(rates))]
    product_runs.append(product_rates(args.threads))
    record["product_rates_start_end"] = product_runs
    record["product_rates"] = {k: float(np.mean([r[k] for r in product_runs])) for k in product_runs[0]}
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(record, f, indent=1)
    print_table(record)


def cpu_model() -> dict:
    """The CPU's model name and the flags that decide bf16 (lscpu's source)."""
    name, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "?":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu_model": name, "bf16_flags": sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16"})}


def print_table(rec: dict):
    print(f"CPU: {rec.get('cpu_model', '?')}; bf16 flags: {', '.join(rec.get('bf16_flags') or ['none'])}")
    print(f"ONNX Runtime: {rec.get('ort')}; for the OpenVINO rows: {rec.get('ort_openvino') or rec.get('ort')}")
    lo, hi = rec["fp32_matmul_gflops_range"]
    print(f"\nmachine: {rec['machine']}, {rec['cpus']} CPUs, {rec['threads']} threads; fp32 matrix product "
          f"{rec['fp32_matmul_gflops']:.0f} GFLOP/s ({lo:.0f}-{hi:.0f} over the run; each configuration's floor "
          f"uses the mean of the rates measured just before and after its engine runs); "
          f"CT {rec['ct'][0]}x{rec['ct'][1]}x{rec['ct'][2]} (.nii.gz)")
    p = rec.get("product_rates")
    if p:
        m, k, n = VIT_MLP_PRODUCT
        print(f"fp32 products (GFLOP/s, mean of the run's start and end): 4096^2 PyTorch {p['torch_4096']:.0f}, "
              f"ONNX Runtime {p['ort_4096']:.0f}; the ViT's MLP product ({m}x{k} @ {k}x{n}) PyTorch "
              f"{p['torch_vit_mlp']:.0f}, ONNX Runtime {p['ort_vit_mlp']:.0f}")
    print()
    print("| model | stage | engine (s) | reference (s) | reference / engine | engine / fp32 floor |")
    print("|---|---|---|---|---|---|")
    for name, c in rec["configs"].items():
        e, r = c["engine"], c["reference"]
        # a model's first encoding and the later ones apart, when the run had more than one
        split = [("encoder pass, a model's first", e["encode_first_s"], None, c["floor_encoder_s"]),
                 ("encoder pass, later ones", e["encode_later_s"], None, c["floor_encoder_s"])] \
            if e.get("encode_later_s") is not None else []
        # at paper size: the later encodings against ONNX Runtime's own rate on the ViT's MLP product
        # (the floor a perfect graph would reach with this runtime's products)
        runtime_floor = [("encoder pass, later ones, against ONNX Runtime's ViT-product rate",
                          e.get("encode_later_s") or e["encode_s"], None, c["encoder_gflop"] / p["ort_vit_mlp"])] \
            if p and name == "paper" else []
        rows = [("model open", e["model_open_s"], r["model_build_s"], None),
                ("NIfTI load (.nii.gz)", e["nifti_load_s"], r["nifti_load_s"], None),
                ("preprocessing (resample, clip, normalise)", e["resample_s"], r["preprocess_s"], None),
                ("encoder pass", e["encode_s"], r.get("encoder_s"), c["floor_encoder_s"]),
                *split,
                *runtime_floor,
                ("first click (all stages)", e["first_click_s"], r["first_click_s"], None),
                ("follow-up click", e["follow_up_click_s"], r["follow_up_click_s"], c["floor_click_s"]),
                ("paste-back", e["paste_s"], None, None),
                ("peak RSS (MB)", e["peak_rss_mb"], r["peak_rss_mb"], None)]
        if e.get("repeat", 1) > 1 and "peak_rss_first_session_mb" in e:
            rows.append(("peak RSS after the first session (MB)", e["peak_rss_first_session_mb"], None, None))
        d = c.get("engine_package_default")
        if d:
            rows += [(f"first click, package's {d['test_time_flips']} test-time flips", d["first_click_s"], None, None),
                     (f"follow-up click, package's {d['test_time_flips']} test-time flips", d["follow_up_click_s"],
                      None, None)]
        for stage, ev, rv, floor in rows:
            ratio = f"{rv / ev:.1f}x" if rv is not None and ev > 0 and "RSS" not in stage else ""
            fr = f"{ev / floor:.2f}x" if floor else ""
            rvs = f"{rv:.3f}" if rv is not None else "-"
            # the provider that ran: an OpenVINO row on a CPU the plugin refuses is the CPU provider's
            label = f"{name} [{e.get('provider', '?')}]" if "openvino" in name else name
            print(f"| {label} | {stage} | {ev:.3f} | {rvs} | {ratio} | {fr} |")
