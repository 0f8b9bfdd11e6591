"""Seeded synthetic lesions inserted inside organ labels of real CTs (the demo model's training data).

Like the paper's tumours they are small, irregular and low-contrast: a union of 1-3 randomly rotated
ellipsoids whose surface is perturbed by smooth noise, 8-40 mm across, kept inside the organ, with a
contrast of -60..+60 HU (|contrast| >= 15 HU) against the organ around it, a noise texture and a
blurred edge. Everything is drawn from one `numpy.random.Generator`, so a seed reproduces a lesion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Lesion:
    centre_vox: tuple
    diameter_mm: float          # drawn size (the largest possible extent of a blob)
    contrast_hu: float
    voxels: int
    equivalent_diameter_mm: float  # of the sphere with the mask's volume


def gaussian_blur(x: np.ndarray, sigma_vox, mode: str = "reflect") -> np.ndarray:
    """Separable Gaussian blur of a 3-D array; sigma per axis in voxels; `mode` "reflect" or
    "constant" (zeros outside: the volume's border counts as outside)."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]
    for ax, s in enumerate(np.broadcast_to(np.asarray(sigma_vox, float), 3)):
        if s <= 0:
            continue
        r = max(1, int(np.ceil(3 * s)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / s) ** 2)
        k = (k / k.sum()).reshape([1, 1] + [len(k) if a == ax else 1 for a in range(3)])
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = r
        # reflect needs the axis longer than the padding; a short axis repeats its edge instead
        m = "replicate" if mode == "reflect" and r > t.shape[2 + ax] - 1 else mode
        t = F.conv3d(F.pad(t, pad, mode=m), k)
    return t[0, 0].numpy()


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def interior_voxel(organ: np.ndarray, sigma_vox, rng: np.random.Generator, cand: np.ndarray = None) -> np.ndarray:
    """A random voxel of the boolean `organ` mask whose Gaussian-blurred mask (sigma per axis in
    voxels, the volume's outside counting as outside) is above 0.9, i.e. about sigma inside; any organ
    voxel when none is. Blurred over the organ's bounding box + the kernel radius only (same values,
    much faster). `cand`: np.argwhere(organ) when the caller has it."""
    cand = np.argwhere(organ) if cand is None else cand
    sigma = np.broadcast_to(np.asarray(sigma_vox, float), 3)
    r = np.ceil(3 * sigma).astype(int) + 1
    blo, bhi = np.maximum(cand.min(0) - r, 0), np.minimum(cand.max(0) + r + 1, organ.shape)
    bbox = tuple(slice(a, b) for a, b in zip(blo, bhi))
    inner = gaussian_blur(organ[bbox].astype(np.float32), sigma, mode="constant") > 0.9
    pool = np.argwhere(inner & organ[bbox]) + blo
    pool = pool if len(pool) else cand
    return pool[rng.integers(0, len(pool))]


# the generator's version, recorded with what it made: 2 = a bowel lesion is a soft-tissue mass
# (tissue_level); version 1 drew bowel lesions at their lumen's gas level
GENERATOR_VERSION = 2

# a hollow organ's label (bowel) also holds its lumen: voxels at or below GAS_HU are gas; its wall is
# the voxels above WALL_HU (soft tissue, not the gas/wall partial-volume mix)
GAS_HU = -200.0
WALL_HU = -50.0
SOFT_TISSUE_HU = 40.0   # the level when an organ shows no soft tissue at all


def tissue_level(ring: np.ndarray, organ) -> float:
    """The HU a lesion's contrast is measured against: the median of the ring around it (else of the
    whole organ); where that holds gas (bowel), the median of its wall's soft tissue only. `organ`: the
    organ's values, or a function giving them (gathered only when the ring shows no tissue)."""
    for vals in (ring, organ):
        if callable(vals):
            vals = vals()
        if vals.size == 0:
            continue
        if (vals > GAS_HU).all():
            return float(np.median(vals))         # a solid organ: its plain median
        wall = vals[vals > WALL_HU]
        if wall.size:
            return float(np.median(wall))
    return SOFT_TISSUE_HU


def insert_lesion(image: np.ndarray, organ: np.ndarray, spacing, rng: np.random.Generator,
                  diameter_mm=(8.0, 40.0), contrast_hu=(-60.0, 60.0), min_contrast_hu=15.0,
                  texture_hu=(4.0, 12.0), centre=None):
    """Insert one lesion into `image` (HU, any axis order) inside the boolean `organ` mask.

    Returns (new image, lesion mask, Lesion). The mask is the lesion's extent inside the organ; the
    image changes only within a few voxels of it (blurred edge). `centre` (a voxel index) fixes the
    lesion's centre instead of drawing it (`dataset.make_sample_fine` picks it on the coarse grid)."""
    spacing = np.asarray(spacing, float)
    organ = organ.astype(bool)
    cand = np.argwhere(organ)
    if len(cand) == 0:
        raise ValueError("the organ mask is empty")
    diam = float(rng.uniform(*diameter_mm))
    while True:
        contrast = float(rng.uniform(*contrast_hu))
        if abs(contrast) >= min_contrast_hu:
            break
    if centre is None:
        # prefer centres at least a quarter diameter inside the organ and the volume
        centre = interior_voxel(organ, diam / 4 / spacing, rng, cand)
    centre = np.asarray(centre, int)

    # work in a box around the centre
    half = np.ceil(0.75 * diam / spacing).astype(int) + 3
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing)], indexing="ij")
    pts = np.stack(grids, -1)                                         # mm offsets from the centre
    field = np.full(pts.shape[:3], np.inf)
    for _ in range(int(rng.integers(1, 4))):
        radii = diam / 2 * rng.uniform(0.5, 1.0, 3)
        off = rng.uniform(-diam / 4, diam / 4, 3) if np.isfinite(field).any() else np.zeros(3)
        local = (pts - off) @ _rotation(rng).T / radii
        field = np.minimum(field, np.sqrt((local ** 2).sum(-1)))
    noise = gaussian_blur(rng.normal(size=field.shape).astype(np.float32), diam / 6 / spacing)
    noise /= noise.std() + 1e-6
    shape = (field + 0.15 * noise) <= 1.0
    lesion = np.zeros(image.shape, bool)
    lesion[box] = shape & organ[box]
    if lesion.sum() == 0:  # the organ is thinner than the lesion here: keep at least the centre
        lesion[tuple(centre)] = True

    # intensities: organ level around the lesion + contrast + texture, blended over a soft edge.
    # The level is the organ's soft tissue: a bowel label also holds its lumen's gas, and a tumour there
    # is a soft-tissue mass against the wall, not a pocket of gas (which no CT window would show).
    level = tissue_level(image[box][organ[box] & ~lesion[box]], lambda: image[organ])
    tex = gaussian_blur(rng.normal(size=field.shape).astype(np.float32), 1.0)
    tex *= rng.uniform(*texture_hu) / (tex.std() + 1e-6)
    alpha = gaussian_blur(lesion[box].astype(np.float32), rng.uniform(0.5, 1.2) / spacing * spacing.min())
    alpha = np.where(organ[box] | lesion[box], alpha, 0.0)
    out = image.astype(np.float32, copy=True)
    sub = out[box]
    sub = np.where(lesion[box] & (sub <= GAS_HU), level, sub)   # the mass displaces the gas it fills
    out[box] = (1 - alpha) * sub + alpha * (level + contrast + tex)
    n = int(lesion.sum())
    eq = float((6.0 * n * np.prod(spacing) / np.pi) ** (1.0 / 3.0))
    return out, lesion, Lesion(tuple(int(c) for c in centre), diam, contrast, n, eq)
