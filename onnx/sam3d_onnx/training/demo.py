"""Train the shipped demo model on a CPU and export it as a package.

    python -m sam3d_onnx train-demo --data .cache/data --out build/demo-train

Stage 1 (`pretrain2d`): a SAM-layout 2D ViT learns organ labels on axial slices of the training CT.
Stage 2 (`recipe`): the paper's recipe: the 2D weights are mapped to 3D (`init_from_sam_state`) and
frozen; only the adaptation's new parts train, on synthetic lesions inserted into the training CT's
organs (`dataset.make_sample_at`, one seed per sample).
Stage 3: the model is exported as a package (`package.export_package`) with its training record.

Only `totalsegmentator/example_ct.nii.gz` (+ its labels) is read for training; the second labelled
CT (`totalsegmentator_dicom/`) is the held-out evaluation volume (`evaluation/evaluate.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from ..export.package import export_package
from ..model import checkpoint
from ..model.config import DEMO
from ..model.network import Sam3D
from . import dataset, lesions, phases, pretrain2d, recipe

ORIENTATION = ("S", "A", "R")     # slices (the first model axis) are axial
SPACING = (2.0, 2.0, 2.0)
INTENSITY = {"clip": [-160.0, 240.0], "mean": 40.0, "std": 80.0, "nonfinite": "error"}
TRAIN_CT = ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz")
# sample i of the training stream is drawn from default_rng([TRAIN_STREAM, i]); evaluation uses
# other streams (evaluation.evaluate.EVAL_STREAM), so no training lesion is ever an evaluation lesion
TRAIN_STREAM = 4_000_001
LICENCE = ("Apache-2.0: weights trained by the libsam3d project (onnx/sam3d_onnx/training/demo.py) from its "
           "own 2D pretraining, on the Apache-2.0 TotalSegmentator example CT with synthetic lesions")


# with fine lesions (--fine-lesions): the grids lesions are drawn on, in the model frame (slices first),
# and how often; the rest are drawn on the training CT's own 3 mm grid as before
FINE_GRIDS = (((1.0, 1.0, 1.0), 0.4), ((2.0, 1.0, 1.0), 0.35))
# with contrast phases (--contrast-phases): how often the training CT is shown as a contrast-enhanced
# scan (phases.enhance) instead of its own non-contrast phase
CONTRAST_P = 0.7


def model_config(record: dict):
    """The DEMO configuration with the last `--decoder-scale` given (2, the paper's, before that), and
    click labels once a stage trained with `--negative-clicks`."""
    return DEMO.replace(decoder_scale=int(record.get("decoder_scale", DEMO.decoder_scale)),
                        point_labels=bool(record.get("point_labels", False)))


def model_spacing(record: dict) -> tuple:
    """The model grid of a training record: the last `--spacing` given, else SPACING."""
    return tuple(record.get("spacing_mm", SPACING))


def training_sample(volume, labels, spacing, i: int, fine: bool = False, target=SPACING, contrast: bool = False):
    """Training sample i (its own seed) on the `target` model grid. `fine`: most lesions are drawn on
    a 1 mm or 2x1x1 mm grid (`dataset.make_sample_fine`; thin-slice scans as the held-out CT), the
    others on the CT's grid. `contrast`: with p CONTRAST_P the CT is first shown in a contrast phase
    (`phases.enhance`, from its own stream, so the lesion draws are those of the sample without it)."""
    if contrast:
        crng = np.random.default_rng([TRAIN_STREAM, i, 1])
        if crng.random() < CONTRAST_P:
            volume = phases.enhance(volume, labels, crng)
    rng = np.random.default_rng([TRAIN_STREAM, i])
    centring = "voxel" if rng.random() < 0.5 else "centroid"
    kw = dict(crop=DEMO.crop, target_spacing=target, clip=INTENSITY["clip"], mean=INTENSITY["mean"],
              std=INTENSITY["std"], jitter=0.1, centring=centring)
    grid = None
    if fine:
        u = rng.random()
        for g, p in FINE_GRIDS:
            if u < p:
                grid = g
                break
            u -= p
    if grid is None:
        s = dataset.make_sample_at(volume, labels, spacing, rng, **kw)
    else:
        s = dataset.make_sample_fine(volume, labels, spacing, rng, fine_spacing=grid, **kw)
    return s.crop, s.label, rng


def clicks_for(label, rng, one_click: bool = False):
    """Half of the steps draw the paper's training clicks (10 lesion voxels + 20 random voxels of the
    crop), half 1-3 lesion voxels: the engine is used with one click, which the paper's draw never
    shows the model (a deviation from the recipe, kept because one click is the product's use).
    `one_click`: every step one random lesion voxel (the evaluation's use only)."""
    if one_click:
        return recipe.training_clicks(label, rng, n_fg=1, n_random=0)
    if rng.random() < 0.5:
        return recipe.training_clicks(label, rng)
    return recipe.training_clicks(label, rng, n_fg=int(rng.integers(1, 4)), n_random=0)


def scanner_augment(crop, label, rng):
    """What one training CT cannot show: the scan ending inside the crop (with p 0.4, along the
    slice axis mostly: voxels beyond are the engine's pad value 0 and not lesion; the slab keeps the
    crop centre, where the click is), other scanners' noise (p 0.5, Gaussian, 0-15 HU) and
    sharpness (p 0.3, blur of 0.5-1 voxel)."""
    c = crop.shape[0]
    crop, label = crop.copy(), label.copy()
    # scanner first, then the scan's end: the engine's padding is exactly the pad value
    if rng.random() < 0.5:
        crop += rng.normal(0.0, rng.uniform(0.0, 15.0) / INTENSITY["std"], crop.shape).astype(np.float32)
    if rng.random() < 0.3:
        crop = lesions.gaussian_blur(crop, rng.uniform(0.5, 1.0))
    if rng.random() < 0.4:
        ax = 0 if rng.random() < 0.6 else int(rng.integers(1, 3))
        keep = int(rng.integers(c // 3, c))
        lo = int(rng.integers(max(0, c // 2 - keep + 1), min(c // 2, c - keep) + 1))
        out = np.ones(c, bool)
        out[lo:lo + keep] = False
        idx = [slice(None)] * 3
        idx[ax] = out
        crop[tuple(idx)] = 0.0
        label[tuple(idx)] = 0
    return np.ascontiguousarray(crop, np.float32), label


def phase_augment(crop, rng, shift_hu: float = 60.0):
    """Other contrast phases and reconstruction kernels than the training CT's (a non-contrast scan:
    liver about 45 HU, 3 mm): with p 0.8 the crop's soft tissue moves by up to +-shift_hu (portal-venous
    enhancement raises the liver by 40-60 HU; the crop is 48-64 mm, so one shift stands for its organ) and
    its contrast scales by 0.85-1.15 about the crop's median, values kept inside the intensity window;
    with p 0.3 a sharper kernel (unsharp mask, amount 0.3-1)."""
    lo = (INTENSITY["clip"][0] - INTENSITY["mean"]) / INTENSITY["std"]
    hi = (INTENSITY["clip"][1] - INTENSITY["mean"]) / INTENSITY["std"]
    if rng.random() < 0.8:
        med = float(np.median(crop))
        crop = (crop - med) * rng.uniform(0.85, 1.15) + med + rng.uniform(-shift_hu, shift_hu) / INTENSITY["std"]
    if rng.random() < 0.3:
        crop = crop + rng.uniform(0.3, 1.0) * (crop - lesions.gaussian_blur(crop, 1.0))
    return np.ascontiguousarray(np.clip(crop, lo, hi), np.float32)


INTERACTIVE_P = 0.7   # share of --negative-clicks steps that run the iterative protocol
MAX_ROUNDS = 4        # correction clicks simulated per step, at most


def adapt(model, volume, labels, spacing, steps: int, log_every: int = 100, lr: float = 4e-4,
          ckpt: str = None, log: list = None, first_sample: int = 0, scanner_aug: bool = False,
          phase_aug: bool = False, fine: bool = False, target=SPACING, contrast: bool = False,
          one_click: bool = False, negative_clicks: bool = False):
    """`steps` steps of the recipe on training samples first_sample, first_sample + 1, ..."""
    recipe.freeze_for_adaptation(model)
    opt, sched = recipe.make_optimizer(model, steps, lr)
    losses = []
    t0 = time.time()
    for step in range(steps):
        crop, label, rng = training_sample(volume, labels, spacing, first_sample + step, fine=fine, target=target,
                                           contrast=contrast)
        crop, label = recipe.augment(crop, label, rng, shift=20.0 / INTENSITY["std"])
        if phase_aug:
            crop = phase_augment(crop, rng)
        if scanner_aug:
            crop, label = scanner_augment(crop, label, rng)
        if not label.any():
            continue
        if negative_clicks and rng.random() < INTERACTIVE_P:
            # the interactive protocol: 1-3 positive lesion voxels, then 0-MAX_ROUNDS corrections
            first = recipe.training_clicks(label, rng, n_fg=int(rng.integers(1, 4)), n_random=0)
            losses.append(recipe.train_step_interactive(model, opt, sched, crop, label, first, rng,
                                                        rounds=int(rng.integers(0, MAX_ROUNDS + 1))))
        else:
            losses.append(recipe.train_step(model, opt, sched, crop, label, clicks_for(label, rng, one_click)))
        if (step + 1) % log_every == 0:
            rec = {"step": step + 1, "loss": float(np.mean(losses[-log_every:])), "elapsed_s": time.time() - t0}
            print(f"adapt step {rec['step']}/{steps} loss {rec['loss']:.4f} {rec['elapsed_s']:.0f}s", flush=True)
            if log is not None:
                log.append(rec)
            if ckpt and (step + 1) % (10 * log_every) == 0:
                torch.save({"state_dict": model.state_dict(), "step": step + 1}, ckpt + ".part")
                os.replace(ckpt + ".part", ckpt)
    model.eval()
    return losses


def steps_done(record: dict) -> int:
    """Adaptation steps a training record has run (the first stage and every --resume stage)."""
    return int(record["adaptation"]["steps"]) + sum(int(c["steps"]) for c in record.get("continued", []))


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder written by tools/fetch_data.py")
    ap.add_argument("--out", required=True, help="folder for model.pt, training.json and the package demo-lesion/")
    ap.add_argument("--pretrain-steps", type=int, default=1500, help="2D pretraining steps (default 1500)")
    ap.add_argument("--steps", type=int, default=6000, help="adaptation steps of this stage (default 6000)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 2D pretraining and the 3D start (default 0)")
    ap.add_argument("--package-only", action="store_true", help="export the saved model.pt again")
    ap.add_argument("--resume", help="continue from this model.pt (stage 2 only): --steps more steps on new "
                                     "samples, with the scanner augmentation")
    ap.add_argument("--lr", type=float, default=4e-4, help="learning rate at the start of the stage (default 4e-4)")
    ap.add_argument("--phase-aug", action="store_true", help="with --resume: also the contrast-phase / kernel "
                                                              "augmentation (phase_augment)")
    ap.add_argument("--fine-lesions", action="store_true", help="with --resume: draw most lesions on a finer "
                                                                 "grid than the CT's (training_sample)")
    ap.add_argument("--contrast-phases", action="store_true", help="with --resume: show the non-contrast "
                    "training CT in simulated contrast phases (phases.enhance) in CONTRAST_P of the samples")
    ap.add_argument("--spacing", type=float, help="with --resume: move the model to this isotropic grid (mm); "
                                                  "later stages and the package keep it")
    ap.add_argument("--decoder-scale", type=int, help="with --resume: the decoder heads' upsampling (2: the "
                    "paper's, decoder at half the crop's resolution; 4: the crop's own grid for the DEMO crop); "
                    "same parameters, later stages and the package keep it")
    ap.add_argument("--one-click", action="store_true", help="with --resume: every step one random lesion "
                    "voxel as the click (the product's use) instead of clicks_for's mix")
    ap.add_argument("--negative-clicks", action="store_true", help="with --resume: the extended architecture "
                    "with click labels (from then on); INTERACTIVE_P of the steps run the iterative protocol "
                    "(corrections in the largest error region, negative in a false positive)")
    ap.add_argument("--name", default="demo-lesion", help="the package's name and folder (default demo-lesion)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    record_path = os.path.join(args.out, "training.json")
    model_path = os.path.join(args.out, "model.pt")

    if args.resume:
        t0 = time.time()
        with open(record_path) as f:
            record = json.load(f)
        prev = torch.load(args.resume, weights_only=True)
        if args.decoder_scale:
            record["decoder_scale"] = args.decoder_scale
        had_labels = bool(record.get("point_labels", False))
        if args.negative_clicks:
            record["point_labels"] = True
        model = Sam3D(model_config(record))
        missing, unexpected = model.load_state_dict(prev["state_dict"], strict=False)
        # the label embedding is new (zero: the model starts as it was) when labels start here
        if unexpected or missing != ([] if had_labels or not args.negative_clicks else ["prompt_encoder.label_embed"]):
            raise ValueError(f"{args.resume}: missing {missing}, unexpected {unexpected}")
        volume, labels, spacing = dataset.load_labelled(*(os.path.join(args.data, p) for p in TRAIN_CT),
                                                        orientation=ORIENTATION)
        done = steps_done(record)
        if args.spacing:
            record["spacing_mm"] = [args.spacing] * 3
        target = model_spacing(record)
        log = []
        losses = adapt(model, volume, labels, spacing, args.steps, ckpt=model_path + ".resume", log=log, lr=args.lr,
                       first_sample=done, scanner_aug=True, phase_aug=args.phase_aug, fine=args.fine_lesions,
                       target=target, contrast=args.contrast_phases, one_click=args.one_click,
                       negative_clicks=args.negative_clicks)
        record.setdefault("continued", []).append({
            "command": "python -m sam3d_onnx train-demo " + " ".join(argv if argv is not None else os.sys.argv[1:]),
            "steps": args.steps, "lr": args.lr, "first_sample": done, "scanner_augmentation": True,
            "phase_augmentation": args.phase_aug, "fine_lesions": args.fine_lesions, "spacing_mm": list(target),
            "contrast_phases": args.contrast_phases, "lesion_generator": lesions.GENERATOR_VERSION,
            "decoder_scale": model.cfg.decoder_scale, "one_click": args.one_click,
            "negative_clicks": args.negative_clicks,
            "loss_first100": float(np.mean(losses[:100])), "loss_last100": float(np.mean(losses[-100:])),
            "wall_s": round(time.time() - t0, 1), "log": log})
        record["wall_s"] = round(record["wall_s"] + time.time() - t0, 1)
        torch.save({"state_dict": model.state_dict(), "step": done + args.steps}, model_path)
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1)
    elif not args.package_only:
        t0 = time.time()
        volume, labels, spacing = dataset.load_labelled(*(os.path.join(args.data, p) for p in TRAIN_CT),
                                                        orientation=ORIENTATION)
        img2, lab2 = dataset.to_model_grid(volume, labels, spacing, SPACING)
        norm2 = (np.clip(img2, *INTENSITY["clip"]) - INTENSITY["mean"]) / INTENSITY["std"]
        vit = pretrain2d.pretrain(DEMO, norm2.astype(np.float32), lab2, args.pretrain_steps, seed=args.seed,
                                  log_every=100)
        t_pre = time.time() - t0
        torch.save(vit.sam_state(), os.path.join(args.out, "vit2d_sam_layout.pt"))
        model = checkpoint.init_from_sam_state(vit.sam_state(), DEMO, seed=args.seed)
        log = []
        losses = adapt(model, volume, labels, spacing, args.steps, ckpt=model_path, log=log, lr=args.lr)
        t_all = time.time() - t0
        record = {
            "command": "python -m sam3d_onnx train-demo " + " ".join(argv if argv is not None else os.sys.argv[1:]),
            "pretrain2d": {"steps": args.pretrain_steps, "batch": 16, "wall_s": round(t_pre, 1),
                           "task": "per-patch TotalSegmentator organ labels on axial slices of the training CT"},
            "adaptation": {"steps": args.steps, "lr": args.lr, "loss_first100": float(np.mean(losses[:100])),
                           "loss_last100": float(np.mean(losses[-100:])), "log": log},
            "trainable": recipe.trainable_counts(model),
            "wall_s": round(t_all, 1), "threads": args.threads, "machine": platform.processor() or platform.machine(),
            "training_data": list(TRAIN_CT), "train_stream": TRAIN_STREAM, "lesion_generator": lesions.GENERATOR_VERSION,
        }
        torch.save({"state_dict": model.state_dict(), "step": args.steps}, model_path)
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1)
    with open(record_path) as f:
        record = json.load(f)
    model = Sam3D(model_config(record))
    model.load_state_dict(torch.load(model_path, weights_only=True)["state_dict"])
    model.eval()
    pkg = os.path.join(args.out, args.name)
    target = model_spacing(record)
    export_package(
        model, pkg, name=args.name,
        description=f"libsam3d demo: 3DSAM-adapter (DEMO configuration, 32^3 crop at {target[0]:g} mm"
                    + (", with click labels: positive and negative clicks" if model.cfg.point_labels else "")
                    + ") for abdominal CT "
                    "lesions, trained on one CT with synthetic lesions; not for clinical use",
        licence=LICENCE,
        provenance=(f"{record['command']}; 2D ViT pretrained by libsam3d on slices of the training CT "
                    f"({record['pretrain2d']['steps']} steps; no SAM weights), adapted to 3D with the paper's "
                    f"recipe ({record['adaptation']['steps']} steps"
                    + "".join(f", then {c['steps']} more with the scanner"
                              + (" and contrast-phase" if c.get("phase_augmentation") else "") + " augmentation"
                              + (" on lesions drawn on finer grids" if c.get("fine_lesions") else "")
                              + (" in simulated contrast phases" if c.get("contrast_phases") else "")
                              + (" (bowel lesions as soft-tissue masses)" if c.get("lesion_generator", 1) >= 2 else "")
                              + (" with negative clicks in the iterative protocol" if c.get("negative_clicks") else "")
                              + (f" at {c['spacing_mm'][0]:g} mm" if c.get("spacing_mm", list(SPACING)) != list(SPACING)
                                 else "")
                              for c in record.get("continued", []))
                    + f"); {record['wall_s']:.0f} s on "
                    f"{record['threads']} CPU threads"),
        frame={"mode": "orient", "orientation": "".join(ORIENTATION), "array_transpose": None},
        intensity=INTENSITY, spacing_mm=target,
        extra={"training": {k: v for k, v in record.items() if k not in ("adaptation", "continued")} |
               {"adaptation": {k: v for k, v in record["adaptation"].items() if k != "log"},
                "continued": [{k: v for k, v in c.items() if k != "log"} for c in record.get("continued", [])]}})
    print(f"wrote {pkg}")
