"""Evaluate a package on held-out synthetic lesions and on the real tumours; print the tables.

    python -m sam3d_onnx evaluate PKG --data .cache/data [--lesions 60] [--json out.json]

Held-out lesions come from evaluation random streams (never the training stream, so seeds, shapes
and positions differ from every training lesion), inserted at the CT's own resolution, in
  * `heldout-ct`: the 20-slice DICOM CT (totalsegmentator_dicom/), a volume never used in training;
  * `train-ct`:   the training CT (totalsegmentator/example_ct), new lesions only.
Each lesion is segmented from one click, on the original grid, with two click rules:
  * `edt`: the lesion voxel farthest from its boundary (max of the Euclidean distance transform in mm);
  * `random`: a uniformly random lesion voxel (the official protocol), mean Dice over 5 seeds.
The baseline is region growing from the same click (SimpleITK ConnectedThreshold on a smoothed image,
intensity window around the seed's neighbourhood mean, limited to a ball around the click); its three
parameters are tuned on training-stream lesions of the training CT only.
Real tumours: pyradiomics' lung1 CT and brain1 MR (expert masks), same two click rules.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np

from ..export import package
from ..training import dataset, lesions
from .measures import dice, edt_click, read_ijk
from .reference_pipeline import Pipeline, clicked_components
from .region_growing import BASELINE_GRID, region_grow
from .tables import print_tables

EVAL_STREAM = 4_000_002       # held-out lesions; training.demo.TRAIN_STREAM is 4_000_001
TUNE_STREAM = 4_000_001       # the baseline is tuned on lesions of the training stream (training data only)
THRESHOLD_STREAM = 4_000_003  # the model's threshold is tuned on other new lesions of the training CT
RANDOM_SEEDS = 5
ORGAN_SETS = {"heldout-ct": ("spleen", "liver", "pancreas", "kidney_right", "kidney_left", "colon"),
              "train-ct": tuple(dataset.ORGANS)}
VOLUMES = {"heldout-ct": ("totalsegmentator_dicom/example_ct_dicom.nii.gz", "totalsegmentator_dicom/example_seg_dicom.nii.gz"),
           "train-ct": ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz")}
REAL = {"lung1 CT": ("pyradiomics/lung1_image.nrrd", "pyradiomics/lung1_label.nrrd"),
        "brain1 MR": ("pyradiomics/brain1_image.nrrd", "pyradiomics/brain1_label.nrrd")}
THRESHOLD_GRID = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def random_clicks(mask: np.ndarray, n: int, seed: int) -> np.ndarray:
    idx = np.argwhere(mask > 0)
    rng = np.random.default_rng([EVAL_STREAM, 77, seed])
    return idx[rng.integers(0, len(idx), n)]


def load_volume(data: str, name: str):
    img_path, lab_path = (os.path.join(data, p) for p in VOLUMES[name])
    image, affine, sp = read_ijk(img_path)
    labels, _, _ = read_ijk(lab_path)
    return image.astype(np.float32), labels.astype(np.uint8), affine, sp


def lesion_case(image, labels, spacing, organs, stream, i):
    rng = np.random.default_rng([stream, i])
    present = [n for n in organs if (labels == dataset.ORGANS[n]).any()]
    name = present[int(rng.integers(0, len(present)))]
    img, mask, info = lesions.insert_lesion(image, labels == dataset.ORGANS[name], spacing, rng)
    return img, mask.astype(np.uint8), name, info


def tune_baseline(data: str, n: int = 24):
    """Grid-search the baseline's parameters on training-stream lesions of the training CT (EDT clicks)."""
    image, labels, _, sp = load_volume(data, "train-ct")
    cases = []
    for i in range(n):
        img, mask, _, _ = lesion_case(image, labels, sp, ORGAN_SETS["train-ct"], TUNE_STREAM, i)
        cases.append((img, mask, edt_click(mask, sp)))
    best = None
    for tol, sig, rad in itertools.product(*BASELINE_GRID.values()):
        d = np.mean([dice(region_grow(img, sp, c, tol, sig, rad), m) for img, m, c in cases])
        if best is None or d > best[0]:
            best = (float(d), {"tol": tol, "sigma_mm": sig, "radius_mm": rad})
    return best


TUNING_LESIONS = 40


def tune_inference(pipe: Pipeline, data: str, n: int = TUNING_LESIONS, grid=THRESHOLD_GRID, flips=(1, 8)):
    """Mean Dice (EDT clicks) for each threshold, test-time flip count and component rule on `n` new
    lesions of the training CT (THRESHOLD_STREAM: neither training nor evaluation lesions): the
    package's `threshold` and `inference` block are chosen on training data only, as the baseline's
    parameters are. Keys: (threshold, flips, keep_clicked_components)."""
    image, labels, affine, sp = load_volume(data, "train-ct")
    scores = {}
    own = pipe.flips
    try:
        for i in range(n):
            img, mask, _, _ = lesion_case(image, labels, sp, ORGAN_SETS["train-ct"], THRESHOLD_STREAM, i)
            click = edt_click(mask, sp)[None]
            for f in flips:
                pipe.flips = f
                prob = pipe.probability_array(img, affine, click)
                for t in grid:
                    m = (prob > t).astype(np.uint8)
                    scores.setdefault((t, f, False), []).append(dice(m, mask))
                    scores.setdefault((t, f, True), []).append(dice(clicked_components(m, click), mask))
    finally:
        pipe.flips = own
    return {k: float(np.mean(v)) for k, v in scores.items()}


def evaluate_synthetic(pipe: Pipeline, data: str, name: str, n: int, base: dict, log=print):
    image, labels, affine, sp = load_volume(data, name)
    rows = []
    for i in range(n):
        img, mask, organ, info = lesion_case(image, labels, sp, ORGAN_SETS[name], EVAL_STREAM, i)
        e = edt_click(mask, sp)
        rnd = random_clicks(mask, RANDOM_SEEDS, i)
        pred = pipe.segment_array(img, affine, e[None])
        row = {"i": i, "organ": organ, "voxels": int(mask.sum()), "diameter_mm": info.diameter_mm,
               "equivalent_diameter_mm": info.equivalent_diameter_mm, "contrast_hu": info.contrast_hu,
               "model_edt": dice(pred, mask), "model_edt_voxels": int(pred.sum()),
               "model_random": float(np.mean([dice(pipe.segment_array(img, affine, c[None]), mask) for c in rnd])),
               "grow_edt": dice(region_grow(img, sp, e, **base), mask),
               "grow_random": float(np.mean([dice(region_grow(img, sp, c, **base), mask) for c in rnd]))}
        rows.append(row)
        log(f"  {name} #{i:3d} {organ:13s} {row['equivalent_diameter_mm']:5.1f} mm {row['contrast_hu']:+6.1f} HU  "
            f"model {row['model_edt']:.3f}/{row['model_random']:.3f}  grow {row['grow_edt']:.3f}/{row['grow_random']:.3f}")
    return rows


def evaluate_real(pipe: Pipeline, data: str, base: dict):
    out = {}
    for name, (ip, lp) in REAL.items():
        image, affine, sp = read_ijk(os.path.join(data, ip))
        mask, _, _ = read_ijk(os.path.join(data, lp))
        mask = (mask > 0).astype(np.uint8)
        image = image.astype(np.float32)
        e = edt_click(mask, sp)
        rnd = random_clicks(mask, RANDOM_SEEDS, 0)
        out[name] = {"voxels": int(mask.sum()), "spacing_mm": [float(s) for s in sp],
                     "model_edt": dice(pipe.segment_array(image, affine, e[None]), mask),
                     "model_random": float(np.mean([dice(pipe.segment_array(image, affine, c[None]), mask) for c in rnd])),
                     "grow_edt": dice(region_grow(image, sp, e, **base), mask),
                     "grow_random": float(np.mean([dice(region_grow(image, sp, c, **base), mask) for c in rnd]))}
    return out


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("package", help="model package to evaluate")
    ap.add_argument("--data", required=True, help="folder written by tools/fetch_data.py")
    ap.add_argument("--lesions", type=int, default=60, help="held-out lesions per volume (default 60)")
    ap.add_argument("--sets", default="heldout-ct,train-ct",
                    help="comma-separated lesion sets (default heldout-ct,train-ct)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    ap.add_argument("--json", help="also write the whole record (every lesion) to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no line per lesion, only the tables")
    ap.add_argument("--flips", type=int, choices=package.FLIP_COUNTS,
                    help="test-time flips (default: the manifest's inference block)")
    ap.add_argument("--keep-clicked", type=int, choices=(0, 1),
                    help="1 keeps only the mask components a click touches (default: the manifest's)")
    ap.add_argument("--tune-threshold", action="store_true",
                    help="only print the mean Dice per threshold, flip count (1, 8) and component rule on "
                         "tuning lesions of the training CT")
    ap.add_argument("--write", action="store_true",
                    help="with --tune-threshold: write the best setting into the package's manifest")
    args = ap.parse_args(argv)
    t0 = time.time()
    pipe = Pipeline(args.package, args.threads, test_time_flips=args.flips, keep_clicked_components=args.keep_clicked)
    if args.tune_threshold:
        scores = tune_inference(pipe, args.data)
        print("| threshold | flips | keep clicked components | Dice |")
        print("|---|---|---|---|")
        for (t, f, k), d in sorted(scores.items()):
            print(f"| {t:.2f} | {f} | {'yes' if k else 'no'} | {d:.4f} |")
        # ties (the component rule often changes nothing) go to keeping the clicked components, the
        # answer a click asks for, and to fewer flips (cheaper)
        t, f, k = max(scores, key=lambda key: (scores[key], key[2], -key[1]))
        print(f"best: threshold {t:.2f}, flips {f}, keep clicked components {k} "
              f"(manifest: threshold {pipe.manifest['threshold']}, inference {pipe.manifest.get('inference')})")
        if args.write:
            package.set_inference(args.package, threshold=t, test_time_flips=f, keep_clicked_components=k,
                                  chosen_by=f"python -m sam3d_onnx evaluate --tune-threshold: best mean Dice "
                                            f"{scores[(t, f, k)]:.4f} on {TUNING_LESIONS} new lesions of the "
                                            f"training CT (edt clicks)")
            print(f"wrote {os.path.join(args.package, 'sam3d-model.json')}")
        return
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    tuning_dice, base = tune_baseline(args.data)
    log(f"baseline tuned: {base} (Dice {tuning_dice:.3f} on training lesions)")
    # which lesion generator drew the held-out lesions: figures from different versions do not compare
    res = {"package": os.path.abspath(args.package), "model": pipe.manifest["name"],
           "encoder_sha256": pipe.manifest["graphs"]["encoder"]["sha256"]["encoder.onnx"],
           "inference": {"threshold": pipe.manifest["threshold"], "test_time_flips": pipe.flips,
                         "keep_clicked_components": pipe.keep_clicked},
           "lesion_generator": lesions.GENERATOR_VERSION,
           "baseline": {"params": base, "tuning_dice": tuning_dice,
                        "tuned_on": "24 training-stream lesions of the training CT, edt clicks"},
           "synthetic": {}, "real": {}}
    for name in args.sets.split(","):
        res["synthetic"][name] = evaluate_synthetic(pipe, args.data, name, args.lesions, base, log)
    res["real"] = evaluate_real(pipe, args.data, base)
    res["wall_s"] = round(time.time() - t0, 1)
    print_tables(res)
    print(f"\n({res['wall_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
