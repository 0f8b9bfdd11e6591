"""Dataset presets of the released checkpoints (the official `dataset/datasets.py`).

The released models were trained on the raw nibabel array order (no reorientation), transposed per
dataset: the package says `"mode": "array"` with that transpose, and the engine warns that results
depend on how a file is stored.
"""
from __future__ import annotations

OFFICIAL_LICENCE = ("none stated by the authors: the 3DSAM-adapter repository and its released "
                    "checkpoints carry no licence (all rights reserved by the authors); the SAM ViT-B "
                    "weights they start from are Apache-2.0")

DATASETS = {
    "kits": dict(target="KiTS21 kidney tumour (label 2)", transpose=[0, 1, 2],
                 clip=[-54.0, 247.0], mean=59.53867, std=55.457336),
    "lits": dict(target="LiTS17 liver tumour (label 2)", transpose=[2, 1, 0],
                 clip=[-48.0, 163.0], mean=60.057533, std=40.198017),
    "pancreas": dict(target="MSD pancreas tumour (label 2)", transpose=[2, 1, 0],
                     clip=[-39.0, 204.0], mean=68.45214, std=63.422806),
    "colon": dict(target="MSD colon cancer (label 1)", transpose=[2, 1, 0],
                  clip=[-57.0, 175.0], mean=65.175035, std=32.651197),
}


def preset_fields(name: str) -> dict:
    """Manifest fields (frame, intensity, licence, description) of a dataset preset."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset preset {name!r}; choose one of {sorted(DATASETS)}")
    d = DATASETS[name]
    return {
        "name": f"{name}-tumour",
        "description": f"3DSAM-adapter, {d['target']}, converted from the released checkpoint",
        "licence": OFFICIAL_LICENCE,
        "frame": {"mode": "array", "orientation": None, "array_transpose": list(d["transpose"])},
        "spacing_mm": [1.0, 1.0, 1.0],
        "intensity": {"clip": list(d["clip"]), "mean": d["mean"], "std": d["std"], "nonfinite": "error"},
    }
