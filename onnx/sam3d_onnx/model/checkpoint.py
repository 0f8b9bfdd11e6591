"""Loading weights: the released 3DSAM-adapter checkpoints and SAM ViT-B.

Loading is strict: every key the model needs must be present with its exact shape, and nothing
unexpected may be there. Errors name the key. The two buffers the official code stores but never
needs are handled explicitly: the six `attn_mask` copies must equal the mask the configuration
implies (a different mask means a different crop size or shift), the unused random-Fourier matrix is
loaded as it is.
"""
from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from typing import Dict, Mapping

import numpy as np
import torch

from .config import Sam3DConfig
from .network import Sam3D, shift_window_mask


class CheckpointError(ValueError):
    """A checkpoint that is not what the converter expects; the message names the problem."""


OFFICIAL_GROUPS = ("encoder_dict", "feature_dict", "decoder_dict")
APPLIED_PROMPT_ENCODER = 3  # only feature_dict[3] is used by the official forward


def _safe_globals():
    """Globals a released checkpoint needs beyond plain tensors: `best_val_loss` is a numpy scalar."""
    out = []
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = __import__(mod, fromlist=["scalar"])
            out.append(m.scalar)
        except (ImportError, AttributeError):
            pass
    out.append(np.dtype)
    out += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32")]
    return out


def read_torch_file(path: str):
    """torch.load without executing arbitrary pickles (weights_only) but accepting the numpy scalar
    of the released files. Any file name or zip root folder (`last.pth/`, `archive/`) works."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] != b"\x80":
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint: {e}") from e


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping, where: str):
    """Strict key and shape check; raises CheckpointError naming every offending key."""
    if not isinstance(got, Mapping):
        raise CheckpointError(f"{where}: expected a state dict, found {type(got).__name__}")
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items()
              if k in got and (not torch.is_tensor(got[k]) or tuple(got[k].shape) != tuple(v.shape))]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    if shapes:
        problems.append("mis-shaped keys: " + "; ".join(shapes[:20]))
    if problems:
        raise CheckpointError(f"{where}: " + " | ".join(problems))


def _check_masks(model: Sam3D, enc: Mapping):
    want = shift_window_mask(model.cfg)
    for i, blk in enumerate(model.encoder.blocks):
        if blk.shifted:
            key = f"blocks.{i}.attn_mask"
            if not torch.equal(enc[key].float(), want):
                raise CheckpointError(
                    f"encoder_dict: {key} differs from the shift mask of this configuration "
                    f"(crop {model.cfg.crop}, window {model.cfg.window}, shift {model.cfg.shift})")


def _to_float(sd: Mapping) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.float() if torch.is_tensor(v) else v) for k, v in sd.items())


def load_official_state(ckpt: Mapping, cfg: Sam3DConfig) -> Sam3D:
    """Build the model from an official checkpoint dict (`last.pth.tar` / `best.pth.tar`)."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"expected a dict with {OFFICIAL_GROUPS}, found {type(ckpt).__name__}")
    absent = [g for g in OFFICIAL_GROUPS if g not in ckpt]
    if absent:
        hint = ""
        if "model" in ckpt or any(str(k).startswith("image_encoder.") for k in ckpt):
            hint = " (this looks like a SAM checkpoint: use --sam for the training start point)"
        elif "encoder_dict" in ckpt and "feature_dict" not in ckpt:
            hint = " (this looks like the automatic variant, which has no prompt encoder)"
        raise CheckpointError(f"not a 3DSAM-adapter checkpoint: missing {absent}{hint}")
    feats = ckpt["feature_dict"]
    if not isinstance(feats, (list, tuple)) or len(feats) != 4:
        raise CheckpointError("feature_dict: expected a list of 4 prompt-encoder state dicts")

    model = Sam3D(cfg)
    enc_exp = model.encoder.state_dict()
    check_state_dict(enc_exp, ckpt["encoder_dict"], "encoder_dict")
    pe_exp = model.prompt_encoder.state_dict()
    for j, sd in enumerate(feats):
        check_state_dict(pe_exp, sd, f"feature_dict[{j}]")
    check_state_dict(model.decoder.state_dict(), ckpt["decoder_dict"], "decoder_dict")

    _check_masks(model, ckpt["encoder_dict"])
    model.encoder.load_state_dict(_to_float(ckpt["encoder_dict"]), strict=True)
    model.prompt_encoder.load_state_dict(_to_float(feats[APPLIED_PROMPT_ENCODER]), strict=True)
    model.decoder.load_state_dict(_to_float(ckpt["decoder_dict"]), strict=True)
    return model.eval()


def load_official(path: str, cfg: Sam3DConfig) -> Sam3D:
    return load_official_state(read_torch_file(path), cfg)


def official_state(model: Sam3D, epoch: int = 0, best_val_loss: float = 1.0) -> Dict:
    """The model's weights in the official layout (what `load_official_state` reads back).
    The three prompt encoders the official code stores but never applies get copies of index 3."""
    pe = OrderedDict((k, v.detach().clone()) for k, v in model.prompt_encoder.state_dict().items())
    return {
        "epoch": int(epoch),
        "best_val_loss": np.float32(best_val_loss),
        "encoder_dict": OrderedDict((k, v.detach().clone()) for k, v in model.encoder.state_dict().items()),
        "feature_dict": [OrderedDict((k, v.clone()) for k, v in pe.items()) for _ in range(4)],
        "decoder_dict": OrderedDict((k, v.detach().clone()) for k, v in model.decoder.state_dict().items()),
    }


# ------------------------------------------------------------------------------------------------
# SAM ViT-B as the starting point for training

SAM_PREFIX = "image_encoder."


def sam_encoder_keys(cfg: Sam3DConfig) -> Dict[str, tuple]:
    """Keys and shapes of SAM's image encoder that the 3D encoder reuses (SAM's 2D neck excluded)."""
    e, hd = cfg.embed_dim, cfg.head_dim
    keys = {"pos_embed": (1, cfg.sam_grid, cfg.sam_grid, e),
            "patch_embed.proj.weight": (e, 3, cfg.patch, cfg.patch), "patch_embed.proj.bias": (e,)}
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        rows = cfg.rel_pos_rows(i)
        keys.update({
            p + "norm1.weight": (e,), p + "norm1.bias": (e,),
            p + "attn.qkv.weight": (3 * e, e), p + "attn.qkv.bias": (3 * e,),
            p + "attn.proj.weight": (e, e), p + "attn.proj.bias": (e,),
            p + "attn.rel_pos_h": (rows, hd), p + "attn.rel_pos_w": (rows, hd),
            p + "norm2.weight": (e,), p + "norm2.bias": (e,),
            p + "mlp.lin1.weight": (cfg.mlp_dim, e), p + "mlp.lin1.bias": (cfg.mlp_dim,),
            p + "mlp.lin2.weight": (e, cfg.mlp_dim), p + "mlp.lin2.bias": (e,),
        })
    return keys


def init_from_sam_state(sam: Mapping, cfg: Sam3DConfig, seed: int = 0) -> Sam3D:
    """A new model whose 2D parts come from SAM (`sam_vit_b_01ec64.pth` layout), as `train.py` does:
    SAM image-encoder keys copied unchanged (nothing resized), SAM's neck, prompt encoder and mask
    decoder discarded, rel_pos_d = (rel_pos_h + rel_pos_w) / 2, depth_embed = 1, the rest new."""
    if isinstance(sam, Mapping) and "model" in sam and isinstance(sam["model"], Mapping):
        sam = sam["model"]
    if not isinstance(sam, Mapping):
        raise CheckpointError(f"SAM checkpoint: expected a state dict, found {type(sam).__name__}")
    enc = {k[len(SAM_PREFIX):]: v for k, v in sam.items() if isinstance(k, str) and k.startswith(SAM_PREFIX)}
    if not enc:
        raise CheckpointError("SAM checkpoint: no 'image_encoder.*' keys (is this a SAM checkpoint?)")
    want = sam_encoder_keys(cfg)
    missing = [SAM_PREFIX + k for k in want if k not in enc]
    shapes = [f"{SAM_PREFIX}{k}: checkpoint {tuple(enc[k].shape)} vs model {v}"
              for k, v in want.items() if k in enc and tuple(enc[k].shape) != v]
    extra = [SAM_PREFIX + k for k in enc if k not in want and not k.startswith("neck.")]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:20]))
    if shapes:
        problems.append("mis-shaped keys: " + "; ".join(shapes[:20]))
    if extra:
        problems.append("unexpected keys: " + ", ".join(extra[:20]))
    if problems:
        raise CheckpointError("SAM checkpoint: " + " | ".join(problems))

    torch.manual_seed(seed)
    model = Sam3D(cfg)
    state = model.encoder.state_dict()
    with torch.no_grad():
        for k in want:
            state[k].copy_(enc[k].float())
        for i, blk in enumerate(model.encoder.blocks):
            blk.attn.rel_pos_d.copy_(0.5 * (blk.attn.rel_pos_h + blk.attn.rel_pos_w))
        model.encoder.depth_embed.fill_(1.0)
        for layer in model.prompt_encoder.transformer.layers:
            layer.global_query.copy_(0.1 * torch.randn_like(layer.global_query))
    return model


def init_from_sam(path: str, cfg: Sam3DConfig, seed: int = 0) -> Sam3D:
    return init_from_sam_state(read_torch_file(path), cfg, seed)
