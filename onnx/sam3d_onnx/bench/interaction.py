"""Click latency of the interactive prompts through the engine (the `sam3d` binding): follow-up clicks
with automatic zoom-out off (the pipeline before it: the reference in the same run) and on, a follow-up
click that the coarser level answers, a negative click, a click after a box, and the first click's
cost with and without zoom-out.

    python -m sam3d_onnx bench-interaction --data .cache/data [--package models/demo-lesion]
        [--labelled PKG] [--repeat 9]

Volumes: the demo's sample CT (a 20 mm lesion the package's spacing answers) and a held-out 30-80 mm
lesion on the training CT (`evaluation.interactive` large #0, which the coarser level answers).
Medians of `--repeat` sessions; each session's first click encodes, the follow-ups reuse its regions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def _case(model, vol, click, near, zoom_out: int, repeat: int, negative=False, box=None):
    import sam3d
    first, follow, zooms = [], [], []
    for _ in range(repeat):
        s = sam3d.Session(model, vol)
        s.set_zoom_out(zoom_out)
        o = s.add_object()
        if box is not None:
            t, r = _timed(lambda: s.set_box(o, *box))
        else:
            t, r = _timed(lambda: s.click(o, click))
        first.append(t)
        t, r = _timed(lambda: s.click(o, near, positive=not negative))
        follow.append(t)
        zooms.append(r.zoom)
        s.close()
    return {"first_s": statistics.median(first), "follow_up_s": statistics.median(follow),
            "zoom": max(set(zooms), key=zooms.count)}


def run(data: str, package: str, labelled: str = None, repeat: int = 9, threads: int = 0):
    import nibabel as nib
    import sam3d

    from ..evaluation.interactive import cases
    from ..evaluation.measures import edt_click

    rt = sam3d.Runtime()
    model = sam3d.Model(rt, package, threads=threads)
    rows = {}
    sample = os.path.join(REPO, "examples", "data", "sample_ct_lesion")
    meta = json.load(open(sample + ".json"))
    img = nib.load(sample + ".nii.gz")
    arr = np.asarray(img.dataobj)
    vol = sam3d.Volume.from_array(arr, geometry=sam3d.Geometry.from_ras_affine(img.affine, arr.shape))
    c = np.asarray(meta["click_ijk"], float)
    near = c + [1.0, 0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sam3d.EmptyMaskWarning)
        rows["sample, zoom-out off (reference)"] = _case(model, vol, c, near, 1, repeat)
        rows["sample, zoom-out on"] = _case(model, vol, c, near, 4, repeat)
        lo, hi = c - [12, 12, 5], c + [12, 12, 5]
        rows["sample, box then a click"] = _case(model, vol, c, near, 4, repeat, box=(lo, hi))
        # the large lesion: zoom-out answers
        name, im, affine, mask, sp, diam = next(iter(cases(data, 0, 1)))
        lvol = sam3d.Volume.from_array(np.asfortranarray(im, np.float32),
                                       geometry=sam3d.Geometry.from_ras_affine(affine, im.shape))
        e = edt_click(mask, sp).astype(float)
        rows[f"{name} {diam:.0f} mm, zoom-out off"] = _case(model, lvol, e, e + [1.0, 0, 0], 1, repeat)
        rows[f"{name} {diam:.0f} mm, zoom-out on"] = _case(model, lvol, e, e + [1.0, 0, 0], 4, repeat)
        if labelled:
            lmodel = sam3d.Model(rt, labelled, threads=threads)
            rows["sample, negative follow-up (labelled package)"] = _case(lmodel, vol, c, c + [6.0, 0, 0], 4, repeat,
                                                                          negative=True)
    return rows


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder written by tools/fetch_data.py")
    ap.add_argument("--package", default=os.path.join(REPO, "models", "demo-lesion"),
                    help="package to time (default models/demo-lesion)")
    ap.add_argument("--labelled", help="a package with negative clicks (default: none)")
    ap.add_argument("--repeat", type=int, default=9, help="sessions per case (default 9)")
    ap.add_argument("--threads", type=int, default=0, help="engine threads (default 0: all cores)")
    args = ap.parse_args(argv)
    rows = run(args.data, args.package, args.labelled, args.repeat, args.threads)
    print(f"interaction latency, {os.path.basename(os.path.normpath(args.package))}, {platform.machine()} "
          f"{os.cpu_count()} cores, medians of {args.repeat} sessions")
    print("| case | first interaction | follow-up click | zoom that answered |")
    print("|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['first_s'] * 1000:.0f} ms | {r['follow_up_s'] * 1000:.1f} ms | {r['zoom']:g} |")
