"""The two exported graphs, built from a loaded `Sam3D` with the exact rewrites below.

* Front-end fold: trilinear x`upsample` + per-slice patch conv + depth-wise slice conv are one linear
  map = replicate-pad the one-channel crop, then a strided Conv3d (kernel computed in float64 here).
* Relative-position tables resampled and gathered once (constants, `lr` folded in).
* Decoder split by linearity: `cls.0` has no bias and zero padding, so its response is the sum of a
  conv over the click-independent channels (head2..4 and the image level) and a conv over head5's.
  The first half runs once per region in the encoder graph (output `cls_partial`).
* Both halves of `cls.0` convolve head outputs upsampled x2: both maps linear, the upsampling
  separable, so the channel mixing runs on the coarse grid once per tap and the upsampling + tap
  shifts are small per-axis matrices (`UpsampledConv`; paper size: click half 232 -> 60 GFLOP per
  click, the static half's heads 2-4 695 -> 118 GFLOP per encoding; the one image-level channel
  stays a conv).
* The two output logits only matter through their difference (softmax channel 1 = sigmoid(l1 - l0)),
  and the final conv and upsampling are linear: one conv with weight w1 - w0, upsampled, sigmoid;
  that conv (one output channel) as 27 tap planes shifted and summed (`SingleOutputConv`).
* Relative position folded into the attention product: the three decomposed terms rel_h/w/d[q, k]
  are dot products of per-query values (q . table) with one-hot key coordinates, so appending them to
  q and the constant one-hots to k gives logits + rel in one MatMul (head dim 64 -> 64 + 3w). This
  replaces three broadcast additions over the (windows*heads, T, T) logits, which cost more time than
  the attention products themselves at paper size (figures: docs/performance.md).
* Shift mask folded the same way: 8 region one-hots per token (one bit per axis tells a window's
  regions apart), scaled by -mask_value on the query side, add -mask_value within a region and 0
  across; softmax ignores the per-row constant (head dim 88 -> 96 in the shifted blocks). The 67 MB mask
  constant and its addition over the logits are gone.
* Biases out of the products where softmax allows (`fold_attention`): scale folded into q, k's bias
  dropped (a per-row constant of the logits), v's moved into the output projection (softmax rows sum
  to 1); the MLP's first bias goes into its GELU (`bias_gelu`). Products without a bias stay MatMuls
  instead of ONNX Runtime Gemms that broadcast-copy the bias into their output first.
* Attention as one ONNX Runtime `com.microsoft.MultiHeadAttention` node per block (query/key head
  dim 88 or 96, value 64, scale 1): its CPU kernel is a flash-attention loop that never writes the
  logits out (805 MB per block at paper size); faster in an interleaved A/B, outputs equal within
  5e-6. In eager PyTorch (tests, FLOP counts) the same product runs as MatMul, softmax, MatMul.
* Click features: a Gather-based trilinear lookup replaces 5-D GridSample (zero outside the grid,
  the official align_corners=False convention).

Interface (model-package contract, format_version 1): encoder `crop` (1,1,C,C,C) -> `f3`, `cls_partial`;
decoder `f3`, `cls_partial`, `points` (1,N,3) in crop voxels (d,h,w) [, `labels` (1,N) float32, 1 positive
and 0 negative, only for the extended architecture with `point_labels`] -> `prob` (1,C,C,C) in (D,H,W).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.config import Sam3DConfig
from ..model.network import Sam3D, head_upsample, shift_regions, window_partition

ENCODER_INPUTS = ("crop",)
ENCODER_OUTPUTS = ("f3", "cls_partial")
DECODER_INPUTS = ("f3", "cls_partial", "points")
LABELS_INPUT = "labels"


def decoder_inputs(cfg: Sam3DConfig) -> Tuple[str, ...]:
    """The decoder graph's inputs: `labels` follows the points when the architecture has them."""
    return DECODER_INPUTS + ((LABELS_INPUT,) if cfg.point_labels else ())
DECODER_OUTPUTS = ("prob",)


def interp_taps(upsample: int, patch: int) -> Tuple[np.ndarray, int]:
    """Weights A (patch x taps) of the `patch` upsampled samples of one token onto the original
    voxels r*p - pad ... (r = patch/upsample), and pad: PyTorch trilinear, align_corners=False."""
    r = patch // upsample
    pad = 1 if upsample > 1 else 0
    a = np.zeros((patch, r + 2 * pad), np.float64)
    for j in range(patch):
        pos = (j + 0.5) / upsample - 0.5 + pad
        t0 = int(np.floor(pos))
        frac = pos - t0
        a[j, t0] += 1.0 - frac
        if frac > 0:
            a[j, t0 + 1] += frac
    return a, pad


def folded_front_end(model: Sam3D):
    """(kernel (E,1,K,K,K), bias (E,), stride, pad) of the folded front end, axes (D, H, W)."""
    enc, cfg = model.encoder, model.cfg
    a, pad = interp_taps(cfg.upsample, cfg.patch)
    w = enc.patch_embed.proj.weight.detach().double().sum(1)            # (E, P, P) rows=H, cols=W
    s = enc.slice_embed.weight.detach().double().reshape(cfg.embed_dim, cfg.num_slice)  # (E, S)
    k = torch.einsum("cij,ck,ka,ib,je->cabe", w, s, torch.from_numpy(a), torch.from_numpy(a),
                     torch.from_numpy(a))
    b = enc.patch_embed.proj.bias.detach().double() * s.sum(1) + enc.slice_embed.bias.detach().double()
    return k[:, None].float(), b.float(), cfg.patch // cfg.upsample, pad


def window_order(g: int, w: int, shift: int) -> torch.Tensor:
    """Token indices (into the flattened (H', W', D') grid) of window_partition(roll(x, -shift))."""
    idx = torch.arange(g ** 3).reshape(1, g, g, g, 1)
    if shift:
        idx = torch.roll(idx, shifts=(-shift,) * 3, dims=(1, 2, 3))
    return window_partition(idx, w).reshape(-1).clone()


def key_position_onehots(w: int) -> torch.Tensor:
    """(T, 3w): for each key token of a window (row-major h, w, d) the one-hots of its h, w and d."""
    idx = torch.arange(w ** 3)
    e = torch.zeros(w ** 3, 3 * w)
    e[idx, idx // (w * w)] = 1.0
    e[idx, w + (idx // w) % w] = 1.0
    e[idx, 2 * w + idx % w] = 1.0
    return e


def fold_attention(attn, tables) -> dict:
    """The weights of `Attention3d` as the exported graph uses them, three exact rewrites (in exact
    arithmetic; in float they differ by rounding):

    * q's weight and bias times the softmax scale, the relative-position tables divided by it (they
      multiply the unscaled q): no Mul over q.
    * k without its bias: bk adds q . bk to every logit of a query's row, a per-row constant that
      softmax ignores.
    * v without its bias, which moves into the output projection's: softmax weights sum to 1, so
      attention(v + bv) = attention(v) + bv, and proj(o + bv) = proj(o) + Wp bv.

    A product without a bias stays a MatMul; with one, ONNX Runtime fuses it into a Gemm that first
    copies the broadcast bias into its output (paper-size shapes on 2 CPU cores: 5-12 % slower).
    The weights are stored transposed, (in, out), so that each is a named initializer of the exported
    graph (`package_import` reads them back by name), and q, k and v are three constants of their own
    (not a Split of the qkv weight, which would hide them from int8 quantisation, `quantize.py`)."""
    w, b = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    (wq, wk, wv), (bq, _, bv) = w.chunk(3, 0), b.chunk(3, 0)
    wp, bp = attn.proj.weight.detach(), attn.proj.bias.detach()
    s = attn.scale
    # the only folded product is summed in float64: float32 BLAS kernels round it differently on
    # different CPUs, and an export must be byte-identical wherever it runs
    return {"wq_t": (wq * s).T.contiguous(), "bq_s": bq * s, "wk_t": wk.T.contiguous(), "wv_t": wv.T.contiguous(),
            "wp_t": wp.T.contiguous(), "bp_v": (bp.double() + wp.double() @ bv.double()).to(bp.dtype), "tables_s": torch.stack([t / s for t in tables])}


def bias_gelu(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu(h + b) (erf form, as nn.GELU), exported as ONNX Runtime's `com.microsoft.BiasGelu`: the MLP's
    first product then stays a MatMul instead of a Gemm that broadcast-copies its bias (above), and the
    bias costs nothing in the GELU's own pass."""
    if torch.onnx.is_in_onnx_export():
        return torch.onnx.ops.symbolic("com.microsoft::BiasGelu", (h, b), {}, dtype=h.dtype,
                                       shape=tuple(h.shape), version=1)
    return F.gelu(h + b)


def region_onehots(cfg: Sam3DConfig) -> torch.Tensor:
    """(n_windows, T, 8): one-hot of each token's shift region within its window, so that two tokens
    of a window are in the same region iff their one-hots are equal (`shift_window_mask`; checked for
    the tiny, small and paper configurations in tests/test_rewrites.py).

    Along each axis only the last window straddles a region boundary (G - w is a multiple of w) and
    holds regions 1 and 2 there, so one bit per axis (region == 2) tells a window's regions apart."""
    bit = (shift_regions(cfg) == 2).long()
    local = bit[:, None, None] * 4 + bit[None, :, None] * 2 + bit[None, None, :]
    local = window_partition(local[None, ..., None], cfg.window).reshape(cfg.n_windows, cfg.window_tokens)
    return F.one_hot(local, 8).float()


def attention_core(qa: torch.Tensor, ka: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(qa . ka^T) . v per window and head; qa, ka (nW, T, heads*dk), v (nW, T, heads*dv) ->
    (nW, T, heads*dv). Exported as one ONNX Runtime MultiHeadAttention node (scale 1: q arrives
    scaled), whose CPU kernel is a flash-attention loop: the (nW*heads, T, T) logits, 805 MB per block
    at paper size, are never written out, softmaxed and read back."""
    nw, t, _ = qa.shape
    if torch.onnx.is_in_onnx_export():
        return torch.onnx.ops.symbolic("com.microsoft::MultiHeadAttention", (qa, ka, v),
                                       {"num_heads": heads, "scale": 1.0}, dtype=v.dtype,
                                       shape=tuple(v.shape), version=1)
    dk, dv = qa.shape[-1] // heads, v.shape[-1] // heads
    logits = qa.reshape(nw, t, heads, dk).transpose(1, 2) @ ka.reshape(nw, t, heads, dk).permute(0, 2, 3, 1)
    out = logits.softmax(dim=-1) @ v.reshape(nw, t, heads, dv).transpose(1, 2)
    return out.transpose(1, 2).reshape(nw, t, heads * dv)


def folded_attention(x, regions, key_pos, weights: dict, heads: int, *, mask_value: float):
    """`Attention3d.forward` with the relative-position terms and the shift mask inside the logits'
    product: [q*scale, q.Rh, q.Rw, q.Rd, m*r] . [k, onehot_h, onehot_w, onehot_d, r]
    = q.k*scale + rel_h + rel_w + rel_d + m*[same region], with m = -mask_value. Softmax ignores the
    per-row constant m, so this is the official logits + (0 within a region, mask_value across).
    `weights` come from `fold_attention` (scale folded into q, no k and v biases).

    The per-query table products run as one batched MatMul over window positions (T batches of
    (windows*heads, hd) x (hd, 3w)) instead of Einsums."""
    nw, w, _, _, c = x.shape
    t, nh = w ** 3, heads
    hd = c // nh
    x = x.reshape(nw, t, c)
    q = (x @ weights["wq_t"] + weights["bq_s"]).reshape(nw, t, nh, hd)    # already scaled
    k = (x @ weights["wk_t"]).reshape(nw, t, nh, hd)
    rh, rw, rd = weights["tables_s"].unbind(0)                  # (w query pos, w key pos, hd) each
    pos = torch.arange(t, device=x.device)
    per_pos = torch.cat([rh[pos // (w * w)], rw[(pos // w) % w], rd[pos % w]], 1)   # (t, 3w, hd)
    rel = q.permute(1, 0, 2, 3).reshape(t, nw * nh, hd) @ per_pos.transpose(1, 2)  # (t, nw*nh, 3w)
    qs = [q, rel.reshape(t, nw, nh, 3 * w).transpose(0, 1)]
    ks = [k, key_pos[None, :, None].expand(nw, t, nh, 3 * w)]
    if regions is not None:
        r = regions[:, :, None].expand(nw, t, nh, regions.shape[-1])
        qs.append(r * -mask_value)
        ks.append(r)
    qa, ka = torch.cat(qs, -1).reshape(nw, t, -1), torch.cat(ks, -1).reshape(nw, t, -1)
    out = attention_core(qa, ka, x @ weights["wv_t"], nh)
    return (out @ weights["wp_t"] + weights["bp_v"]).reshape(nw, w, w, w, c)


class EncoderGraph(nn.Module):
    """crop (1,1,C,C,C) -> f3 (1,Cn,G,G,G), cls_partial (1,Cd,L,L,L), L = cfg.image_level (2G in the paper)."""

    def __init__(self, model: Sam3D):
        super().__init__()
        cfg = self.cfg = model.cfg
        enc = model.encoder
        k, b, self.stride, self.pad = folded_front_end(model)
        # the kernel's axes as (H, W, D), like the permuted crop it convolves (`forward`)
        self.register_buffer("front_kernel_hwd", k.permute(0, 1, 3, 4, 2).contiguous())
        self.register_buffer("front_bias", b)
        with torch.no_grad():
            self.register_buffer("pos", enc.pooled_pos()[:, :, :, None, :].detach().clone())
            self.register_buffer("depth", enc.depth_embed[:, None, None].detach().clone())
            self.register_buffer("regions", region_onehots(cfg) if cfg.shift else torch.zeros(0))
            for i, blk in enumerate(enc.blocks):
                tables = [blk.attn.lr * r for r in blk.attn.rel_tables(cfg.window)]
                folded = fold_attention(blk.attn, tables)
                for n, v in folded.items():
                    self.register_buffer(f"{n}{i}", v.detach().clone())
            self.attention_keys = tuple(folded)   # the same names for every block
        self.register_buffer("key_pos", key_position_onehots(cfg.window))
        for name, shift in (("", 0), ("shifted_", cfg.shift)):
            order = window_order(cfg.grid, cfg.window, shift)
            self.register_buffer(name + "order", order)
            self.register_buffer(name + "inverse", torch.argsort(order))
        self.blocks = enc.blocks
        self.necks = enc.neck_3d
        heads = model.decoder.mlahead.heads()
        self.heads = nn.ModuleList(heads[:3])
        d = cfg.decoder_dim
        w = model.decoder.cls[0].weight.detach()
        if cfg.decoder_scale > 1:  # heads 2-4 through the coarse-grid rewrite, the image level as a conv
            self.heads_conv = UpsampledConv(w[:, :3 * d], cfg.grid, cfg.decoder_scale)
            self.register_buffer("cls_image_w", w[:, 4 * d:].clone())
        else:
            self.register_buffer("cls_static_w", torch.cat([w[:, :3 * d], w[:, 4 * d:]], 1).clone())

    def block(self, blk, x, weights):
        """`Block3d.forward` with `folded_attention` and `bias_gelu`, and the roll + window partition
        (and its inverse) as one row Gather each: torch.roll exports as three Slice/Concat pairs per
        roll."""
        x = x + blk.adapter(x)
        shortcut = x
        g, w, c = blk.grid, blk.window, x.shape[-1]
        order, inverse = (self.shifted_order, self.shifted_inverse) if blk.shifted else (self.order, self.inverse)
        y = blk.norm1(x).reshape(g ** 3, c)[order].reshape(-1, w, w, w, c)
        y = folded_attention(y, self.regions if blk.shifted else None, self.key_pos, weights, blk.attn.heads,
                             mask_value=self.cfg.mask_value)
        x = shortcut + y.reshape(g ** 3, c)[inverse].reshape(1, g, g, g, c)
        mlp = blk.mlp
        return x + mlp.lin2(bias_gelu(F.linear(blk.norm2(x), mlp.lin1.weight), mlp.lin1.bias))

    def image_level(self, x):  # the crop as (1,1,H,W,D)
        p = self.cfg.image_pool
        if p == 1:
            return x
        if p == 2:  # trilinear x0.5 with align_corners=False == 2x2x2 average
            return F.avg_pool3d(x, 2)
        return F.interpolate(x, scale_factor=1.0 / p, mode="trilinear", align_corners=False)

    def forward(self, crop):
        cfg = self.cfg
        # The token grid is (H', W', D') with channels last. Permuting the 8 MB crop to (H, W, D) first
        # leaves one move of the channel axis after the conv, which ONNX Runtime does as a 2-D
        # transpose, several times cheaper than the 5-D permute (0, 3, 4, 2, 1).
        crop = crop.permute(0, 1, 3, 4, 2)                                      # (1,1,H,W,D)
        x = F.pad(crop, (self.pad,) * 6, mode="replicate") if self.pad else crop
        x = F.conv3d(x, self.front_kernel_hwd, self.front_bias, stride=self.stride)  # (1,E,H',W',D')
        x = x.permute(0, 2, 3, 4, 1) + self.pos + self.depth                        # (1,H',W',D',E)
        feats = []
        for i, blk in enumerate(self.blocks):
            # the shared mask and the folded weights and tables replace the block's own
            x = self.block(blk, x, {n: getattr(self, f"{n}{i}") for n in self.attention_keys})
            if i in cfg.neck_blocks:
                feats.append(self.necks[len(feats)](x.permute(0, 4, 1, 2, 3)))
        heads = [h(f) for h, f in zip(self.heads, feats[:3])]
        if cfg.decoder_scale > 1:  # = conv3d(cat(upsampled heads, image level), cls.0's static half)
            cls_partial = (self.heads_conv(torch.cat(heads, 1))
                           + F.conv3d(self.image_level(crop), self.cls_image_w, padding=1))
        else:
            static = [head_upsample(h, cfg) for h in heads] + [self.image_level(crop)]
            cls_partial = F.conv3d(torch.cat(static, 1), self.cls_static_w, padding=1)
        return feats[3], cls_partial


def upsample_tap_matrices(g: int, scale: int, dtype=torch.float32) -> torch.Tensor:
    """(3, L, g), L = scale*g: row p of tap k is the official x`scale` linear upsampling
    (align_corners=True) read at p + k - 1, zero outside [0, L) (the conv's zero padding).
    Taken from F.interpolate itself in the weight's dtype, so the weights are the model's bit for bit."""
    a = F.interpolate(torch.eye(g, dtype=dtype)[None], scale_factor=scale, mode="linear",
                      align_corners=True)[0].t()                  # (L, g)
    n = a.shape[0]
    m = torch.zeros(3, n, g, dtype=dtype)
    for k in range(3):
        lo, hi = max(0, 1 - k), min(n, n + 1 - k)                 # p with 0 <= p + k - 1 < L
        m[k, lo:hi] = a[lo + k - 1:hi + k - 1]
    return m


class UpsampledConv(nn.Module):
    """conv3d(trilinear x`scale`(h), w, padding=1) without the conv at the upsampled resolution.

    Both maps are linear and the upsampling is separable, so the channel mixing can run first, on
    the coarse grid, once per kernel tap (a 1x1 product to 27 x Cout channels), and each axis's
    upsampling and tap shift are then one small matrix (L x g per tap) applied along that axis,
    summed over its 3 taps. Paper size (head5: 128 channels, 32^3 -> 64^3): 232 -> 60 GFLOP, equal
    within 2e-6 (timings: docs/performance.md).
    Layout: the product's rows are (o, k1, k2, k0), so tap k0 sits next to axis 2 and that axis is
    one batched MatMul; axes 3 and 4 take a MatMul per tap and a ReduceSum over the taps (cheaper
    than transposing the 27-channel field, which is the largest tensor here). Output channels go
    through in groups of `group` (buffers mix0, mix1, ...): the same work, with intermediates a
    fraction of the 27-channel field's size (paper size: 453 MB for all 128 channels at once)."""

    def __init__(self, weight: torch.Tensor, g: int, scale: int, group: int = 32):
        super().__init__()
        cout, cin = weight.shape[:2]
        self.g, self.n = g, scale * g
        ts = upsample_tap_matrices(g, scale, weight.dtype)
        # tap-sum A/B (middle axis, leading axis, MatMul with ones): middle won on the CPU; CUDA untimed
        mix = weight.detach().permute(0, 3, 4, 2, 1).reshape(cout, 27, cin)
        self.groups = [min(group, cout - c0) for c0 in range(0, cout, group)]
        for i, c0 in enumerate(range(0, cout, group)):
            self.register_buffer(f"mix{i}", mix[c0:c0 + group].reshape(-1, cin).clone())
        self.register_buffer("m0", ts.permute(1, 0, 2).reshape(self.n, 3 * g).contiguous())  # col k0*g + x
        self.register_buffer("m1", ts[:, None].contiguous())                               # (3, 1, L, g)
        self.register_buffer("m2", ts.transpose(1, 2).contiguous())                        # (3, g, L)

    def forward(self, h):  # (1, Cin, g, g, g) -> (1, Cout, L, L, L)
        g, n = self.g, self.n
        flat = h.reshape(h.shape[1], g ** 3)
        out = []
        for i, c in enumerate(self.groups):
            z = torch.matmul(getattr(self, f"mix{i}"), flat).reshape(c * 9, 3 * g, g * g)
            z = torch.matmul(self.m0, z).reshape(c, 3, 3 * n, g, g)      # axis 2 done: [o, k1, k2, X, y, z]
            z = torch.matmul(self.m1, z).sum(1)                           # axis 3: (c, 3n, n, g) [o, k2, X, Y, z]
            out.append(torch.matmul(z.reshape(c, 3, n * n, g), self.m2).sum(1))  # axis 4: (c, n*n, n)
        return torch.cat(out, 0).reshape(1, -1, n, n, n)

    @staticmethod
    def weight_from(inits: dict, prefix: str, cout: int):
        """The conv weight (cout, cin, 3, 3, 3) back from a graph's mix0, mix1, ... initializers (or None)."""
        parts, i = [], 0
        while f"{prefix}.mix{i}" in inits:
            parts.append(inits[f"{prefix}.mix{i}"])
            i += 1
        if not parts:
            return None
        return np.concatenate(parts).reshape(cout, 3, 3, 3, -1).transpose(0, 4, 3, 1, 2)


class SingleOutputConv(nn.Module):
    """conv3d(y, w, padding=1) for one output channel: a 1x1 product to the 27 taps' planes, then
    the planes shifted and summed. ONNX Runtime's CPU Conv lowers a 1-output conv to im2col (27 x C
    rows over the whole grid: 905 MB at paper size) for the decoder's last conv (1.8 GFLOP); the
    product and 27 slices of a padded (27, L+2, L+2, L+2) field take a fraction of that time."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("taps", weight.detach()[0].permute(1, 2, 3, 0).reshape(27, -1).clone())  # (27, C)

    def forward(self, y):  # (1, C, A, B, D) -> (1, 1, A, B, D)
        a, b, d = y.shape[2:]
        z = torch.matmul(self.taps, y.reshape(y.shape[1], a * b * d)).reshape(27, a, b, d)
        z = F.pad(z, (1, 1, 1, 1, 1, 1))
        out = 0
        for t in range(27):  # tap (i, j, k) reads voxel p + (i, j, k) - 1
            i, j, k = t // 9, t // 3 % 3, t % 3
            out = out + z[t, i:i + a, j:j + b, k:k + d]
        return out[None, None]


def gather_trilinear(f: torch.Tensor, points_dhw: torch.Tensor, crop: int) -> torch.Tensor:
    """Trilinear sample of f (1, C, H', W', D') at crop voxels (1, N, 3) in (d, h, w) -> (1, N, C).

    Feature coordinate of crop voxel p is (p + 0.5) * G / crop - 0.5 (grid_sample, align_corners=False);
    corners outside the grid contribute zero (padding_mode="zeros")."""
    c, g = f.shape[1], f.shape[2]
    flat = f.reshape(c, g * g * g)
    pos = (points_dhw[0] + 0.5) * (g / crop) - 0.5           # (N, 3) d, h, w
    base = torch.floor(pos)
    frac = pos - base
    base = base.to(torch.int64)
    corners = torch.tensor([[a, b, e] for a in (0, 1) for b in (0, 1) for e in (0, 1)], dtype=torch.int64)
    idx = base[None] + corners[:, None]                       # (8, N, 3)
    wgt = torch.where(corners[:, None].bool(), frac[None], 1.0 - frac[None]).prod(-1)  # (8, N)
    inside = ((idx >= 0) & (idx < g)).all(-1)
    wgt = wgt * inside.to(wgt.dtype)
    idx = idx.clamp(0, g - 1)
    lin = idx[..., 1] * (g * g) + idx[..., 2] * g + idx[..., 0]   # token order (H', W', D')
    vals = flat[:, lin.reshape(-1)].reshape(c, 8, -1)          # (C, 8, N)
    return (vals * wgt[None]).sum(1).t()[None]


class DecoderGraph(nn.Module):
    """f3, cls_partial, points (1,N,3) (d,h,w) -> prob (1,C,C,C) in (D,H,W)."""

    def __init__(self, model: Sam3D):
        super().__init__()
        cfg = self.cfg = model.cfg
        self.transformer = model.prompt_encoder.transformer
        self.head5 = model.decoder.mlahead.head5
        d = cfg.decoder_dim
        cls = model.decoder.cls
        click_w = cls[0].weight.detach()[:, 3 * d:4 * d]
        if cfg.decoder_scale > 1:
            self.click_conv = UpsampledConv(click_w, cfg.grid, cfg.decoder_scale)
        else:
            self.register_buffer("cls_click_w", click_w.clone())
        self.norm = cls[1]
        w3 = cls[3].weight.detach()
        self.logit_diff = SingleOutputConv(w3[1:2] - w3[0:1])
        if cfg.point_labels:
            # token += label_neg + label * label_step: two initializers under these names, used as
            # they are (nothing for the exporter to fold), which `package_import` reads back
            e = model.prompt_encoder.label_embed.detach()
            self.label_neg = nn.Parameter(e[0].clone())
            self.label_step = nn.Parameter((e[1] - e[0]).clone())

    def forward(self, f3, cls_partial, points, labels=None):
        cfg = self.cfg
        b, c, g = f3.shape[0], f3.shape[1], f3.shape[2]
        tokens = gather_trilinear(f3, points, cfg.crop)
        if cfg.point_labels:
            tokens = tokens + self.label_neg + labels[..., None] * self.label_step
        image = self.transformer(f3.flatten(2).transpose(1, 2), tokens)
        f3p = image.transpose(1, 2).reshape(b, c, g, g, g)
        h5 = self.head5(f3p)                                       # then conv3d(head_upsample(h5), w), exactly
        y = (self.click_conv(h5) if cfg.decoder_scale > 1 else F.conv3d(h5, self.cls_click_w, padding=1)) + cls_partial
        y = F.relu(self.norm(y))
        y = self.logit_diff(y)                                     # l1 - l0, (1,1,H,W,D) at the decoder level
        if cfg.out_upsample > 1:
            y = F.interpolate(y, scale_factor=cfg.out_upsample, mode="trilinear", align_corners=True)
        return torch.sigmoid(y[:, 0]).permute(0, 3, 1, 2)         # (1, D, H, W)


def graph_layout(cfg: Sam3DConfig) -> dict:
    """How the graphs built here hold the parameters that the rewrites fold (manifest
    `export.graph_layout`, read back by `package_import`): one entry per part whose layout differs
    between exports, named after what the graph holds.

    * front_end: "conv_hwd", the folded kernel `front_kernel_hwd` with axes (H, W, D), the crop
      permuted before it ("conv_dhw": `front_kernel`, axes (D, H, W));
    * attention: "folded", `fold_attention`'s constants per block i (`wq_t{i}`, `bq_s{i}`, `wk_t{i}`,
      `wv_t{i}`, `wp_t{i}`, `bp_v{i}`; tables divided by the softmax scale) ("qkv_biases": q, k and v
      products each adding its bias `bq{i}`, `bk{i}`, `bv{i}`);
    * cls_static, cls_click: the two halves of `cls.0`, "upsampled_conv" (`UpsampledConv`'s mixing
      matrices `heads_conv.mixN` + the image-level conv `cls_image_w`, and `click_conv.mixN`) when
      the decoder upsamples, else "conv" (`cls_static_w`, `cls_click_w`);
    * logit_diff: "tap_planes", `SingleOutputConv`'s (27, C) `logit_diff.taps` ("conv": `logit_diff_w`)."""
    upsampled = "upsampled_conv" if cfg.decoder_scale > 1 else "conv"
    return {"front_end": "conv_hwd", "attention": "folded", "cls_static": upsampled, "cls_click": upsampled,
            "logit_diff": "tap_planes"}


def graphs(model: Sam3D):
    model = model.eval()
    return EncoderGraph(model).eval(), DecoderGraph(model).eval()
