"""The standard interactive protocol on held-out lesions and real tumours, through the engine itself
(the `sam3d` Python binding over libsam3d).

    python -m sam3d_onnx interactive PKG --data .cache/data [--lesions 20] [--large 20] [--json out.json]

Each case starts with one click at the lesion voxel farthest from its boundary; each next click goes
to the centre (the voxel farthest from the region's boundary) of the largest error region (26-connected)
of the current mask: a false negative gets a positive click, a false positive a negative one. Up to
`MAX_CLICKS` clicks. Protocols:
  * `positive`: positive clicks only (false positives are left alone), automatic zoom-out off: the
    pipeline as it was before zoom-out;
  * `positive+zoom`: the same with automatic zoom-out (the engine's default);
  * `negative+zoom`: positive and negative clicks (only for packages trained with negative clicks);
  * `box`: first a box from the truth's bounding box with a 10 % margin per side, then clicks as in
    `positive+zoom` (negative ones where the package takes them).
Reported per lesion size (equivalent diameter < 12, 12-30, >= 30 mm): mean Dice after 1, 3 and 5
interactions, and the mean number of interactions to reach Dice 0.80 and 0.85 (a case that never
reaches it counts as `MAX_CLICKS`).

Cases: `heldout-ct` and `train-ct` lesions of the evaluation stream (8-40 mm, as `evaluate` draws
them), `large` lesions of 30-80 mm on the training CT from a stream of their own, and the real tumours
(pyradiomics lung1 CT and brain1 MR with their expert masks).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ..training import lesions
from .evaluate import EVAL_STREAM, ORGAN_SETS, REAL, load_volume, lesion_case
from .measures import dice, edt_click, largest_error_region, read_ijk

MAX_CLICKS = 10
LARGE_STREAM = EVAL_STREAM + 10     # held-out large lesions: neither training nor the other evaluation streams
SIZE_BINS = ((0.0, 12.0, "< 12 mm"), (12.0, 30.0, "12-30 mm"), (30.0, float("inf"), ">= 30 mm"))
PROTOCOLS = ("positive", "positive+zoom", "negative+zoom", "box")
BOX_MARGIN = 0.10


def next_click(pred: np.ndarray, truth: np.ndarray, spacing, negatives: bool):
    """(voxel, positive) at the centre of the largest error region (`largest_error_region`), or None
    when there is none. Without negatives only false-negative regions count."""
    found = largest_error_region(pred, truth, negatives)
    if found is None:
        return None
    region, positive = found
    idx = np.argwhere(region)
    lo, hi = idx.min(0), idx.max(0) + 1
    sub = region[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    c = edt_click(sub.astype(np.uint8), spacing)
    return tuple(int(c[a] + lo[a]) for a in range(3)), positive


def truth_box(truth: np.ndarray):
    idx = np.argwhere(truth > 0)
    lo, hi = idx.min(0).astype(float), idx.max(0).astype(float)
    m = (hi - lo + 1.0) * BOX_MARGIN
    return lo - m, hi + m


def run_case(model, image, affine, truth, spacing, protocol: str, negatives_ok: bool):
    """Dice after each interaction (MAX_CLICKS of them; repeated once the mask is exact)."""
    import sam3d
    vol = sam3d.Volume.from_array(np.asfortranarray(image, np.float32),
                                  geometry=sam3d.Geometry.from_ras_affine(affine, image.shape))
    s = sam3d.Session(model, vol)
    s.set_zoom_out(1 if protocol == "positive" else 4)
    o = s.add_object()
    negatives = negatives_ok and protocol in ("negative+zoom", "box")
    scores = []
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sam3d.EmptyMaskWarning)
        if protocol == "box":
            lo, hi = truth_box(truth)
            s.set_box(o, lo, hi)
        else:
            s.click(o, edt_click(truth, spacing))
        scores.append(dice(s.mask(o), truth))
        while len(scores) < MAX_CLICKS:
            pred = s.mask(o)
            nc = next_click(pred, truth, spacing, negatives)
            if nc is None:
                scores.append(scores[-1])
                continue
            s.click(o, nc[0], positive=nc[1])
            scores.append(dice(s.mask(o), truth))
    s.close()
    vol.close()
    return scores


def noc(scores, target):
    for i, d in enumerate(scores):
        if d >= target:
            return i + 1
    return MAX_CLICKS


def cases(data: str, n: int, n_large: int):
    for name in ("heldout-ct", "train-ct"):
        image, labels, affine, sp = load_volume(data, name)
        for i in range(n):
            img, mask, organ, info = lesion_case(image, labels, sp, ORGAN_SETS[name], EVAL_STREAM, i)
            yield f"{name} #{i}", img, affine, mask, sp, info.equivalent_diameter_mm
    image, labels, affine, sp = load_volume(data, "train-ct")
    from ..training import dataset
    organs = ("liver", "spleen", "kidney_right", "kidney_left")
    for i in range(n_large):
        rng = np.random.default_rng([LARGE_STREAM, i])
        present = [o for o in organs if (labels == dataset.ORGANS[o]).any()]
        organ = present[int(rng.integers(0, len(present)))]
        img, mask, info = lesions.insert_lesion(image, labels == dataset.ORGANS[organ], sp, rng,
                                                diameter_mm=(30.0, 80.0))
        yield f"large #{i} ({organ})", img, affine, mask.astype(np.uint8), sp, info.equivalent_diameter_mm
    for name, (ip, lp) in REAL.items():
        p_img, p_lab = os.path.join(data, ip), os.path.join(data, lp)
        if not (os.path.exists(p_img) and os.path.exists(p_lab)):
            continue
        image, affine, sp = read_ijk(p_img)
        mask, _, _ = read_ijk(p_lab)
        mask = (mask > 0).astype(np.uint8)
        eq = float((6.0 * mask.sum() * np.prod(sp) / np.pi) ** (1.0 / 3.0))
        yield name, image.astype(np.float32), affine, mask, sp, eq


def summarise(rows, protocols):
    lines = ["| protocol | lesions | n | Dice@1 | Dice@3 | Dice@5 | NoC@80 | NoC@85 |", "|---|---|---|---|---|---|---|---|"]
    for p in protocols:
        for lo, hi, label in SIZE_BINS + ((0.0, float("inf"), "all"),):
            sel = [r for r in rows if lo <= r["diameter_mm"] < hi and p in r["scores"]]
            if not sel:
                continue
            sc = np.array([r["scores"][p] for r in sel])
            lines.append(f"| {p} | {label} | {len(sel)} | {sc[:, 0].mean():.3f} | {sc[:, 2].mean():.3f} | "
                         f"{sc[:, 4].mean():.3f} | {np.mean([noc(s, 0.80) for s in sc]):.2f} | "
                         f"{np.mean([noc(s, 0.85) for s in sc]):.2f} |")
    return "\n".join(lines)


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("package", help="model package to evaluate")
    ap.add_argument("--data", required=True, help="folder written by tools/fetch_data.py")
    ap.add_argument("--lesions", type=int, default=20, help="held-out 8-40 mm lesions per CT (default 20)")
    ap.add_argument("--large", type=int, default=20, help="held-out 30-80 mm lesions (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="engine threads (default 2)")
    ap.add_argument("--json", help="also write every case's Dice per interaction to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="only the table")
    args = ap.parse_args(argv)
    import sam3d
    t0 = time.time()
    model = sam3d.Model(sam3d.Runtime(), args.package, threads=args.threads)
    negatives_ok = "negative" in model.prompts
    protocols = [p for p in PROTOCOLS if p != "negative+zoom" or negatives_ok]
    rows = []
    for name, img, affine, mask, sp, diam in cases(args.data, args.lesions, args.large):
        row = {"case": name, "diameter_mm": float(diam), "scores": {}}
        for p in protocols:
            row["scores"][p] = run_case(model, img, affine, mask, sp, p, negatives_ok)
        rows.append(row)
        if not args.quiet:
            print(f"  {name:26s} {diam:5.1f} mm  " + "  ".join(
                f"{p} {row['scores'][p][0]:.3f}/{row['scores'][p][4]:.3f}" for p in protocols), flush=True)
    print(f"\ninteractive protocol, {model.info['name']}: Dice after 1/3/5 interactions, interactions to "
          f"Dice 0.80/0.85 (at most {MAX_CLICKS})"
          + ("" if negatives_ok else "; the package takes no negative clicks, so `negative+zoom` is left out "
             "and the box protocol's corrections are positive only"))
    print(summarise(rows, protocols))
    wall = time.time() - t0
    print(f"\n({wall:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"package": os.path.abspath(args.package), "protocols": protocols, "cases": rows,
                       "wall_s": round(wall, 1)}, f, indent=1)
