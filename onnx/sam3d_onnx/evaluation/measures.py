"""Volumes in the file's own array order (i, j, k) with a RAS affine, as nibabel gives them, and the
evaluation's measures: Dice, and the click farthest from a mask's boundary."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def read_ijk(path: str):
    """(array (i, j, k), RAS affine, spacing) of any file SimpleITK reads (NIfTI, NRRD)."""
    img = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    sp = np.asarray(img.GetSpacing())
    lps = np.eye(4)
    lps[:3, :3] = d * sp
    lps[:3, 3] = img.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, sp


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)


def edt_click(mask: np.ndarray, spacing) -> np.ndarray:
    """The voxel (i, j, k) farthest from the mask's boundary: the maximum over lesion voxels of the
    Euclidean distance (mm) to the nearest non-lesion voxel (scipy's distance_transform_edt with
    sampling; the volume's outside counts as non-lesion). First in C order on ties."""
    bg = np.pad(mask == 0, 1, constant_values=True).astype(np.uint8)
    img = sitk.GetImageFromArray(bg.transpose(2, 1, 0))
    img.SetSpacing([float(s) for s in spacing])
    # distance of every voxel outside the background set to that set's nearest voxel
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                                               useImageSpacing=True)).transpose(2, 1, 0)[1:-1, 1:-1, 1:-1]
    dist = np.where(mask > 0, dist, -np.inf)
    return np.asarray(np.unravel_index(int(np.argmax(dist)), mask.shape))


def largest_error_region(pred: np.ndarray, truth: np.ndarray, negatives: bool = True):
    """(region, positive) of the interactive protocol's next click: the largest 26-connected error
    region (SimpleITK's labelling) among the false negatives (positive True) and, with `negatives`,
    the false positives (positive False); None when there is no error of those kinds."""
    fn = truth.astype(bool) & ~pred.astype(bool)
    fp = pred.astype(bool) & ~truth.astype(bool)
    best = None
    for err, positive in ((fn, True), (fp, False)) if negatives else ((fn, True),):
        if not err.any():
            continue
        img = sitk.GetImageFromArray(np.ascontiguousarray(err.transpose(2, 1, 0), np.uint8))
        lab = sitk.RelabelComponent(sitk.ConnectedComponent(img, True), sortByObjectSize=True)
        region = sitk.GetArrayFromImage(lab).transpose(2, 1, 0) == 1
        n = int(region.sum())
        if best is None or n > best[0]:
            best = (n, region, positive)
    return None if best is None else best[1:]
