"""The paper's parameter-efficient recipe (the paper's training setup), for any configuration.

Start from 2D SAM weights (`checkpoint.init_from_sam`), keep them frozen and train only what the
3D adaptation adds: slice and depth embeddings, the blocks' LayerNorms, the spatial adapters, the
depth relative-position tables, the four necks, the prompt encoder and the decoder. Loss 0.5 Dice +
0.5 cross-entropy (softmax, background excluded from Dice), AdamW lr 4e-4 without weight decay,
linear decay of the rate to 1 %, gradient-norm clip 1.0; training clicks as the official code draws
them: 10 random foreground voxels plus 20 uniformly random voxels of the crop, all positive points.

Dataset loops: `finetune.py` (a SAM checkpoint + a labelled dataset folder, any size, CPU or GPU) and
`demo.py` (the shipped demo model).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..model.network import Sam3D

# encoder parameter names (after "encoder.") that the recipe trains; everything else in the encoder
# is SAM's and stays frozen (pos_embed, patch_embed, qkv, proj, rel_pos_h/w, mlp, lr)
ENCODER_TRAINABLE = ("depth_embed", "slice_embed.", ".norm1.", ".norm2.", ".adapter.", ".attn.rel_pos_d",
                     "neck_3d.")


def is_trainable(name: str) -> bool:
    """Whether the recipe trains the parameter `name` of a `Sam3D` (its `named_parameters` key)."""
    if name.startswith(("prompt_encoder.", "decoder.")):
        return True
    if name.startswith("encoder."):
        rest = name[len("encoder."):]
        return any(rest.startswith(p) if not p.startswith(".") else p in "." + rest for p in ENCODER_TRAINABLE)
    raise ValueError(f"unexpected parameter {name}")


def freeze_for_adaptation(model: Sam3D) -> List[str]:
    """Set requires_grad per the recipe; returns the names of the trainable parameters."""
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name))
        if p.requires_grad:
            names.append(name)
    return names


def make_optimizer(model: Sam3D, total_steps: int, lr: float = 4e-4):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.01, total_iters=max(1, total_steps))
    return opt, sched


def dice_ce_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """0.5 * soft Dice of the foreground (MONAI DiceLoss, softmax, background excluded, smooth 1e-5)
    + 0.5 * cross-entropy. logits (1, 2, D, H, W), label (1, D, H, W) in {0, 1}."""
    prob = logits.softmax(1)[:, 1]
    g = label.float()
    inter = (prob * g).sum()
    dice = 1.0 - (2.0 * inter + 1e-5) / (prob.sum() + g.sum() + 1e-5)
    ce = F.cross_entropy(logits, label.long())
    return 0.5 * dice + 0.5 * ce


def training_clicks(label: np.ndarray, rng: np.random.Generator, n_fg: int = 10, n_random: int = 20) -> np.ndarray:
    """(N, 3) clicks in crop voxels (d, h, w): `n_fg` foreground voxels (with replacement) and
    `n_random` uniformly random voxels of the crop, as the official training script draws them."""
    fg = np.argwhere(label > 0)
    pts = []
    if len(fg):
        pts.append(fg[rng.integers(0, len(fg), n_fg)])
    pts.append(np.stack([rng.integers(0, s, n_random) for s in label.shape], 1))
    return np.concatenate(pts, 0).astype(np.float32)


def augment(crop: np.ndarray, label: np.ndarray, rng: np.random.Generator, shift: float = 0.0):
    """The paper's geometric augmentations on a (D, H, W) crop and label: flips on each axis (p 0.5),
    a 90-degree rotation in a random plane (p 0.5); plus an intensity shift of up to `shift`
    (normalised units; the official code uses 20 HU before normalisation, p 0.5)."""
    for ax in range(3):
        if rng.random() < 0.5:
            crop, label = np.flip(crop, ax), np.flip(label, ax)
    if rng.random() < 0.5:
        axes = [(0, 1), (0, 2), (1, 2)][rng.integers(0, 3)]
        k = int(rng.integers(1, 4))
        crop, label = np.rot90(crop, k, axes), np.rot90(label, k, axes)
    if shift and rng.random() < 0.5:
        crop = crop + rng.uniform(-shift, shift)
    return np.ascontiguousarray(crop, np.float32), np.ascontiguousarray(label)


def _optimise(model: Sam3D, opt, sched, logits: torch.Tensor, label: np.ndarray, clip: float) -> float:
    """The loss of `logits` against `label`, one optimiser and schedule step (gradient-norm clip)."""
    dev = logits.device
    loss = dice_ce_loss(logits, torch.from_numpy(np.ascontiguousarray(label))[None].to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    opt.step()
    sched.step()
    return float(loss.detach())


def train_step(model: Sam3D, opt, sched, crop: np.ndarray, label: np.ndarray, clicks_dhw: np.ndarray,
               clip: float = 1.0) -> float:
    """One step on one (D, H, W) crop (normalised), its binary label and clicks (N, 3) in (d, h, w)."""
    model.train()
    dev = next(model.parameters()).device   # CPU, or a GPU for paper-size training
    x = torch.from_numpy(crop)[None, None].repeat(1, 3, 1, 1, 1).to(dev)
    pts = torch.from_numpy(clicks_dhw[:, [0, 2, 1]])[None].to(dev)  # the network's (d, w, h) order
    feats = model.encoder(x)
    f3p = model.prompt_encoder(feats[3], pts)
    logits = model.decoder([feats[0], feats[1], feats[2], f3p], model.image_level(x))
    return _optimise(model, opt, sched, logits, label, clip)


def correction_click(pred: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """The next click of the iterative protocol on a (D, H, W) crop: in the largest error region
    (`measures.largest_error_region`, the evaluation's rule), positive in a false negative, negative
    in a false positive; at the region's centre (`measures.edt_click`, voxel units) with p 0.5, else
    at a random voxel of it. Returns ((d, h, w), positive) or None when the prediction is exact."""
    from ..evaluation.measures import edt_click, largest_error_region

    found = largest_error_region(pred, label)
    if found is None:
        return None
    region, positive = found
    if rng.random() < 0.5:
        v = edt_click(region.astype(np.uint8), (1.0, 1.0, 1.0))
    else:
        idx = np.argwhere(region)
        v = idx[int(rng.integers(0, len(idx)))]
    return tuple(int(x) for x in v), positive


def train_step_interactive(model: Sam3D, opt, sched, crop: np.ndarray, label: np.ndarray, first_dhw: np.ndarray,
                           rng: np.random.Generator, rounds: int, clip: float = 1.0) -> float:
    """One step of the iterative protocol (extended architecture, `point_labels`): from the positive
    clicks `first_dhw`, `rounds` times predict without gradients and add `correction_click`; then
    the loss of the prediction from every click. The encoder runs once; the rounds run the prompt
    encoder and decoder only."""
    model.train()
    dev = next(model.parameters()).device
    x = torch.from_numpy(crop)[None, None].repeat(1, 3, 1, 1, 1).to(dev)
    feats = model.encoder(x)
    image = model.image_level(x)
    pts = [tuple(float(v) for v in p) for p in first_dhw]
    labels = [1.0] * len(pts)

    def logits_for(fs):
        p = torch.tensor(pts, dtype=torch.float32)[:, [0, 2, 1]][None].to(dev)  # the network's (d, w, h)
        lab = torch.tensor(labels, dtype=torch.float32)[None].to(dev)
        f3p = model.prompt_encoder(fs[3], p, lab)
        return model.decoder([fs[0], fs[1], fs[2], f3p], image)

    with torch.no_grad():
        detached = [f.detach() for f in feats]
        for _ in range(rounds):
            pred = (logits_for(detached).softmax(1)[0, 1] > 0.5).cpu().numpy()
            nc = correction_click(pred, label, rng)
            if nc is None:
                break
            pts.append(tuple(float(v) for v in nc[0]))
            labels.append(1.0 if nc[1] else 0.0)
    return _optimise(model, opt, sched, logits_for(feats), label, clip)


def train(model: Sam3D, samples: Iterable[Tuple[np.ndarray, np.ndarray]], steps: int, seed: int = 0,
          shift: float = 0.0, log_every: int = 0, lr: float = 4e-4) -> List[float]:
    """Run `steps` steps over (crop, label) pairs (cycled), with the paper's clicks and augmentations."""
    freeze_for_adaptation(model)
    opt, sched = make_optimizer(model, steps, lr)
    rng = np.random.default_rng(seed)
    samples = list(samples)
    losses = []
    for step in range(steps):
        crop, label = samples[step % len(samples)]
        crop, label = augment(crop, label, rng, shift)
        losses.append(train_step(model, opt, sched, crop, label, training_clicks(label, rng)))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    model.eval()
    return losses


def trainable_counts(model: Sam3D) -> Optional[dict]:
    """Parameter counts by part of the model, trainable and frozen (for logs and the manifest)."""
    out = {}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        key = (part, "trainable" if is_trainable(name) else "frozen")
        out[key] = out.get(key, 0) + p.numel()
    return {f"{a}.{b}": v for (a, b), v in sorted(out.items())}
