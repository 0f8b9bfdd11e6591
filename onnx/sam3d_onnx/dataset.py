"""Training samples for the demo model (issue 4): a real CT with organ labels, a synthetic lesion
inserted inside one organ at the CT's own resolution, then the package contract's preprocessing
(model frame, resampling to the model spacing, clipping, normalisation) and a crop around the lesion.

Every sample is drawn from one seed, so a training or evaluation set is a list of integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .lesions import Lesion, insert_lesion

# TotalSegmentator 'total' label ids of the organs the paper's tumours live in
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "pancreas": 7, "colon": 20}


@dataclass
class Sample:
    crop: np.ndarray        # (C, C, C) normalised, model frame (D, H, W)
    label: np.ndarray       # (C, C, C) uint8 lesion mask
    organ: str
    lesion: Lesion
    origin: tuple           # crop origin on the model grid


def to_model_grid(image: np.ndarray, label: np.ndarray, spacing, target) -> tuple:
    """Resample an image (trilinear, `F.interpolate` with scale factors as the official code) and
    its label (nearest) from `spacing` to `target` mm."""
    scale = [float(s) / float(t) for s, t in zip(spacing, target)]
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    img = F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)[0, 0].numpy()
    lab = F.interpolate(torch.from_numpy(np.ascontiguousarray(label, np.float32))[None, None],
                        size=img.shape, mode="nearest")[0, 0].numpy().astype(np.uint8)
    return img, lab


def make_sample(image: np.ndarray, organs: np.ndarray, spacing, rng: np.random.Generator, *, crop: int,
                target_spacing=(1.0, 1.0, 1.0), clip=(-160.0, 240.0), mean=40.0, std=80.0,
                organ_names=tuple(ORGANS), jitter: float = 0.25) -> Sample:
    """One training sample. `image` (HU) and `organs` (TotalSegmentator label ids) are arrays in the
    model frame (D, H, W) with voxel `spacing` in mm. The crop is centred on the lesion, shifted by
    up to `jitter` of the crop edge so the lesion is not always in the middle."""
    present = [n for n in organ_names if (organs == ORGANS[n]).any()]
    if not present:
        raise ValueError(f"none of the organs {list(organ_names)} is labelled in this volume")
    name = present[int(rng.integers(0, len(present)))]
    img, lesion, info = insert_lesion(image, organs == ORGANS[name], spacing, rng)
    img, lab = to_model_grid(img, lesion.astype(np.uint8), spacing, target_spacing)
    idx = np.argwhere(lab > 0)
    centre = idx.mean(0) if len(idx) else (np.asarray(info.centre_vox) * np.asarray(spacing) / np.asarray(target_spacing))
    centre = np.round(centre + rng.uniform(-jitter, jitter, 3) * crop).astype(int)
    origin = centre - crop // 2
    norm = (np.clip(img, *clip) - mean) / std
    out = np.zeros((crop,) * 3, np.float32)   # outside the volume: the normalised pad value 0
    out_lab = np.zeros((crop,) * 3, np.uint8)
    lo = np.maximum(origin, 0)
    hi = np.minimum(origin + crop, img.shape)
    if (hi > lo).all():
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
        out[dst] = norm[src]
        out_lab[dst] = lab[src]
    return Sample(out, out_lab, name, info, tuple(int(v) for v in origin))
