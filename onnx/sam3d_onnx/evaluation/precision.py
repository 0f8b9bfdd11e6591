"""A package through ONNX Runtime's CPU provider, OpenVINO fp32 and OpenVINO bf16 on the evaluation's
cases: how far the masks and probabilities move, and each one's Dice against the truth.

    PYTHONPATH=.cache/onnxruntime-openvino-py python -m sam3d_onnx precision PKG --data .cache/data \
        [--lesions 60] [--sets heldout-ct,train-ct,real,sample] [--random-clicks] [--split] [--json out.json]

Needs an ONNX Runtime built with OpenVINO first on PYTHONPATH (the onnxruntime-openvino wheel,
unpacked with `pip install --no-deps --target DIR`): it replaces the stock onnxruntime for the whole
process, whose CPU provider is then the comparison's reference. OpenVINO runs with the engine's
settings (`package.execution_providers`).

Cases: the evaluation's (`evaluate.py`): held-out synthetic lesions of its evaluation stream in the
held-out and the training CT, the real tumours (lung1 CT, brain1 MR), each from the deepest-voxel
click (and with --random-clicks its random clicks too), and the shipped sample volume with its click.
Each case runs the reference pipeline (test-time flips and the clicked-component rule of the
manifest) once per provider. Per case: mask Dice OpenVINO fp32 vs CPU and bf16 vs fp32 with the number
of voxels that differ, max |p diff| of the probabilities on the volume's grid, and each provider's
Dice against the truth. --split adds
the bf16 encoder with the fp32 decoder and the reverse, to tell which graph a bf16 loss comes from.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ..export.package import cpu_has_bf16, require_openvino
from .evaluate import ORGAN_SETS, RANDOM_SEEDS, REAL, EVAL_STREAM, lesion_case, load_volume, random_clicks
from .measures import dice, edt_click, read_ijk

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLE = os.path.join(REPO, "examples", "data", "sample_ct_lesion")
SETS = ("heldout-ct", "train-ct", "real", "sample")
# name -> (encoder's provider, decoder's provider); the first three are always run
CONFIGS = {"cpu": ("cpu", "cpu"), "fp32": ("openvino-fp32", "openvino-fp32"),
           "bf16": ("openvino-bf16", "openvino-bf16")}
SPLIT = {"enc-bf16": ("openvino-bf16", "openvino-fp32"), "dec-bf16": ("openvino-fp32", "openvino-bf16")}
BF16_DICE = 0.99   # a bf16 mask below this against fp32 is counted (and reported)


def sample_case(prefix: str = SAMPLE):
    """The shipped sample: (image, affine, truth, click) as the engine's demo reads it (nibabel)."""
    import nibabel as nib
    img = nib.load(prefix + ".nii.gz")
    truth = np.asarray(nib.load(prefix + "_truth.nii.gz").dataobj).astype(np.uint8)
    with open(prefix + ".json") as f:
        click = np.asarray(json.load(f)["click_ijk"], np.float64)
    return np.asarray(img.get_fdata(dtype=np.float32)), img.affine, truth, click


def cases(data, sets, lesions: int, random: bool):
    """(set, name, image, affine, truth, [(rule, click)]) of every case, made one at a time."""
    def rules(mask, sp, seed):
        out = [("edt", edt_click(mask, sp))]
        if random:
            out += [(f"random{k}", c) for k, c in enumerate(random_clicks(mask, RANDOM_SEEDS, seed))]
        return out

    for name in sets:
        if name in ORGAN_SETS:
            image, labels, affine, sp = load_volume(data, name)
            for i in range(lesions):
                img, mask, organ, _ = lesion_case(image, labels, sp, ORGAN_SETS[name], EVAL_STREAM, i)
                yield name, f"#{i} {organ}", img, affine, mask, rules(mask, sp, i)
        elif name == "real":
            for tumour, (ip, lp) in REAL.items():
                image, affine, sp = read_ijk(os.path.join(data, ip))
                mask = (read_ijk(os.path.join(data, lp))[0] > 0).astype(np.uint8)
                yield name, tumour, image.astype(np.float32), affine, mask, rules(mask, sp, 0)
        elif name == "sample":
            image, affine, truth, click = sample_case()
            yield name, "sample_ct_lesion", image, affine, truth, [("edt", click)]   # its deepest voxel
        else:
            raise ValueError(f"unknown set {name!r}: one of {SETS}")


def compare(pipes: dict, image, affine, truth, click, timings: dict) -> dict:
    """One click through every pipeline: the comparison's figures."""
    prob, mask = {}, {}
    for name, pipe in pipes.items():
        t = time.perf_counter()
        prob[name] = pipe.probability_array(image, affine, click[None])
        timings.setdefault(name, []).append(time.perf_counter() - t)
        mask[name] = pipe.mask(prob[name], click[None])
    maxdp = lambda a, b: float(np.abs(prob[a].astype(np.float64) - prob[b]).max())  # noqa: E731
    differ = lambda a, b: int((mask[a] != mask[b]).sum())  # noqa: E731
    # on a small mask one voxel moves Dice by more than 0.01: the count of voxels that differ tells
    # those apart from a real disagreement
    row = {"lesion_voxels": int(truth.sum()),
           "dice_fp32_cpu": dice(mask["fp32"], mask["cpu"]), "dice_bf16_fp32": dice(mask["bf16"], mask["fp32"]),
           "differ_fp32_cpu": differ("fp32", "cpu"), "differ_bf16_fp32": differ("bf16", "fp32"),
           "maxdp_fp32_cpu": maxdp("fp32", "cpu"), "maxdp_bf16_fp32": maxdp("bf16", "fp32")}
    for name in pipes:
        row[f"truth_{name}"] = dice(mask[name], truth)
        row[f"voxels_{name}"] = int(mask[name].sum())
    for name in SPLIT:
        if name in pipes:
            row[f"dice_{name}_fp32"] = dice(mask[name], mask["fp32"])
            row[f"maxdp_{name}_fp32"] = maxdp(name, "fp32")
    return row


def totals(rows: list) -> dict:
    """Mean and minimum of each Dice, maximum of each |p diff|, over `rows`."""
    out = {"n": len(rows)}
    for k in rows[0]:
        if k.startswith("dice_") or k.startswith("truth_"):
            v = np.asarray([r[k] for r in rows], float)
            out[k] = {"mean": float(v.mean()), "min": float(v.min())}
        elif k.startswith("maxdp_"):
            v = np.asarray([r[k] for r in rows], float)
            out[k] = {"max": float(v.max()), "median": float(np.median(v))}
        elif k.startswith("differ_"):
            out[k] = {"max": int(max(r[k] for r in rows)), "total": int(sum(r[k] for r in rows))}
    out["bf16_below"] = int(sum(r["dice_bf16_fp32"] < BF16_DICE for r in rows))
    return out


def print_tables(res: dict):
    split = [k for k in SPLIT if f"dice_{k}_fp32" in res["rows"][0]]
    print()
    head = ["set", "case", "click", "lesion vox", "mask vox fp32", "Dice fp32/CPU", "Dice bf16/fp32",
            "vox differ fp32/CPU", "vox differ bf16/fp32", "max abs dp fp32/CPU", "max abs dp bf16/fp32",
            "truth CPU", "truth fp32", "truth bf16"]
    head += [f"Dice {k}/fp32" for k in split]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in res["rows"]:
        cells = [r["set"], r["case"], r["click"], str(r["lesion_voxels"]), str(r["voxels_fp32"]),
                 f"{r['dice_fp32_cpu']:.4f}", f"{r['dice_bf16_fp32']:.4f}", str(r["differ_fp32_cpu"]),
                 str(r["differ_bf16_fp32"]), f"{r['maxdp_fp32_cpu']:.1e}", f"{r['maxdp_bf16_fp32']:.1e}",
                 f"{r['truth_cpu']:.3f}", f"{r['truth_fp32']:.3f}", f"{r['truth_bf16']:.3f}"]
        cells += [f"{r[f'dice_{k}_fp32']:.4f}" for k in split]
        print("| " + " | ".join(cells) + " |")
    print()
    head = ["set", "clicks", "Dice fp32/CPU mean (min)", "Dice bf16/fp32 mean (min)", f"bf16 < {BF16_DICE}",
            "vox differ fp32/CPU max", "vox differ bf16/fp32 max (total)", "max abs dp fp32/CPU",
            "max abs dp bf16/fp32 (median)", "truth CPU", "truth fp32", "truth bf16"]
    head += [f"Dice {k}/fp32 mean (min)" for k in split]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, t in res["totals"].items():
        cells = [name, str(t["n"]),
                 f"{t['dice_fp32_cpu']['mean']:.4f} ({t['dice_fp32_cpu']['min']:.4f})",
                 f"{t['dice_bf16_fp32']['mean']:.4f} ({t['dice_bf16_fp32']['min']:.4f})", str(t["bf16_below"]),
                 str(t["differ_fp32_cpu"]["max"]),
                 f"{t['differ_bf16_fp32']['max']} ({t['differ_bf16_fp32']['total']})",
                 f"{t['maxdp_fp32_cpu']['max']:.1e}",
                 f"{t['maxdp_bf16_fp32']['max']:.1e} ({t['maxdp_bf16_fp32']['median']:.1e})",
                 f"{t['truth_cpu']['mean']:.3f}", f"{t['truth_fp32']['mean']:.3f}", f"{t['truth_bf16']['mean']:.3f}"]
        cells += [f"{t[f'dice_{k}_fp32']['mean']:.4f} ({t[f'dice_{k}_fp32']['min']:.4f})" for k in split]
        print("| " + " | ".join(cells) + " |")
    print()
    print("time per click (reference pipeline, all test-time flips), median:",
          ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in res["median_click_s"].items()))


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("package", help="model package")
    ap.add_argument("--data", help="folder written by tools/fetch_data.py (for every set but `sample`)")
    ap.add_argument("--sets", default=",".join(SETS),
                    help=f"comma-separated case sets of {', '.join(SETS)} (default all)")
    ap.add_argument("--lesions", type=int, default=60,
                    help="held-out lesions per synthetic set, the evaluation's first ones (default 60, as it)")
    ap.add_argument("--random-clicks", action="store_true",
                    help=f"also the evaluation's {RANDOM_SEEDS} random clicks per lesion and tumour")
    ap.add_argument("--split", action="store_true",
                    help="also bf16 encoder + fp32 decoder and fp32 encoder + bf16 decoder, against fp32")
    ap.add_argument("--threads", type=int, default=2, help="threads per session (default 2)")
    ap.add_argument("--json", help="write the record (every case and the totals) to this JSON file")
    args = ap.parse_args(argv)
    try:
        require_openvino()
    except RuntimeError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    sets = [s for s in args.sets.split(",") if s]
    if any(s != "sample" for s in sets) and not args.data:
        ap.error("--data is needed for every set but `sample`")
    import onnxruntime as ort

    from .reference_pipeline import Pipeline
    configs = {**CONFIGS, **(SPLIT if args.split else {})}
    pipes = {name: Pipeline(args.package, args.threads, providers=enc, decoder_providers=dec)
             for name, (enc, dec) in configs.items()}
    if pipes["fp32"].enc.get_providers()[0] != "OpenVINOExecutionProvider":
        ap.exit(1, f"{ap.prog}: error: OpenVINO did not take the encoder: {pipes['fp32'].enc.get_providers()}\n")
    native = cpu_has_bf16()
    if not native:
        print("note: this CPU has neither AMX-BF16 nor AVX512-BF16: the engine would run fp32 when bf16 is asked "
              "for, and the bf16 figures here are not what it computes")
    t0 = time.time()
    rows, timings = [], {}
    for set_name, case, image, affine, truth, clicks in cases(args.data, sets, args.lesions, args.random_clicks):
        for rule, click in clicks:
            row = {"set": set_name, "case": case, "click": rule, "click_ijk": [float(v) for v in click],
                   **compare(pipes, image, affine, truth, np.asarray(click, np.float64), timings)}
            rows.append(row)
            print(f"  {set_name:10s} {case:22s} {rule:8s} Dice fp32/CPU {row['dice_fp32_cpu']:.4f} "
                  f"bf16/fp32 {row['dice_bf16_fp32']:.4f} ({row['differ_bf16_fp32']} of {row['voxels_fp32']} voxels)  "
                  f"max abs dp {row['maxdp_fp32_cpu']:.1e} {row['maxdp_bf16_fp32']:.1e}  truth {row['truth_cpu']:.3f} {row['truth_fp32']:.3f} "
                  f"{row['truth_bf16']:.3f}", flush=True)
    if not rows:
        ap.error("no cases")
    by_set = {s: [r for r in rows if r["set"] == s] for s in sets}
    res = {"package": os.path.abspath(args.package), "model": pipes["cpu"].manifest["name"],
           "onnxruntime": ort.__version__, "cpu_bf16": native, "threads": args.threads,
           "inference": {"threshold": pipes["cpu"].manifest["threshold"], "test_time_flips": pipes["cpu"].flips,
                         "keep_clicked_components": pipes["cpu"].keep_clicked},
           "providers": {k: list(v) for k, v in configs.items()},
           "rows": rows,
           "totals": {**{s: totals(r) for s, r in by_set.items() if r}, "all": totals(rows)},
           "median_click_s": {k: float(np.median(v)) for k, v in timings.items()},
           "wall_s": round(time.time() - t0, 1)}
    print_tables(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
