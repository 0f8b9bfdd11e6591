"""The evaluation's baseline: region growing from the click (SimpleITK ConnectedThreshold on a smoothed
image, intensity window around the seed's neighbourhood mean, limited to a ball around the click)."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def region_grow(image: np.ndarray, spacing, click, tol: float, sigma_mm: float, radius_mm: float) -> np.ndarray:
    """Voxels connected to `click` whose (smoothed) intensity is within `tol` of the mean of the
    click's 3x3x3 neighbourhood, no farther than `radius_mm` from the click."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose(2, 1, 0), np.float32))
    img.SetSpacing([float(s) for s in spacing])
    if sigma_mm > 0:
        img = sitk.SmoothingRecursiveGaussian(img, sigma_mm)
    sm = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    c = np.asarray(click, int)
    lo, hi = np.maximum(c - 1, 0), np.minimum(c + 2, sm.shape)
    level = float(sm[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].mean())
    seed = [int(c[0]), int(c[1]), int(c[2])]
    grown = sitk.ConnectedThreshold(img, seedList=[seed], lower=level - tol, upper=level + tol)
    out = sitk.GetArrayFromImage(grown).transpose(2, 1, 0) > 0
    if np.isfinite(radius_mm):
        # only the box around the click can be within the radius
        r = np.ceil(radius_mm / np.asarray(spacing)).astype(int)
        blo, bhi = np.maximum(c - r, 0), np.minimum(c + r + 1, out.shape)
        box = tuple(slice(a, b) for a, b in zip(blo, bhi))
        g = np.meshgrid(*[(np.arange(a, b) - ci) * s for a, b, ci, s in zip(blo, bhi, c, spacing)], indexing="ij")
        ball = np.zeros_like(out)
        ball[box] = sum(x * x for x in g) <= radius_mm ** 2
        out &= ball
    return out.astype(np.uint8)


BASELINE_GRID = {"tol": (10.0, 20.0, 30.0, 45.0), "sigma_mm": (0.0, 1.5, 3.0), "radius_mm": (15.0, 25.0, np.inf)}
