"""One configuration object for every size of the 3DSAM-adapter.

The default is the paper's configuration (spec `model-3dsam-adapter.md` section 2). Smaller
configurations (tests, the demo model) go through exactly the same code: everything that follows
from the crop size (token grid, shift-mask regions, position-embedding pooling, decoder scale
factors) is derived here, never hard-coded in the layers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Sam3DConfig:
    # ViT backbone (SAM ViT-B in the paper)
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    adapter_dim: int = 384
    # SAM's 2D geometry: only decides the stored sizes of pos_embed and of the rel-pos tables
    sam_grid: int = 64            # 1024 / 16: pos_embed is (1, sam_grid, sam_grid, C)
    sam_window: int = 14          # rel-pos rows 2*14-1 = 27 for windowed blocks
    global_blocks: Tuple[int, ...] = (2, 5, 8, 11)  # rel-pos rows 2*sam_grid-1 = 127
    # 3D geometry
    crop: int = 128               # crop edge in voxels
    upsample: int = 4             # trilinear input upsampling factor
    patch: int = 16               # in-plane patch size (on the upsampled slices)
    num_slice: int = 16           # upsampled slices grouped into one depth token
    window: int = 8               # cubic attention window, in tokens
    shift: int = 4                # cyclic shift of the shifted blocks
    neck_blocks: Tuple[int, ...] = (2, 5, 8, 11)    # 0-based blocks whose output feeds a neck
    neck_dim: int = 256
    # prompt encoder ("visual sampler" + 2-layer transformer)
    pe_dim: int = 256
    pe_heads: int = 8
    pe_mlp_dim: int = 2048
    pe_layers: int = 2
    pe_downsample: int = 2        # cross-attention internal width = pe_dim / pe_downsample
    pe_global_queries: int = 10
    pe_gauss_feats: int = 128     # size of the unused random-Fourier buffer (kept for strict loads)
    # decoder
    decoder_dim: int = 128
    # the decoder heads' trilinear upsampling of the token grid (2 in the paper: the decoder works at
    # 2*grid, 64 for a 128 crop, and its logits are upsampled to the crop). A larger factor moves the
    # decoder to a finer grid with the same parameters (the demo model: 4, the crop's own grid)
    decoder_scale: int = 2
    num_classes: int = 2
    # numerics
    vit_ln_eps: float = 1e-6
    neck_ln_eps: float = 1e-6
    pe_ln_eps: float = 1e-5
    in_eps: float = 1e-5
    mask_value: float = -100.0    # shift-mask value across regions (not -inf, as the paper's code)
    # extended architecture (not the paper's): a learned embedding per click label (negative,
    # positive) added to each click's sampled feature, as SAM's prompt encoder has; the paper's
    # configuration and the released checkpoints have none and take positive clicks only
    point_labels: bool = False

    # ---- derived ------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def grid(self) -> int:
        """Token grid edge (H' = W' = crop*upsample/patch, D' = crop*upsample/num_slice)."""
        return self.crop * self.upsample // self.patch

    @property
    def upsampled(self) -> int:
        return self.crop * self.upsample

    @property
    def pos_pool(self) -> int:
        """Average-pooling factor from SAM's pos_embed grid to the token grid."""
        return self.sam_grid // self.grid

    @property
    def n_windows(self) -> int:
        return (self.grid // self.window) ** 3

    @property
    def window_tokens(self) -> int:
        return self.window ** 3

    @property
    def shifted_blocks(self) -> Tuple[int, ...]:
        return tuple(i for i in range(self.depth) if i % 2 == 0) if self.shift > 0 else ()

    @property
    def pe_cross_dim(self) -> int:
        return self.pe_dim // self.pe_downsample

    @property
    def image_level(self) -> int:
        """Edge of the decoder's working resolution (64 for the paper): the heads upsample by
        decoder_scale (x2 in the paper)."""
        return self.decoder_scale * self.grid

    @property
    def image_pool(self) -> int:
        """Pooling of the crop to the decoder resolution (the official x0.5 trilinear = avg-pool 2)."""
        return self.crop // self.image_level

    @property
    def out_upsample(self) -> int:
        """Final decoder upsampling (`scale_factor2 = crop // 64` in the official code)."""
        return self.crop // self.image_level

    def rel_pos_rows(self, block: int) -> int:
        return 2 * (self.sam_grid if block in self.global_blocks else self.sam_window) - 1

    # ---- checks and (de)serialisation ----------------------------------------------------
    def validate(self) -> "Sam3DConfig":
        def need(cond, msg):
            if not cond:
                raise ValueError(f"invalid Sam3DConfig: {msg}")

        need(self.embed_dim % self.heads == 0, "embed_dim must be divisible by heads")
        need(self.patch % self.upsample == 0, "patch must be a multiple of upsample (front-end fold)")
        need(self.num_slice % self.upsample == 0, "num_slice must be a multiple of upsample")
        need(self.upsampled % self.patch == 0, "crop*upsample must be divisible by patch")
        need(self.upsampled // self.num_slice == self.grid,
             "crop*upsample/num_slice must equal crop*upsample/patch (cubic token grid)")
        need(self.grid % self.window == 0, "token grid must be divisible by window")
        need(0 <= self.shift < self.window, "shift must be in [0, window)")
        need(self.sam_grid % self.grid == 0, "sam_grid must be a multiple of the token grid")
        need(self.decoder_scale >= 1, "decoder_scale must be >= 1")
        need(self.crop % self.image_level == 0 and self.image_level <= self.crop,
             "crop must be a multiple of decoder_scale*grid (decoder resolution)")
        need(len(self.neck_blocks) == 4, "the decoder has four levels: neck_blocks needs 4 entries")
        need(all(0 <= b < self.depth for b in self.neck_blocks), "neck_blocks out of range")
        need(list(self.neck_blocks) == sorted(set(self.neck_blocks)), "neck_blocks must increase")
        need(self.pe_dim % self.pe_heads == 0, "pe_dim must be divisible by pe_heads")
        need(self.pe_cross_dim % self.pe_heads == 0, "pe_dim/pe_downsample must be divisible by pe_heads")
        need(self.num_classes == 2, "the decoder's foreground probability needs 2 classes")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if not self.point_labels:
            # the paper's architecture is written as it always was (manifests stay byte-identical)
            del d["point_labels"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Sam3DConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Sam3DConfig fields: {unknown}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw).validate()

    def replace(self, **kw) -> "Sam3DConfig":
        return dataclasses.replace(self, **kw).validate()


PAPER = Sam3DConfig().validate()

# A few-MB configuration for unit tests and the Rust engine's fixture packages: 32^3 crop, 8^3 tokens.
TINY = Sam3DConfig(
    embed_dim=48, depth=4, heads=3, mlp_ratio=2.0, adapter_dim=24,
    sam_grid=16, sam_window=3, global_blocks=(1, 3),
    crop=32, upsample=4, patch=16, num_slice=16, window=4, shift=2,
    neck_blocks=(0, 1, 2, 3), neck_dim=32,
    pe_dim=32, pe_heads=4, pe_mlp_dim=64, pe_layers=2, pe_downsample=2, pe_global_queries=4,
    pe_gauss_feats=16, decoder_dim=16,
).validate()

# The shipped demo model: 32^3 crop, trained at 2 mm (a 64 mm field) and finally at 1.5 mm
# (the package's spacing: a 48 mm field, decoder voxels of 3 mm for small lesions), 8^3 tokens, a
# 6-block 96-wide ViT. Chosen for a small CPU: training sees thousands of lesions an hour and a click
# answers well under the 100 ms target (docs/model.md). A 40^3 crop doubled the step time; wider or
# deeper ViTs gave no gain we could afford to train.
# Same ratios as the paper where they are free: window = grid / 2, shift = window / 2, SAM's pos_embed
# grid twice the token grid (pooled by 2), adapters at half the width, necks on 4 of the blocks.
# decoder_scale stays the paper's 2 (decoder voxels of 3 mm): 4 (the crop's own grid) was trained and
# measured (models/README.md, step 8) and did not help the held-out lesions.
DEMO = Sam3DConfig(
    embed_dim=96, depth=6, heads=4, mlp_ratio=4.0, adapter_dim=48,
    sam_grid=16, sam_window=4, global_blocks=(2, 5),
    crop=32, upsample=4, patch=16, num_slice=16, window=4, shift=2,
    neck_blocks=(1, 3, 4, 5), neck_dim=64,
    pe_dim=64, pe_heads=4, pe_mlp_dim=256, pe_layers=2, pe_downsample=2, pe_global_queries=10,
    pe_gauss_feats=32, decoder_dim=32,
).validate()

NAMED = {"paper": PAPER, "tiny": TINY, "demo": DEMO}
