"""The 3DSAM-adapter, written from `model-3dsam-adapter.md` (section 2): the straightforward model.

This module computes the network the way the paper's code does (x4 upsampling, per-slice 2D patch
embedding, six shift masks, rel-pos tables resampled at run time, 5-D grid sampling, the whole
decoder per click). It is the reference that the rewritten export (`graphs.py`) is proven equal to,
and the model that checkpoints load into. Parameter and buffer names are exactly the official
state-dict keys, so `load_state_dict` needs no renaming.

Axis conventions: a crop is (B, C, D, H, W); inside the encoder the token grid is (B, H', W', D', C);
features f0..f3 are (B, C, H', W', D'); the decoder works in (H, W, D) and permutes back at the end.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Sam3DConfig

# ------------------------------------------------------------------------------------------------
# small shared pieces


class LayerNorm3d(nn.Module):
    """Channel LayerNorm of a (B, C, ...) volume (biased variance), as SAM's LayerNorm2d in 3D."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


def shift_regions(cfg: Sam3DConfig) -> torch.Tensor:
    """(G,) region of each token along one axis after the cyclic shift: 0 up to G - window, 1 up to
    G - shift, 2 after (the tokens the shift wrapped around)."""
    g, w, s = cfg.grid, cfg.window, cfg.shift
    region = torch.zeros(g, dtype=torch.long)
    region[g - w:g - s] = 1
    region[g - s:] = 2
    return region


def shift_window_mask(cfg: Sam3DConfig) -> torch.Tensor:
    """(n_windows, T, T) mask of the shifted blocks: 0 within a region, cfg.mask_value across."""
    w = cfg.window
    region = shift_regions(cfg)
    label = region[:, None, None] * 9 + region[None, :, None] * 3 + region[None, None, :]
    lab = window_partition(label[None, ..., None], w).reshape(cfg.n_windows, cfg.window_tokens)
    same = lab[:, :, None] == lab[:, None, :]
    return torch.where(same, 0.0, cfg.mask_value).float()


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(1, G, G, G, C) -> (nW, w, w, w, C); windows and tokens row-major over (H', W', D')."""
    _, gh, gw, gd, c = x.shape
    x = x.reshape(gh // w, w, gw // w, w, gd // w, w, c)
    return x.permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, w, w, w, c)


def window_unpartition(x: torch.Tensor, w: int, g: int) -> torch.Tensor:
    n = g // w
    c = x.shape[-1]
    x = x.reshape(n, n, n, w, w, w, c).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(1, g, g, g, c)


def resample_rel_pos(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """SAM's get_rel_pos for equal query/key sizes: (L, C) table -> (size, size, C).

    The table is resampled to 2*size-1 rows (linear, align_corners=False) when needed, then
    gathered with index q - k + size - 1."""
    n = 2 * size - 1
    if rel_pos.shape[0] != n:
        rel_pos = F.interpolate(rel_pos.t()[None], size=n, mode="linear").reshape(-1, n).t()
    q = torch.arange(size)[:, None]
    k = torch.arange(size)[None, :]
    return rel_pos[(q - k + size - 1).long()]


# ------------------------------------------------------------------------------------------------
# image encoder


class PatchEmbed(nn.Module):
    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch, stride=cfg.patch)

    def forward(self, x):  # (N, 3, H, W) -> (N, H', W', C)
        return self.proj(x).permute(0, 2, 3, 1)


class Adapter(nn.Module):
    """Spatial adapter: Linear down, ReLU, depth-wise 3^3 conv, ReLU, Linear up, ReLU."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        a = cfg.adapter_dim
        self.linear1 = nn.Linear(cfg.embed_dim, a)
        self.conv = nn.Conv3d(a, a, 3, padding=1, groups=a)
        self.linear2 = nn.Linear(a, cfg.embed_dim)

    def forward(self, x):  # (1, H', W', D', C)
        a = F.relu(self.linear1(x)).permute(0, 4, 1, 2, 3)
        a = F.relu(self.conv(a).permute(0, 2, 3, 4, 1))
        return F.relu(self.linear2(a))


class Attention3d(nn.Module):
    """Window attention with decomposed 3-D relative position (tables resampled at run time)."""

    def __init__(self, cfg: Sam3DConfig, block: int):
        super().__init__()
        rows = cfg.rel_pos_rows(block)
        self.rel_pos_h = nn.Parameter(torch.zeros(rows, cfg.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rows, cfg.head_dim))
        self.rel_pos_d = nn.Parameter(torch.zeros(rows, cfg.head_dim))
        self.lr = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.heads = cfg.heads
        self.scale = cfg.head_dim ** -0.5

    def rel_tables(self, w: int):
        return [resample_rel_pos(t, w) for t in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_d)]

    def forward(self, x, mask=None, tables=None):  # x (nW, w, w, w, C)
        nw, w, _, _, c = x.shape
        t, nh = w ** 3, self.heads
        qkv = self.qkv(x).reshape(nw, t, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, nw * nh, t, c // nh).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        rh, rw, rd = tables if tables is not None else [self.lr * r for r in self.rel_tables(w)]
        rq = q.reshape(nw * nh, w, w, w, c // nh)
        rel_h = torch.einsum("bhwdc,hkc->bhwdk", rq, rh)
        rel_w = torch.einsum("bhwdc,wkc->bhwdk", rq, rw)
        rel_d = torch.einsum("bhwdc,dkc->bhwdk", rq, rd)
        attn = (attn.reshape(nw * nh, w, w, w, w, w, w)
                + rel_h[..., :, None, None] + rel_w[..., None, :, None] + rel_d[..., None, None, :])
        attn = attn.reshape(nw, nh, t, t)
        if mask is not None:
            attn = attn + mask[:, None]
        attn = attn.softmax(dim=-1).reshape(nw * nh, t, t)
        out = (attn @ v).reshape(nw, nh, t, c // nh).transpose(1, 2).reshape(nw, w, w, w, c)
        return self.proj(out)


class Block3d(nn.Module):
    def __init__(self, cfg: Sam3DConfig, index: int):
        super().__init__()
        self.shifted = index in cfg.shifted_blocks
        if self.shifted:
            # the official model stores one copy per shifted block; kept for strict loading
            self.register_buffer("attn_mask", shift_window_mask(cfg))
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.vit_ln_eps)
        self.attn = Attention3d(cfg, index)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.vit_ln_eps)
        self.mlp = MLP(cfg.embed_dim, cfg.mlp_dim, nn.GELU)
        self.adapter = Adapter(cfg)
        self.window, self.shift, self.grid = cfg.window, cfg.shift, cfg.grid

    def forward(self, x, mask=None, tables=None):
        x = x + self.adapter(x)
        shortcut = x
        y = self.norm1(x)
        s = self.shift if self.shifted else 0
        if s:
            y = torch.roll(y, shifts=(-s, -s, -s), dims=(1, 2, 3))
            if mask is None:
                mask = self.attn_mask
        else:
            mask = None
        y = self.attn(window_partition(y, self.window), mask, tables)
        y = window_unpartition(y, self.window, self.grid)
        if s:
            y = torch.roll(y, shifts=(s, s, s), dims=(1, 2, 3))
        x = shortcut + y
        return x + self.mlp(self.norm2(x))


class Neck3d(nn.Sequential):
    def __init__(self, cfg: Sam3DConfig):
        super().__init__(
            nn.Conv3d(cfg.embed_dim, cfg.neck_dim, 1, bias=False),
            LayerNorm3d(cfg.neck_dim, cfg.neck_ln_eps),
            nn.Conv3d(cfg.neck_dim, cfg.neck_dim, 3, padding=1, bias=False),
            LayerNorm3d(cfg.neck_dim, cfg.neck_ln_eps),
        )


class ImageEncoder3d(nn.Module):
    """`encoder_dict` of the official checkpoints (300 keys at paper size)."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.sam_grid, cfg.sam_grid, cfg.embed_dim))
        self.depth_embed = nn.Parameter(torch.ones(1, cfg.grid, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg)
        self.slice_embed = nn.Conv3d(cfg.embed_dim, cfg.embed_dim, (1, 1, cfg.num_slice),
                                     stride=(1, 1, cfg.num_slice), groups=cfg.embed_dim)
        self.blocks = nn.ModuleList(Block3d(cfg, i) for i in range(cfg.depth))
        self.neck_3d = nn.ModuleList(Neck3d(cfg) for _ in range(4))

    def pooled_pos(self):
        """SAM's (1, 64, 64, C) pos_embed average-pooled to the token grid: (1, G, G, C)."""
        p = self.pos_embed.permute(0, 3, 1, 2)
        return F.avg_pool2d(p, self.cfg.pos_pool).permute(0, 2, 3, 1)

    def embed(self, crop3):  # (1, 3, D, H, W) -> (1, H', W', D', C)
        cfg = self.cfg
        x = F.interpolate(crop3, scale_factor=cfg.upsample, mode="trilinear", align_corners=False)
        x = x[0].transpose(0, 1)                                  # (D_up, 3, H_up, W_up)
        x = self.patch_embed(x)                                   # (D_up, H', W', C)
        x = self.slice_embed(x.permute(3, 1, 2, 0)[None])         # (1, C, H', W', D')
        x = x.permute(0, 2, 3, 4, 1)
        return x + self.pooled_pos()[:, :, :, None, :] + self.depth_embed[:, None, None, :, :]

    def forward(self, crop3) -> List[torch.Tensor]:
        x = self.embed(crop3)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.cfg.neck_blocks:
                feats.append(self.neck_3d[len(feats)](x.permute(0, 4, 1, 2, 3)))
        return feats


# ------------------------------------------------------------------------------------------------
# prompt encoder


class PEAttention(nn.Module):
    """SAM's attention with separate q/k/v projections to an internal width."""

    def __init__(self, dim: int, internal: int, heads: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)
        self.heads = heads

    def _split(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q, k, v):
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
        out = attn.softmax(dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class PELayer(nn.Module):
    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        d, eps = cfg.pe_dim, cfg.pe_ln_eps
        self.global_query = nn.Parameter(torch.zeros(1, cfg.pe_global_queries, d))
        self.self_attn = PEAttention(d, d, cfg.pe_heads)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        # never called by the paper's forward; kept because the checkpoints hold it
        self.cross_attn_token_to_image = PEAttention(d, cfg.pe_cross_dim, cfg.pe_heads)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(d, cfg.pe_mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(d, eps=eps)
        self.norm4 = nn.LayerNorm(d, eps=eps)
        self.cross_attn_image_to_token = PEAttention(d, cfg.pe_cross_dim, cfg.pe_heads)

    def forward(self, image, points):  # image (1, G^3, d), points (1, N, d)
        nq = self.global_query.shape[1]
        q = torch.cat([self.global_query, points], dim=1)
        q = self.norm2(q + self.norm1(self.self_attn(q, q, q)))
        points, t = q[:, nq:], q[:, :nq]
        t = self.norm3(t + self.mlp(t))
        image = self.norm4(image + self.cross_attn_image_to_token(image, t, t))
        return image, points


class PETransformer(nn.Module):
    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.layers = nn.ModuleList(PELayer(cfg) for _ in range(cfg.pe_layers))

    def forward(self, image, points):
        for layer in self.layers:
            image, points = layer(image, points)
        return image


class PromptEncoder(nn.Module):
    """One `feature_dict[j]` of the official checkpoints (75 keys at paper size)."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.cfg = cfg
        # random-Fourier buffer of the official code: computed there, never used by the layers
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, cfg.pe_gauss_feats))
        self.transformer = PETransformer(cfg)
        if cfg.point_labels:
            # row 0: negative, row 1: positive; zero, so an extended model starts as the paper's
            self.label_embed = nn.Parameter(torch.zeros(2, cfg.neck_dim))

    def sample_points(self, f3, points_dwh):
        """Trilinear grid_sample of f3 (1, C, H', W', D') at crop voxels (1, N, 3) in (d, w, h)."""
        grid = (points_dwh + 0.5) * 2.0 / self.cfg.crop - 1.0
        s = F.grid_sample(f3, grid[:, None, None], mode="bilinear", padding_mode="zeros",
                          align_corners=False)                    # (1, C, 1, 1, N)
        return s[:, :, 0, 0].transpose(1, 2)

    def refine(self, f3, point_tokens):
        b, c, gh, gw, gd = f3.shape
        image = self.transformer(f3.flatten(2).transpose(1, 2), point_tokens)
        return image.transpose(1, 2).reshape(b, c, gh, gw, gd)

    def tokens(self, f3, points_dwh, labels=None):
        """The clicks' tokens: sampled features, plus each click's label embedding when the
        architecture has them (`labels` (1, N): 1 positive, 0 negative; None: all positive)."""
        t = self.sample_points(f3, points_dwh)
        if self.cfg.point_labels:
            lab = torch.ones(t.shape[:2], dtype=t.dtype) if labels is None else labels.to(t.dtype)
            e = self.label_embed
            t = t + e[0] + lab[..., None] * (e[1] - e[0])
        return t

    def forward(self, f3, points_dwh, labels=None):
        return self.refine(f3, self.tokens(f3, points_dwh, labels))


# ------------------------------------------------------------------------------------------------
# decoder


def conv_in_relu(cin: int, cout: int, eps: float):
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False),
            nn.InstanceNorm3d(cout, eps=eps), nn.ReLU()]


class MLAHead(nn.Module):
    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        c, m, e = cfg.decoder_dim, cfg.neck_dim, cfg.in_eps
        for h in (2, 3, 4, 5):
            self.add_module(f"head{h}", nn.Sequential(*conv_in_relu(m, c, e), *conv_in_relu(c, c, e)))

    def heads(self):
        return [self.head2, self.head3, self.head4, self.head5]


def head_upsample(x, cfg: Sam3DConfig):
    """A decoder head's output to the decoder resolution (the official x2, align_corners=True)."""
    return F.interpolate(x, scale_factor=cfg.decoder_scale, mode="trilinear", align_corners=True)


class Decoder(nn.Module):
    """`decoder_dict` of the official checkpoints (VIT_MLAHead_h, 10 keys)."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.decoder_dim
        self.mlahead = MLAHead(cfg)
        self.cls = nn.Sequential(*conv_in_relu(4 * c + 1, c, cfg.in_eps),
                                 nn.Conv3d(c, cfg.num_classes, 3, padding=1, bias=False))

    def forward(self, feats: Sequence[torch.Tensor], image_level):  # -> logits (1, 2, D, H, W)
        x = torch.cat([head_upsample(h(f), self.cfg) for h, f in zip(self.mlahead.heads(), feats)] + [image_level], 1)
        x = self.cls(x)
        if self.cfg.out_upsample > 1:  # decoder_scale 4 on a 32^3 crop: already at the crop's grid
            x = F.interpolate(x, scale_factor=self.cfg.out_upsample, mode="trilinear", align_corners=True)
        return x.permute(0, 1, 4, 2, 3)


# ------------------------------------------------------------------------------------------------
# whole model


class Sam3D(nn.Module):
    """Encoder + the applied prompt encoder (index 3 of the checkpoints) + decoder."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = ImageEncoder3d(cfg)
        self.prompt_encoder = PromptEncoder(cfg)
        self.decoder = Decoder(cfg)

    def image_level(self, crop3):
        """Crop channel 0 as (1, 1, H, W, D) at the decoder resolution (official: trilinear x0.5)."""
        x = crop3[:, :1].permute(0, 1, 3, 4, 2)
        if self.cfg.image_pool == 1:
            return x
        return F.interpolate(x, scale_factor=1.0 / self.cfg.image_pool, mode="trilinear",
                             align_corners=False)

    def decode(self, feats, crop3, points_dwh, labels=None):
        """Prompt encoder + decoder: foreground probability (1, D, H, W). `labels` (1, N), 1 positive
        and 0 negative, only for the extended architecture (`point_labels`)."""
        f3p = self.prompt_encoder(feats[3], points_dwh, labels)
        logits = self.decoder([feats[0], feats[1], feats[2], f3p], self.image_level(crop3))
        return logits.softmax(dim=1)[:, 1]

    def forward(self, crop3, points_dwh, labels=None):
        """crop3 (1, 3, D, H, W) normalised; points (1, N, 3) crop voxels in the official (d, w, h)."""
        return self.decode(self.encoder(crop3), crop3, points_dwh, labels)


def dhw_to_dwh(points: torch.Tensor) -> torch.Tensor:
    """Clicks (.., 3) in array order (d, h, w) -> the official model's (d, w, h)."""
    return points[..., [0, 2, 1]]


def random_init_(model: Sam3D, seed: int = 0, scale: float = 1.0) -> Sam3D:
    """Deterministic random weights in the spirit of the parity generator (for tests and fixtures):
    linear/conv N(0,1)/sqrt(fan_in), biases 0.02 N, norm weights 1 + 0.1 N, embeddings 0.02 N."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            z = rng.standard_normal(shape)
            if name.endswith(".lr"):
                v = np.ones(shape)
            elif "norm" in name.split(".")[-2] or name.startswith("encoder.neck_3d") and name.split(".")[-2] in ("1", "3"):
                v = (1.0 + 0.1 * z) if name.endswith("weight") else 0.02 * z
            elif name.endswith("depth_embed"):
                v = 1.0 + 0.1 * z
            elif name.endswith("bias") or "pos" in name.split(".")[-1]:
                v = 0.02 * z
            elif name.endswith("global_query"):
                v = 0.1 * z
            else:
                v = z / np.sqrt(max(1, int(np.prod(shape[1:])))) * scale
            p.copy_(torch.from_numpy(np.asarray(v, dtype=np.float32)))
    return model
