"""Training samples for the demo model: a real CT with organ labels, a synthetic lesion
inserted inside one organ at the CT's own resolution, then the package contract's preprocessing
(model frame, resampling to the model spacing, clipping, normalisation) and a crop around the lesion.

Every sample is drawn from one seed, so a training or evaluation set is a list of integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .lesions import Lesion, insert_lesion, interior_voxel

# TotalSegmentator 'total' label ids of the organs the paper's tumours live in
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "pancreas": 7, "colon": 20}


@dataclass
class Sample:
    crop: np.ndarray        # (C, C, C) normalised, model frame (D, H, W)
    label: np.ndarray       # (C, C, C) uint8 lesion mask
    organ: str
    lesion: Lesion
    origin: tuple           # crop origin on the model grid


def load_oriented(image_path: str, orientation=("S", "A", "R")):
    """A volume as a float32 array in the model frame (`orientation`: the package's "orient" code),
    with its voxel spacing along the model axes, its affine and the nibabel orientation transform."""
    import nibabel as nib
    from nibabel import orientations as nio

    img = nib.load(image_path)
    t = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(tuple(orientation)))
    arr = nio.apply_orientation(np.asarray(img.get_fdata(dtype=np.float32)), t)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    perm = [int(np.where(t[:, 0] == a)[0][0]) for a in range(3)]
    return np.ascontiguousarray(arr), tuple(float(z) for z in zooms[perm]), img.affine, t


def load_labelled(image_path: str, label_path: str, orientation=("S", "A", "R")):
    """A CT and its label map (same grid) as float32 HU and uint8 arrays in the model frame
    (`orientation`: the package's "orient" code), with the voxel spacing along the model axes."""
    import nibabel as nib
    from nibabel import orientations as nio

    arr, spacing, affine, t = load_oriented(image_path, orientation)
    lab = nib.load(label_path)
    labels = nio.apply_orientation(np.asarray(lab.dataobj).astype(np.uint8), t)
    if labels.shape[:3] != arr.shape or not np.allclose(affine, lab.affine, atol=1e-3):
        raise ValueError(f"{image_path} and {label_path} are not on the same grid")
    return arr, np.ascontiguousarray(labels), spacing


def crop_at(image: np.ndarray, label: np.ndarray, origin, crop: int):
    """The (crop,)*3 box at `origin` (may reach outside) of a normalised image and its label:
    float32 with the normalised pad value 0 outside the volume, uint8 label 0 there."""
    origin = np.asarray(origin)
    out = np.zeros((crop,) * 3, np.float32)
    out_lab = np.zeros((crop,) * 3, np.uint8)
    lo, hi = np.maximum(origin, 0), np.minimum(origin + crop, image.shape)
    if (hi > lo).all():
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
        out[dst], out_lab[dst] = image[src], label[src]
    return out, out_lab


def resample_image(image: np.ndarray, spacing, target) -> np.ndarray:
    """Trilinear resampling from `spacing` to `target` mm (`F.interpolate` with scale factors, as
    the official code)."""
    scale = [float(s) / float(t) for s, t in zip(spacing, target)]
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    return F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)[0, 0].numpy()


def to_model_grid(image: np.ndarray, label: np.ndarray, spacing, target) -> tuple:
    """Resample an image (trilinear, `F.interpolate` with scale factors as the official code) and
    its label (nearest) from `spacing` to `target` mm."""
    img = resample_image(image, spacing, target)
    lab = F.interpolate(torch.from_numpy(np.ascontiguousarray(label, np.float32))[None, None],
                        size=img.shape, mode="nearest")[0, 0].numpy().astype(np.uint8)
    return img, lab


def make_sample(image: np.ndarray, organs: np.ndarray, spacing, rng: np.random.Generator, *, crop: int,
                target_spacing=(1.0, 1.0, 1.0), clip=(-160.0, 240.0), mean=40.0, std=80.0,
                organ_names=tuple(ORGANS), jitter: float = 0.25) -> Sample:
    """One training sample. `image` (HU) and `organs` (TotalSegmentator label ids) are arrays in the
    model frame (D, H, W) with voxel `spacing` in mm. The crop is centred on the lesion, shifted by
    up to `jitter` of the crop edge so the lesion is not always in the middle."""
    return make_sample_at(image, organs, spacing, rng, crop=crop, target_spacing=target_spacing, clip=clip,
                          mean=mean, std=std, organ_names=organ_names, jitter=jitter, centring="centroid")


def make_sample_at(image, organs, spacing, rng, *, crop, target_spacing=(1.0, 1.0, 1.0), clip=(-160.0, 240.0),
                   mean=40.0, std=80.0, organ_names=tuple(ORGANS), jitter=0.25, centring="centroid") -> Sample:
    """`make_sample` with a choice of crop centre: "centroid" (the lesion's centre of mass + up to
    `jitter` of the crop edge) or "voxel" (a uniformly random lesion voxel, as the engine centres its
    crop on a click drawn by the official protocol)."""
    name = _pick_organ(organs, organ_names, rng)
    img, lesion, info = insert_lesion(image, organs == ORGANS[name], spacing, rng)
    img, lab = to_model_grid(img, lesion.astype(np.uint8), spacing, target_spacing)
    empty_centre = np.asarray(info.centre_vox) * np.asarray(spacing) / np.asarray(target_spacing)
    return _crop_sample(img, lab, name, info, rng, crop, clip, mean, std, jitter, centring, empty_centre)


def _pick_organ(organs, organ_names, rng) -> str:
    """One of `organ_names` labelled in `organs`, uniformly."""
    present = [n for n in organ_names if (organs == ORGANS[n]).any()]
    if not present:
        raise ValueError(f"none of the organs {list(organ_names)} is labelled in this volume")
    return present[int(rng.integers(0, len(present)))]


def _crop_sample(img, lab, name, info, rng, crop, clip, mean, std, jitter, centring, empty_centre) -> Sample:
    """The normalised crop of a model-grid image and lesion label around the lesion: centred on a
    random lesion voxel ("voxel") or its centroid + up to `jitter` of the crop ("centroid");
    `empty_centre` when the label is empty."""
    idx = np.argwhere(lab > 0)
    if not len(idx):
        centre = empty_centre
    elif centring == "voxel":
        centre = idx[int(rng.integers(0, len(idx)))].astype(float)
    else:
        centre = idx.mean(0) + rng.uniform(-jitter, jitter, 3) * crop
    origin = np.round(centre).astype(int) - crop // 2
    norm = (np.clip(img, *clip) - mean) / std
    out, out_lab = crop_at(norm, lab, origin, crop)
    return Sample(out, out_lab, name, info, tuple(int(v) for v in origin))


def make_sample_fine(image, organs, spacing, rng, *, crop, target_spacing, fine_spacing, clip=(-160.0, 240.0),
                     mean=40.0, std=80.0, organ_names=tuple(ORGANS), jitter=0.25, centring="centroid",
                     margin_mm: float = 32.0) -> Sample:
    """`make_sample_at` with the lesion drawn on a grid finer than the CT's.

    Why: on the 3 mm training CT a lesion drawn on the CT's own grid is blocky (an 8 mm lesion spans
    under 3 voxels) and its label, taken to the 2 mm model grid by nearest neighbour, is that blocky
    shape shifted by up to half a voxel; a finer scan's lesion (the held-out CT is 0.98x0.98x2 mm) is
    not. Here a box around a random organ voxel (the crop's half-extent + `margin_mm` each side) is
    resampled to `fine_spacing` mm (image trilinear, organ mask trilinear >= 0.5), the lesion is
    inserted there, and the box goes to the model grid: the image trilinear (as `to_model_grid`), the
    label as the fraction of lesion in each model voxel >= 0.5. `lesion.centre_vox` is in the fine
    box's voxels and `origin` on the box's model grid."""
    spacing, fine = np.asarray(spacing, float), np.asarray(fine_spacing, float)
    target = np.asarray(target_spacing, float)
    name = _pick_organ(organs, organ_names, rng)
    organ = organs == ORGANS[name]
    c = interior_voxel(organ, 1.0, rng)        # preferably at least a voxel inside the organ

    half = np.ceil((crop * target / 2 + margin_mm) / spacing).astype(int)
    lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, organ.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    img_f = resample_image(image[box], spacing, fine)
    organ_f = resample_image(organ[box].astype(np.float32), spacing, fine) >= 0.5
    # coarse voxel c lies at fine index (c - lo + 0.5) * spacing / fine - 0.5 (half-pixel convention)
    cf = np.clip(np.round((c - lo + 0.5) * spacing / fine - 0.5).astype(int), 0, np.asarray(img_f.shape) - 1)
    if not organ_f[tuple(cf)]:
        inside = np.argwhere(organ_f)
        if len(inside):
            cf = inside[np.argmin(((inside - cf) ** 2).sum(1))]
        else:  # an organ thinner than half a coarse voxel everywhere in the box
            organ_f[tuple(cf)] = True
    img_f, lesion_f, info = insert_lesion(img_f, organ_f, fine, rng, centre=cf)

    img = resample_image(img_f, fine, target)
    frac = F.interpolate(torch.from_numpy(lesion_f.astype(np.float32))[None, None], size=img.shape,
                         mode="area")[0, 0].numpy()
    lab = (frac >= 0.5).astype(np.uint8)
    if not lab.any():  # a lesion smaller than half a model voxel: keep its most covered voxel
        lab[np.unravel_index(int(np.argmax(frac)), frac.shape)] = 1
    return _crop_sample(img, lab, name, info, rng, crop, clip, mean, std, jitter, centring, None)
