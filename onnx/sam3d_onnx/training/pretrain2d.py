"""2D pretraining of a small SAM-style ViT on CT slices: the stand-in for SAM's ViT-B weights.

The paper starts from SAM's 2D image encoder and freezes it. SAM's weights cannot be fetched here
(and would not fit the demo's size), so the demo model's 2D encoder is pretrained by us, on axial
slices of the training CT only: a SAM-layout ViT (patch embedding, absolute position embedding,
windowed and global attention blocks with decomposed 2D relative positions, MLPs) learns to name
the TotalSegmentator organ label of every patch (soft targets: the label fractions inside the patch).
The result is saved with SAM's key names (`image_encoder.*`), so `checkpoint.init_from_sam_state`
maps it to 3D exactly as it maps SAM's ViT-B.

Supervised organ labelling instead of SAM's MAE + promptable-mask training: it needs no decoder of
its own and teaches the anatomy the lesions sit in within minutes on a CPU.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.config import Sam3DConfig
from ..model.network import MLP, PatchEmbed


class Attention2d(nn.Module):
    """SAM's attention: decomposed relative position (h, w) over a window or the whole grid."""

    def __init__(self, cfg: Sam3DConfig, block: int):
        super().__init__()
        rows = cfg.rel_pos_rows(block)
        self.rel_pos_h = nn.Parameter(torch.zeros(rows, cfg.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rows, cfg.head_dim))
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.heads = cfg.heads
        self.scale = cfg.head_dim ** -0.5

    def forward(self, x):  # (B, w, w, C)
        b, w, _, c = x.shape
        nh, hd = self.heads, c // self.heads
        qkv = self.qkv(x).reshape(b, w * w, 3, nh, hd).permute(2, 0, 3, 1, 4).reshape(3, b * nh, w * w, hd)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        idx = (torch.arange(w)[:, None] - torch.arange(w)[None, :] + w - 1).long()
        rh, rw = _table(self.rel_pos_h, w)[idx], _table(self.rel_pos_w, w)[idx]   # (w, w, hd)
        rq = q.reshape(b * nh, w, w, hd)
        rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
        attn = (attn.reshape(b * nh, w, w, w, w) + rel_h[..., :, None] + rel_w[..., None, :]).reshape(b * nh, w * w, w * w)
        out = (attn.softmax(-1) @ v).reshape(b, nh, w, w, hd).permute(0, 2, 3, 1, 4).reshape(b, w, w, c)
        return self.proj(out)


def _table(t, w):
    n = 2 * w - 1
    if t.shape[0] == n:
        return t
    return F.interpolate(t.t()[None], size=n, mode="linear").reshape(-1, n).t()


class Block2d(nn.Module):
    def __init__(self, cfg: Sam3DConfig, index: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.vit_ln_eps)
        self.attn = Attention2d(cfg, index)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.vit_ln_eps)
        self.mlp = MLP(cfg.embed_dim, cfg.mlp_dim, nn.GELU)
        self.window = 0 if index in cfg.global_blocks else cfg.sam_window

    def forward(self, x):  # (B, G, G, C)
        b, g, _, c = x.shape
        y = self.norm1(x)
        w = self.window or g
        p = (-g) % w          # as SAM: zero-pad the grid to a multiple of the window
        if p:
            y = F.pad(y, (0, 0, 0, p, 0, p))
        n = (g + p) // w
        y = y.reshape(b, n, w, n, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b * n * n, w, w, c)
        y = self.attn(y).reshape(b, n, n, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g + p, g + p, c)
        x = x + y[:, :g, :g]
        return x + self.mlp(self.norm2(x))


class ViT2d(nn.Module):
    """SAM's image encoder layout (no neck) at any `Sam3DConfig` width; input (B, 3, S, S) with
    S = sam_grid * patch; plus a per-patch label head used only for pretraining."""

    def __init__(self, cfg: Sam3DConfig, classes: int):
        super().__init__()
        self.cfg = cfg
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.sam_grid, cfg.sam_grid, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block2d(cfg, i) for i in range(cfg.depth))
        self.head = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, classes))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)  # (B, G, G, classes)

    def sam_state(self) -> Dict[str, torch.Tensor]:
        """The encoder's weights under SAM's checkpoint keys (`image_encoder.*`)."""
        return {"image_encoder." + k: v.detach().clone() for k, v in self.state_dict().items()
                if not k.startswith("head.")}


def slice_batch(volume: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: Sam3DConfig,
                batch: int, classes: int):
    """Random axial (first-axis) slice patches of `volume` (normalised, model frame) with their
    per-token label fractions. A slice patch covers sam_grid * patch / upsample voxels."""
    s = cfg.sam_grid * cfg.patch // cfg.upsample
    tok = s // cfg.sam_grid
    xs, ys = [], []
    d, h, w = volume.shape
    for _ in range(batch):
        z = int(rng.integers(0, d))
        y0 = int(rng.integers(-s // 4, max(1, h - s + s // 4)))
        x0 = int(rng.integers(-s // 4, max(1, w - s + s // 4)))
        img = np.zeros((s, s), np.float32)      # outside the volume: the normalised pad value 0
        lab = np.zeros((s, s), np.int64)
        sy, sx = slice(max(y0, 0), min(y0 + s, h)), slice(max(x0, 0), min(x0 + s, w))
        img[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = volume[z, sy, sx]
        lab[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = labels[z, sy, sx]
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        if rng.random() < 0.5:
            img, lab = img[::-1], lab[::-1]
        xs.append(np.ascontiguousarray(img))
        onehot = np.eye(classes, dtype=np.float32)[lab]                         # (s, s, K)
        ys.append(onehot.reshape(cfg.sam_grid, tok, cfg.sam_grid, tok, classes).mean((1, 3)))
    x = torch.from_numpy(np.stack(xs))[:, None]
    # the 3D model sees slices upsampled by `upsample` (trilinear in 3D = bilinear within a slice)
    x = F.interpolate(x, scale_factor=cfg.upsample, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x, torch.from_numpy(np.stack(ys))


def pretrain(cfg: Sam3DConfig, volume: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0,
             batch: int = 16, lr: float = 1e-3, log_every: int = 0) -> ViT2d:
    """Pretrain a `ViT2d` on slices of one labelled volume; returns it (eval mode)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    model = ViT2d(cfg, classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.05)
    model.train()
    run = []
    for step in range(steps):
        x, y = slice_batch(volume, labels, rng, cfg, batch, classes)
        logp = model(x).log_softmax(-1)
        loss = -(y * logp).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run.append(float(loss))
        if log_every and (step + 1) % log_every == 0:
            print(f"pretrain2d step {step + 1}/{steps} loss {np.mean(run[-log_every:]):.4f}", flush=True)
    return model.eval()
