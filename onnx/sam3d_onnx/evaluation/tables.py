"""The evaluation's tables (markdown) from its result record (`evaluate.py`)."""
from __future__ import annotations

import numpy as np

SIZE_BINS = ((0, 12), (12, 20), (20, 30), (30, 1e9))   # equivalent diameter, mm


def summary(values):
    v = np.asarray(values, float)
    q = np.percentile(v, [0, 10, 25, 50, 75, 90, 100])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": q[0], "p10": q[1], "p25": q[2],
            "median": q[3], "p75": q[4], "p90": q[5], "max": q[6],
            "frac_ge_0.8": float((v >= 0.8).mean())}


def print_tables(res: dict):
    print()
    inf = res["inference"]
    print(f"model {res['model']}: threshold {inf['threshold']}, test-time flips {inf['test_time_flips']}, "
          f"keep clicked components {'yes' if inf['keep_clicked_components'] else 'no'}")
    print(f"baseline (region growing) tuned on {res['baseline']['tuned_on']}: {res['baseline']['params']} "
          f"(tuning Dice {res['baseline']['tuning_dice']:.3f})")
    print()
    print("| set | lesions | click | model mean Dice | median | p10 | >= 0.80 | region growing | model - growing |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in res["synthetic"].items():
        for rule in ("edt", "random"):
            m = summary([r["model_" + rule] for r in rows])
            g = summary([r["grow_" + rule] for r in rows])
            print(f"| {name} | {m['n']} | {rule} | {m['mean']:.3f} ± {m['std']:.3f} | {m['median']:.3f} | {m['p10']:.3f} | "
                  f"{100 * m['frac_ge_0.8']:.0f} % | {g['mean']:.3f} | {m['mean'] - g['mean']:+.3f} |")
    print()
    print("Distribution of the model's Dice (edt click), by lesion size (equivalent diameter):")
    print("| set | < 12 mm | 12-20 mm | 20-30 mm | >= 30 mm |")
    print("|---|---|---|---|---|")
    for name, rows in res["synthetic"].items():
        bins = [[r for r in rows if lo <= r["equivalent_diameter_mm"] < hi] for lo, hi in SIZE_BINS]
        cells = [f"{np.mean([r['model_edt'] for r in b]):.3f} (n={len(b)})" if b else "-" for b in bins]
        print(f"| {name} | " + " | ".join(cells) + " |")
        ratios = [[r["model_edt_voxels"] / r["voxels"] for r in b if "model_edt_voxels" in r] for b in bins]
        cells = [f"{np.median(v):.2f}" if v else "-" for v in ratios]
        print(f"| {name}: median mask / lesion volume | " + " | ".join(cells) + " |")
    print()
    print("By organ (edt click): model / region growing")
    organs = sorted({r["organ"] for rows in res["synthetic"].values() for r in rows})
    print("| set | " + " | ".join(organs) + " |")
    print("|---|" + "---|" * len(organs))
    for name, rows in res["synthetic"].items():
        cells = []
        for o in organs:
            sel = [r for r in rows if r["organ"] == o]
            cells.append(f"{np.mean([r['model_edt'] for r in sel]):.3f} / {np.mean([r['grow_edt'] for r in sel]):.3f} "
                         f"(n={len(sel)})" if sel else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| real tumour | voxels | model, edt click | model, random click (5 seeds) | growing, edt | growing, random |")
    print("|---|---|---|---|---|---|")
    for name, r in res["real"].items():
        print(f"| {name} | {r['voxels']} | {r['model_edt']:.3f} | {r['model_random']:.3f} | {r['grow_edt']:.3f} | "
              f"{r['grow_random']:.3f} |")
