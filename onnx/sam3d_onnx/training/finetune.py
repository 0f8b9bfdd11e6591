"""Train a 3DSAM-adapter with the paper's recipe from a SAM ViT-B checkpoint and a labelled dataset.

    python -m sam3d_onnx finetune --sam sam_vit_b_01ec64.pth --data Task_KiTS --dataset kits \
        --out runs/kits --steps 50000 --device cuda
    python -m sam3d_onnx convert runs/kits/last.pth.tar --dataset kits --out kits-package

The dataset folder has the Medical Segmentation Decathlon / nnU-Net layout: `imagesTr/CASE.nii.gz`
and `labelsTr/CASE.nii.gz` (same names, same grid). Each step loads a case (a few stay cached), puts
it in the dataset's frame (the preset's array transpose, as the official code), resamples it to 1 mm
(trilinear image, nearest label), clips and normalises with the preset's constants, cuts a crop
around a random tumour voxel, applies the paper's augmentations and clicks and takes one step of
`recipe.train_step` (frozen SAM weights, adaptation parts trained). The checkpoint is written in the
official layout (`last.pth.tar`), so the converter turns it into a package.

The paper size needs a GPU (about 26 GB for a 128^3 crop in fp32 training); `--config demo|tiny`
trains the small configurations on a CPU with the same code.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections import OrderedDict

import nibabel as nib
import numpy as np
import torch

from ..model import checkpoint
from ..model.config import NAMED
from ..model.presets import DATASETS
from . import dataset, recipe

TUMOUR_LABEL = {"kits": 2, "lits": 2, "pancreas": 2, "colon": 1}


def list_cases(folder: str):
    images = sorted(glob.glob(os.path.join(folder, "imagesTr", "*.nii*")))
    cases = []
    for img in images:
        lab = os.path.join(folder, "labelsTr", os.path.basename(img).replace("_0000.nii", ".nii"))
        if os.path.exists(lab):
            cases.append((img, lab))
    if not cases:
        raise SystemExit(f"{folder}: no imagesTr/*.nii.gz with a labelsTr/ partner")
    return cases


class CaseCache:
    """Cases in the model frame at 1 mm, normalised; the last `size` used stay in memory."""

    def __init__(self, preset: dict, size: int = 4):
        self.preset, self.size, self.items = preset, size, OrderedDict()

    def get(self, img_path, lab_path, label_value):
        if img_path in self.items:
            self.items.move_to_end(img_path)
            return self.items[img_path]
        img, lab = nib.load(img_path), nib.load(lab_path)
        perm = list(self.preset["transpose"])
        arr = np.asarray(img.get_fdata(dtype=np.float32)).transpose(perm)
        tumour = (np.asarray(lab.dataobj) == label_value).astype(np.uint8).transpose(perm)
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))[perm]
        arr, tumour = dataset.to_model_grid(arr, tumour, zooms, (1.0, 1.0, 1.0))
        lo, hi = self.preset["clip"]
        arr = ((np.clip(arr, lo, hi) - self.preset["mean"]) / self.preset["std"]).astype(np.float32)
        self.items[img_path] = (arr, tumour)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return arr, tumour


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--sam", required=True, help="SAM ViT-B checkpoint (sam_vit_b_01ec64.pth layout)")
    ap.add_argument("--data", required=True, help="folder with imagesTr/ and labelsTr/")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="intensity preset and frame")
    ap.add_argument("--label", type=int, help="tumour label value (default: the dataset's)")
    ap.add_argument("--config", default="paper", choices=sorted(NAMED), help="architecture (default: the paper's)")
    ap.add_argument("--out", required=True, help="folder for last.pth.tar (official layout) and training.json")
    ap.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    ap.add_argument("--lr", type=float, default=4e-4, help="learning rate at the start (default 4e-4)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new parameters, cases, crops and clicks")
    ap.add_argument("--log-every", type=int, default=50, help="steps between loss lines (default 50)")
    args = ap.parse_args(argv)
    cfg = NAMED[args.config]
    preset = DATASETS[args.dataset]
    label_value = args.label if args.label is not None else TUMOUR_LABEL[args.dataset]
    cases = list_cases(args.data)
    os.makedirs(args.out, exist_ok=True)

    model = checkpoint.init_from_sam(args.sam, cfg, seed=args.seed).to(args.device)
    names = recipe.freeze_for_adaptation(model)
    opt, sched = recipe.make_optimizer(model, args.steps, args.lr)
    rng = np.random.default_rng(args.seed)
    cache = CaseCache(preset)
    losses, t0 = [], time.time()
    shift = 20.0 / preset["std"]   # the official +-20 HU intensity shift, in normalised units
    for step in range(args.steps):
        img_path, lab_path = cases[int(rng.integers(0, len(cases)))]
        arr, tumour = cache.get(img_path, lab_path, label_value)
        fg = np.argwhere(tumour > 0)
        centre = fg[int(rng.integers(0, len(fg)))] if len(fg) else \
            np.array([int(rng.integers(0, s)) for s in arr.shape])
        centre = centre + rng.integers(-cfg.crop // 8, cfg.crop // 8 + 1, 3)
        crop, lab = dataset.crop_at(arr, tumour, centre - cfg.crop // 2, cfg.crop)
        crop, lab = recipe.augment(crop, lab, rng, shift)
        losses.append(recipe.train_step(model, opt, sched, crop, lab, recipe.training_clicks(lab, rng)))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-args.log_every:]):.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    model = model.cpu().eval()
    out = os.path.join(args.out, "last.pth.tar")
    torch.save(checkpoint.official_state(model, epoch=args.steps), out + ".part")
    os.replace(out + ".part", out)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        cmd = " ".join(argv if argv is not None else __import__("sys").argv[1:])
        json.dump({"command": "python -m sam3d_onnx finetune " + cmd, "steps": args.steps,
                   "cases": len(cases), "trainable_parameters": len(names), "losses": losses,
                   "wall_s": round(time.time() - t0, 1), "config": args.config, "dataset": args.dataset}, f)
    print(f"wrote {out}")
    return losses
