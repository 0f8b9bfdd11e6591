"""The model-package contract's inference pipeline written the way the official code does it
(nibabel + PyTorch `F.interpolate` on the whole volume + ONNX Runtime): the independent reference
that the Rust engine's masks are compared with.

    python -m sam3d_onnx reference PKG VOLUME.nii.gz --click i,j,k [--click ...] --out ref.nii.gz \
        [--flips 1|2|4|8] [--keep-clicked 0|1]

Clicks are continuous voxel indices (i, j, k) of the file's array. nibabel's choice of affine (sform
first) is used, so test files should have qform and sform agree or only one of them set.
"""
from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np
import onnxruntime as ort
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from nibabel import orientations as nio

from ..export.package import FLIP_COUNTS, execution_providers, session_options


def inference_settings(manifest: dict) -> dict:
    """The manifest's optional `inference` block with its defaults (absent: one pass, all components)."""
    inf = manifest.get("inference") or {}
    return {"test_time_flips": int(inf.get("test_time_flips", 1)),
            "keep_clicked_components": bool(inf.get("keep_clicked_components", False))}


def flip_axes(b: int):
    """Crop axes (D, H, W) that test-time flip number `b` reverses: bit a of b flips axis a."""
    return tuple(a for a in range(3) if (b >> a) & 1)


def clicked_components(mask: np.ndarray, clicks_ijk) -> np.ndarray:
    """The mask's 26-connected components that contain a click's nearest voxel (SimpleITK's labelling);
    the mask unchanged when no click lies on it."""
    lab = sitk.GetArrayFromImage(sitk.ConnectedComponent(
        sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0), np.uint8)), True)).transpose(2, 1, 0)
    vox = np.clip(np.floor(np.asarray(clicks_ijk, np.float64).reshape(-1, 3) + 0.5).astype(int), 0,
                  np.asarray(mask.shape) - 1)
    keep = sorted({int(lab[tuple(v)]) for v in vox} - {0})
    if not keep:
        return mask
    return np.isin(lab, keep).astype(mask.dtype)


def frame_transform(affine, frame):
    """nibabel orientation transform from the file's array to the model frame (None: array mode)."""
    if frame["mode"] == "array":
        return None
    start = nio.io_orientation(affine)
    return nio.ornt_transform(start, nio.axcodes2ornt(tuple(frame["orientation"])))


def _session(path: str, opts, providers, threads: int):
    if providers is None:
        return ort.InferenceSession(path, opts)
    if isinstance(providers, str):
        providers = execution_providers(providers, threads)
    return ort.InferenceSession(path, opts, providers=providers)


class Pipeline:
    """One package's sessions, loaded once; `segment_array` runs the contract's pipeline."""

    def __init__(self, pkg_dir: str, threads: int = 1, test_time_flips=None, keep_clicked_components=None,
                 providers=None, decoder_providers=None):
        """`providers`: None (ONNX Runtime's own choice, the CPU provider of a stock build), a name
        of package.PROVIDER_NAMES ("cpu", "openvino-fp32", "openvino-bf16": the engine's settings) or
        an ONNX Runtime providers list; `decoder_providers` (default: the same) gives the decoder
        others, to tell which graph a difference between providers comes from."""
        with open(os.path.join(pkg_dir, "sam3d-model.json")) as f:
            self.manifest = json.load(f)
        inf = inference_settings(self.manifest)
        self.flips = inf["test_time_flips"] if test_time_flips is None else int(test_time_flips)
        self.keep_clicked = (inf["keep_clicked_components"] if keep_clicked_components is None
                             else bool(keep_clicked_components))
        if self.flips not in FLIP_COUNTS:
            raise ValueError(f"test_time_flips must be one of {FLIP_COUNTS}, not {self.flips}")
        opts = session_options(threads)
        self.enc = _session(os.path.join(pkg_dir, "encoder.onnx"), opts, providers, threads)
        self.dec = _session(os.path.join(pkg_dir, "decoder.onnx"), opts,
                            providers if decoder_providers is None else decoder_providers, threads)
        # the extended architecture's decoder takes each click's label
        self.takes_labels = any(i.name == "labels" for i in self.dec.get_inputs())

    def segment_array(self, arr: np.ndarray, affine: np.ndarray, clicks_ijk, labels=None,
                      zoom: float = 1.0) -> np.ndarray:
        """uint8 mask on the grid of `arr` (i, j, k) whose voxel-to-RAS matrix is `affine`; `labels`
        (1 positive, 0 negative; default all positive) and `zoom` as `probability_array`. The
        clicked-component rule keeps the components that hold a positive click."""
        return self.mask(self.probability_array(arr, affine, clicks_ijk, labels, zoom), clicks_ijk, labels)

    def mask(self, prob: np.ndarray, clicks_ijk, labels=None) -> np.ndarray:
        """`segment_array`'s mask from `probability_array`'s answer: the manifest's threshold, then
        the clicked-component rule."""
        mask = (prob > self.manifest["threshold"]).astype(np.uint8)
        if not self.keep_clicked:
            return mask
        clicks = np.asarray(clicks_ijk, np.float64).reshape(-1, 3)
        lab = np.ones(len(clicks)) if labels is None else np.asarray(labels)
        return clicked_components(mask, clicks[lab > 0.5])

    def probability_array(self, arr: np.ndarray, affine: np.ndarray, clicks_ijk, labels=None,
                          zoom: float = 1.0) -> np.ndarray:
        """The lesion probability resampled to the grid of `arr` (the mask before the threshold).
        With test-time flips, the crop is reversed along each flip's axes (clicks mirrored), encoded
        and decoded, and the probabilities reversed back and averaged before the paste-back.
        `labels`: one per click, 1 positive and 0 negative (only for a decoder that takes them).
        `zoom`: the crop is resampled at `zoom` times the package's spacing (the engine's coarser
        levels and box prompts)."""
        m = self.manifest
        if labels is not None and not self.takes_labels and np.any(np.asarray(labels) < 0.5):
            raise ValueError("this package's decoder takes no labels: negative clicks are not supported")
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        shape0 = arr.shape
        clicks = np.asarray(clicks_ijk, np.float64).reshape(-1, 3)
        t = frame_transform(affine, m["frame"])
        if t is None:
            perm = list(m["frame"]["array_transpose"])
            vol = arr.transpose(perm)
            sp = zooms[perm]
            pts = clicks[:, perm]
        else:
            vol = nio.apply_orientation(arr, t)
            perm = [int(np.where(t[:, 0] == a)[0][0]) for a in range(3)]  # model axis a <- source axis
            sp = zooms[perm]
            pts = np.empty_like(clicks)
            for a in range(3):
                src = perm[a]
                flip = t[src, 1] < 0
                pts[:, a] = (shape0[src] - 1 - clicks[:, src]) if flip else clicks[:, src]
        if m["intensity"]["nonfinite"] == "zero":
            vol = np.nan_to_num(vol, nan=0.0, posinf=0.0, neginf=0.0)
        scale = [float(s) / (float(tgt) * zoom) for s, tgt in zip(sp, m["spacing_mm"])]
        x = torch.from_numpy(np.ascontiguousarray(vol, np.float32))[None, None]
        x = F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)[0, 0]
        lo, hi = m["intensity"]["clip"]
        x = (x.clamp(lo, hi) - m["intensity"]["mean"]) / m["intensity"]["std"]
        grid = np.asarray(x.shape)
        g = (pts + 0.5) * np.asarray(scale) - 0.5
        c = m["architecture"]["crop"]
        centre = np.floor((g.min(0) + g.max(0)) / 2 + 0.5).astype(int)
        origin = centre - c // 2
        crop = np.full((c, c, c), m["pad_value_normalised"], np.float32)
        src_lo = np.maximum(origin, 0)
        src_hi = np.minimum(origin + c, grid)
        if (src_hi > src_lo).all():
            crop[tuple(slice(a - o, b - o) for a, b, o in zip(src_lo, src_hi, origin))] = \
                x[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))].numpy()
        names = [o.name for o in self.enc.get_outputs()]
        prob = np.zeros((c, c, c), np.float64)
        for b in range(self.flips):
            axes = flip_axes(b)
            pts_b = g - origin
            for a in axes:
                pts_b[:, a] = c - 1 - pts_b[:, a]
            crop_b = np.ascontiguousarray(np.flip(crop, axes)) if axes else crop
            cache = dict(zip(names, self.enc.run(None, {"crop": crop_b[None, None]})))
            feeds = {**cache, "points": pts_b.astype(np.float32)[None]}
            if self.takes_labels:
                lab = np.ones(len(g)) if labels is None else np.asarray(labels, np.float64)
                feeds["labels"] = lab.astype(np.float32)[None]
            p = self.dec.run(["prob"], feeds)[0][0]
            prob += np.flip(p, axes) if axes else p
        prob = (prob / self.flips).astype(np.float32)
        full = torch.zeros(tuple(grid))
        if (src_hi > src_lo).all():
            full[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))] = torch.from_numpy(
                prob[tuple(slice(a - o, b - o) for a, b, o in zip(src_lo, src_hi, origin))])
        back = F.interpolate(full[None, None], size=vol.shape, mode="trilinear", align_corners=False)[0, 0].numpy()
        if t is None:
            back = back.transpose(np.argsort(perm))
        else:
            back = nio.apply_orientation(back, nio.ornt_transform(nio.axcodes2ornt(tuple(m["frame"]["orientation"])),
                                                                  nio.io_orientation(affine)))
        assert back.shape == shape0[:3]
        return back


def segment(pkg_dir: str, path: str, clicks_ijk, threads: int = 1, **inference):
    """(mask, affine) of a NIfTI file; `inference`: Pipeline's test_time_flips / keep_clicked_components
    (default: the manifest's)."""
    img = nib.load(path)
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    while arr.ndim > 3:
        arr = arr[..., 0]
    return Pipeline(pkg_dir, threads, **inference).segment_array(arr, img.affine, clicks_ijk), img.affine


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description="Segment a NIfTI volume with the contract's reference "
                                 "pipeline (nibabel + PyTorch + ONNX Runtime) and write the mask.")
    ap.add_argument("package", help="model package")
    ap.add_argument("volume", help="NIfTI volume")
    ap.add_argument("--click", action="append", required=True,
                    help="i,j,k: a click in voxel indices of the file's array (repeat for more clicks)")
    ap.add_argument("--out", required=True, help="NIfTI mask to write (uint8, the volume's grid)")
    ap.add_argument("--flips", type=int, choices=FLIP_COUNTS, help="test-time flips (default: the manifest's)")
    ap.add_argument("--keep-clicked", type=int, choices=(0, 1), help="clicked-component rule (default: the manifest's)")
    args = ap.parse_args(argv)
    clicks = [[float(v) for v in c.split(",")] for c in args.click]
    mask, affine = segment(args.package, args.volume, clicks, test_time_flips=args.flips,
                           keep_clicked_components=args.keep_clicked)
    nib.save(nib.Nifti1Image(mask, affine), args.out)
    print(f"{args.out}: {int(mask.sum())} voxels")
