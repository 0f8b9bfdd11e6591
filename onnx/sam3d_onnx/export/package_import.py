"""A model package back to a PyTorch `Sam3D`, for further training (`train-demo --resume`).

    python -m sam3d_onnx import-package PKG --out DIR [--check 8]
    python -m sam3d_onnx train-demo --data DATA --out DIR --resume DIR/model.pt --steps N ...

DIR receives `model.pt` ({"state_dict", "step"}, as train-demo writes it) and, for packages that carry
a training record (the demo model), `training.json`, so `train-demo --resume` continues from the package.

The exported graphs (`graphs.py`) fold several parameters together, so the import recovers a model
that computes the same function, not necessarily the same numbers in every parameter:
  * front end: the folded kernel is, per output channel, the outer product of a depth profile (the
    slice embedding through the trilinear taps) and an in-plane kernel (the patch conv, summed over its
    three identical input channels, through the taps); a rank-1 split gives both, the minimum-norm
    slice embedding and patch kernel reproduce them (patch conv on input channel 0 only, its bias
    folded into the slice embedding's bias);
  * SAM's positional embedding: only its average-pooled grid is in the graph; each pooled value is
    repeated over its pooling window;
  * attention (`fold_attention`): q's weight and bias carry the softmax scale, k's bias is not in the
    graph (softmax ignores it), v's is in the output projection's: they become 0 and the projection
    keeps the folded bias (older packages: q, k, v with their biases, found as below);
  * relative-position tables: the gathered (query, key) tables give the tables exactly where their
    length is 2w-1; the global blocks' longer SAM tables get the minimum-norm table that resamples to
    what the graph holds; `lr` (folded in) becomes 1;
  * the last conv: only the difference of its two output channels is in the graph (softmax channel 1 =
    sigmoid(l1 - l0)): channel 0 becomes zero;
  * parameters the graphs never use (the prompt encoder's token updates after the last image update)
    keep their initial values.
Which constants hold the folded parts is the manifest's `export.graph_layout` (`graphs.graph_layout`);
a package without one (older exports, the shipped demo model among them) is recognised by its
constants' names (`guess_layout`). Linear weights are found as the constant second input of a MatMul
whose result the exporter adds to the layer's (named) bias (or passes with it to a BiasGelu). `check`
compares the imported model's exported graphs with the package's under ONNX Runtime on random crops
and clicks. fp32 packages only.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..model.config import Sam3DConfig
from ..model.network import LayerNorm3d, Sam3D, resample_rel_pos
from ..training.demo import steps_done
from .graphs import UpsampledConv, graphs, interp_taps
from .package import read_manifest


class ImportError_(ValueError):
    """The package cannot be turned back into a model (not fp32, or graphs of an unknown shape)."""


def _initializers(path: str):
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return m.graph, inits


def _linear_weights(graph, inits) -> dict:
    """bias name -> weight (out, in) for every MatMul(x, W) whose output is added to a named bias."""
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {}
    for n in graph.node:
        if n.op_type != "MatMul" or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        for c in consumers.get(n.output[0], []):
            if c.op_type in ("Add", "BiasGelu"):     # BiasGelu: the MLP's first bias, `bias_gelu`
                bias = [i for i in c.input if i in inits and i != n.output[0]]
                if bias and w.ndim == 2:
                    out[bias[0]] = w.T
    return out


def _channel_norms(graph, inits) -> list:
    """(weight, bias) of each exported LayerNorm3d, in graph order: Mul(w (C,1,1,1), x / std) followed
    by Add(., b (C,1,1,1)) (the exporter names these constants after the Unsqueeze it folded)."""
    produced_by = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = []
    for n in graph.node:
        if n.op_type != "Mul":
            continue
        w = [i for i in n.input if i in inits and inits[i].ndim == 4 and inits[i].shape[1:] == (1, 1, 1)]
        x = [i for i in n.input if i not in inits]
        if len(w) != 1 or len(x) != 1 or getattr(produced_by.get(x[0]), "op_type", "") != "Div":
            continue
        for c in consumers.get(n.output[0], []):
            b = [i for i in c.input if i in inits and inits[i].shape == inits[w[0]].shape]
            if c.op_type == "Add" and b:
                pairs.append((inits[w[0]].reshape(-1), inits[b[0]].reshape(-1)))
    return pairs


def _copy(p: torch.Tensor, value, what: str):
    v = torch.tensor(np.asarray(value, np.float32))
    if tuple(v.shape) != tuple(p.shape):
        raise ImportError_(f"{what}: graph holds shape {tuple(v.shape)}, the model needs {tuple(p.shape)}")
    with torch.no_grad():
        p.copy_(v)


def _resample_matrix(rows: int, size: int) -> np.ndarray:
    """M (2*size-1, rows) with resample_rel_pos's row resampling = M @ table."""
    eye = torch.eye(rows)
    g = resample_rel_pos(eye, size)                     # (size, size, rows): row q-k+size-1 of M
    n = 2 * size - 1
    m = np.zeros((n, rows))
    for q in range(size):
        for k in range(size):
            m[q - k + size - 1] = g[q, k].numpy()
    return m


def _front_end(enc, cfg: Sam3DConfig, kernel: np.ndarray, bias: np.ndarray):
    a, _ = interp_taps(cfg.upsample, cfg.patch)          # (patch, taps)
    e, taps = kernel.shape[0], kernel.shape[2]
    pinv = np.linalg.pinv(a.T)                           # (patch, taps): minimum-norm inverse of a.T
    w = np.zeros((e, cfg.patch, cfg.patch))
    s = np.zeros((e, cfg.num_slice))
    k = kernel[:, 0].astype(np.float64).reshape(e, taps, taps * taps)
    for c in range(e):
        u, sv, vt = np.linalg.svd(k[c])
        if sv[0] == 0:
            continue
        if sv[1:].max(initial=0.0) > 1e-5 * sv[0]:
            raise ImportError_(f"front-end kernel channel {c} is not a slice profile times a patch kernel")
        depth = u[:, 0] * np.sqrt(sv[0])                 # A^T s
        plane = (vt[0] * np.sqrt(sv[0])).reshape(taps, taps)   # A^T w A
        s[c] = pinv @ depth
        w[c] = pinv @ plane @ pinv.T
    pw = np.zeros(tuple(enc.patch_embed.proj.weight.shape))
    pw[:, 0] = w
    _copy(enc.patch_embed.proj.weight, pw, "patch_embed.proj.weight")
    _copy(enc.patch_embed.proj.bias, np.zeros(e), "patch_embed.proj.bias")
    _copy(enc.slice_embed.weight, s.reshape(tuple(enc.slice_embed.weight.shape)), "slice_embed.weight")
    _copy(enc.slice_embed.bias, bias, "slice_embed.bias")


def _rel_tables(blk, cfg: Sam3DConfig, per_pos: np.ndarray):
    """per_pos (T, hd, 3w): the block's gathered tables -> rel_pos_h/w/d (lr = 1)."""
    w = cfg.window
    pp = per_pos.transpose(0, 2, 1)                      # (T, 3w, hd)
    gathered = [np.stack([pp[q * w * w, 0:w] for q in range(w)]),
                np.stack([pp[q * w, w:2 * w] for q in range(w)]),
                np.stack([pp[q, 2 * w:3 * w] for q in range(w)])]   # each (w query, w key, hd)
    attn = blk.attn
    for name, g in zip(("rel_pos_h", "rel_pos_w", "rel_pos_d"), gathered):
        n = 2 * w - 1
        short = np.zeros((n, g.shape[-1]))
        for q in range(w):
            for k in range(w):
                short[q - k + w - 1] = g[q, k]
        p = getattr(attn, name)
        rows = p.shape[0]
        table = short if rows == n else np.linalg.pinv(_resample_matrix(rows, w)) @ short
        _copy(p, table, f"{name}")
    with torch.no_grad():
        attn.lr.fill_(1.0)


def _attention_folded(blk, i: int, inits: dict, cfg: Sam3DConfig):
    """Block i's q/k/v and output projection from `fold_attention`'s constants: q's weight and bias
    without the softmax scale; k's bias is not in the graph (softmax ignores it) and becomes 0; v's is
    inside the projection's bias and becomes 0 too, the projection keeping the folded bias."""
    try:
        wq, bq, wk, wv, wp, bp = (inits[f"{n}{i}"] for n in ("wq_t", "bq_s", "wk_t", "wv_t", "wp_t", "bp_v"))
    except KeyError as e:
        raise ImportError_(f"block {i}: no folded attention weight {e}") from None
    s = blk.attn.scale
    _copy(blk.attn.qkv.weight, np.concatenate([wq.T / s, wk.T, wv.T]), f"blocks.{i}.attn.qkv.weight")
    _copy(blk.attn.qkv.bias, np.concatenate([bq / s, np.zeros_like(bq), np.zeros_like(bq)]),
          f"blocks.{i}.attn.qkv.bias")
    _copy(blk.attn.proj.weight, wp.T, f"blocks.{i}.attn.proj.weight")
    _copy(blk.attn.proj.bias, bp, f"blocks.{i}.attn.proj.bias")


# every value `package_import` reads, per part of `graphs.graph_layout` (its docstring says what each means)
LAYOUTS = {"front_end": ("conv_hwd", "conv_dhw"), "attention": ("folded", "qkv_biases"),
           "cls_static": ("upsampled_conv", "conv"), "cls_click": ("upsampled_conv", "conv"),
           "logit_diff": ("tap_planes", "conv")}


def guess_layout(enc_inits: dict, dec_inits: dict) -> dict:
    """The graph layout of a package whose manifest does not record it (`export.graph_layout`, written
    by exports since it was introduced; the shipped demo model has none), from its constants' names."""
    return {"front_end": "conv_hwd" if "front_kernel_hwd" in enc_inits else "conv_dhw",
            "attention": "folded" if "wk_t0" in enc_inits else "qkv_biases",
            "cls_static": "conv" if "cls_static_w" in enc_inits else "upsampled_conv",
            "cls_click": "conv" if "cls_click_w" in dec_inits else "upsampled_conv",
            "logit_diff": "conv" if "logit_diff_w" in dec_inits else "tap_planes"}


def package_layout(manifest: dict, enc_inits: dict, dec_inits: dict) -> dict:
    """The manifest's `export.graph_layout`, checked against what this importer reads; guessed from the
    constants' names (`guess_layout`) only for a package without one."""
    declared = (manifest.get("export") or {}).get("graph_layout")
    if declared is None:
        return guess_layout(enc_inits, dec_inits)
    if not isinstance(declared, dict):
        raise ImportError_(f"export.graph_layout is {declared!r}, not an object")
    unknown = sorted(set(declared) - set(LAYOUTS))
    missing = sorted(set(LAYOUTS) - set(declared))
    if unknown or missing:
        raise ImportError_(f"export.graph_layout: parts {unknown} unknown to this importer, {missing} missing")
    for part, value in declared.items():
        if value not in LAYOUTS[part]:
            raise ImportError_(f"export.graph_layout.{part} is {value!r}; this importer reads {list(LAYOUTS[part])}")
    return dict(declared)


def _need(inits: dict, names, what: str):
    absent = [n for n in names if n not in inits]
    if absent:
        raise ImportError_(f"{what}: the graph has no {', '.join(absent)}")


def _encoder_attention(enc, cfg: Sam3DConfig, layout: dict, inits: dict, linear: dict):
    """q/k/v and projection weights and the relative-position tables of every block."""
    folded = layout["attention"] == "folded"
    for i, blk in enumerate(enc.blocks):
        if folded:
            _attention_folded(blk, i, inits, cfg)
            continue
        try:
            wq, wk, wv = (linear[f"b{x}{i}"] for x in "qkv")
        except KeyError as e:
            raise ImportError_(f"block {i}: no q/k/v projection found ({e})") from None
        _copy(blk.attn.qkv.weight, np.concatenate([wq, wk, wv]), f"blocks.{i}.attn.qkv.weight")
        _copy(blk.attn.qkv.bias, np.concatenate([inits[f"b{x}{i}"] for x in "qkv"]), f"blocks.{i}.attn.qkv.bias")
    t, hd, w3 = cfg.window_tokens, cfg.head_dim, 3 * cfg.window
    per_pos = sorted((n for n, v in inits.items() if v.shape == (t, hd, w3)),
                     key=lambda n: int(re.sub(r"\D", "", n) or 0))
    if len(per_pos) != cfg.depth:
        raise ImportError_(f"found {len(per_pos)} relative-position constants, expected {cfg.depth}")
    for blk, n in zip(enc.blocks, per_pos):
        # folded tables are divided by the softmax scale (they multiply the scaled q)
        _rel_tables(blk, cfg, inits[n] * (blk.attn.scale if folded else 1.0))


def _front_kernel(layout: dict, inits: dict) -> np.ndarray:
    """The folded front-end kernel with axes (D, H, W)."""
    if layout["front_end"] == "conv_hwd":
        _need(inits, ["front_kernel_hwd"], "front end")
        return inits["front_kernel_hwd"].transpose(0, 1, 4, 2, 3)
    _need(inits, ["front_kernel"], "front end")
    return inits["front_kernel"]


def _static_weight(layout: dict, inits: dict, d: int) -> np.ndarray:
    """cls.0's click-independent half (heads 2-4 and the image level) from the encoder graph."""
    if layout["cls_static"] == "conv":
        _need(inits, ["cls_static_w"], "encoder: static half of cls.0")
        return inits["cls_static_w"]
    heads_w = UpsampledConv.weight_from(inits, "heads_conv", d)
    if heads_w is None or "cls_image_w" not in inits:
        raise ImportError_("encoder: no weight for the static half of cls.0 found")
    return np.concatenate([heads_w, inits["cls_image_w"]], 1)


def _click_weight(layout: dict, inits: dict, d: int) -> np.ndarray:
    """cls.0's head5 half (d, d, 3, 3, 3): a conv weight, or `UpsampledConv`'s 1x1 mixing matrices
    (rows o, k1, k2, k0)."""
    if layout["cls_click"] == "conv":
        _need(inits, ["cls_click_w"], "decoder: click half of cls.0")
        return inits["cls_click_w"]
    w = UpsampledConv.weight_from(inits, "click_conv", d)
    if w is None:
        raise ImportError_("decoder: no weight for the click half of cls.0 found")
    return w


def _logit_diff_weight(layout: dict, inits: dict) -> np.ndarray:
    """cls.3's w1 - w0 (1, d, 3, 3, 3): a conv weight, or `SingleOutputConv`'s (27, d) taps."""
    if layout["logit_diff"] == "conv":
        _need(inits, ["logit_diff_w"], "decoder: last conv (cls.3)")
        return inits["logit_diff_w"]
    if "logit_diff.taps" not in inits:
        raise ImportError_("decoder: no weight for the last conv (cls.3) found")
    return inits["logit_diff.taps"].T.reshape(1, -1, 3, 3, 3)


def _plain_parameters(gmod, fname: str, graph, inits: dict) -> dict:
    """Copy the parameters a graph holds as they are (by name, as the weight of a product with a named
    bias, or as an exported LayerNorm3d's constants); returns the product weights by bias name."""
    linear = _linear_weights(graph, inits)
    norms = [(n, mod) for n, mod in gmod.named_modules() if isinstance(mod, LayerNorm3d)
             and f"{n}.weight" not in inits]
    found = _channel_norms(graph, inits)
    if len(found) != len(norms):
        raise ImportError_(f"{fname}: {len(found)} channel norms in the graph, the model has {len(norms)}")
    for (n, mod), (w, b) in zip(norms, found):
        _copy(mod.weight, w, f"{n}.weight")
        _copy(mod.bias, b, f"{n}.bias")
    for name, p in gmod.named_parameters():
        if name in inits:
            _copy(p, inits[name], name)
        elif name.endswith(".weight") and name[:-len("weight")] + "bias" in linear:
            _copy(p, linear[name[:-len("weight")] + "bias"], name)
    return linear


def import_package(pkg_dir: str) -> Sam3D:
    m = read_manifest(pkg_dir)
    if any(v != "fp32" for v in m.get("precision", {}).values()):
        raise ImportError_(f"{pkg_dir}: only fp32 packages can be imported (precision {m['precision']})")
    cfg = Sam3DConfig.from_dict(m["architecture"])
    model = Sam3D(cfg).eval()
    enc_g, dec_g = graphs(model)
    enc, dec = model.encoder, model.decoder
    files = [m["graphs"][k]["file"] for k in ("encoder", "decoder")]
    (enc_graph, enc_inits), (dec_graph, dec_inits) = (_initializers(os.path.join(pkg_dir, f)) for f in files)
    try:
        layout = package_layout(m, enc_inits, dec_inits)
    except ImportError_ as e:
        raise ImportError_(f"{pkg_dir}: {e}") from None

    linear = _plain_parameters(enc_g, files[0], enc_graph, enc_inits)
    _encoder_attention(enc, cfg, layout, enc_inits, linear)
    _front_end(enc, cfg, _front_kernel(layout, enc_inits), enc_inits["front_bias"])
    pos = enc_inits["pos"][:, :, :, 0]                                  # (1, G, G, E)
    r = cfg.pos_pool
    _copy(enc.pos_embed, pos.repeat(r, 1).repeat(r, 2), "pos_embed")
    _copy(enc.depth_embed, enc_inits["depth"][:, 0, 0], "depth_embed")

    _plain_parameters(dec_g, files[1], dec_graph, dec_inits)
    if cfg.point_labels:
        _need(dec_inits, ["label_neg", "label_step"], files[1])
        neg, step = dec_inits["label_neg"], dec_inits["label_step"]
        _copy(model.prompt_encoder.label_embed, np.stack([neg, neg + step]), "prompt_encoder.label_embed")
    d = cfg.decoder_dim
    cls_static = _static_weight(layout, enc_inits, d)
    click = _click_weight(layout, dec_inits, d)
    _copy(dec.cls[0].weight, np.concatenate([cls_static[:, :3 * d], click, cls_static[:, 3 * d:]], 1), "cls.0.weight")
    diff = _logit_diff_weight(layout, dec_inits)
    _copy(dec.cls[3].weight, np.concatenate([np.zeros_like(diff), diff]), "cls.3.weight")
    return model


def check(pkg_dir: str, model: Sam3D, n: int = 8, seed: int = 0) -> float:
    """Max |p_imported - p_package| over `n` random crops and clicks, both as exported graphs under
    ONNX Runtime (`quantize.compare`)."""
    from .package import export_package
    from .quantize import compare

    m = read_manifest(pkg_dir)
    c = m["architecture"]["crop"]
    rng = np.random.default_rng(seed)
    crops = [rng.normal(0.0, 1.0, (1, 1, c, c, c)).astype(np.float32) for _ in range(n)]
    clicks = [rng.uniform(0, c - 1, (1, int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "imported")
        export_package(model, out, name="imported", description="", licence="", provenance="",
                       frame=m["frame"], intensity=m["intensity"], spacing_mm=m["spacing_mm"])
        return compare(pkg_dir, out, crops, clicks)["max_abs"]


def write_resume_folder(pkg_dir: str, model: Sam3D, out: str):
    """`out`/model.pt (+ training.json from the manifest's training record) for train-demo --resume."""
    import json

    m = read_manifest(pkg_dir, verify=False)
    os.makedirs(out, exist_ok=True)
    record = m.get("training")
    steps = steps_done(record) if record else 0
    if record:
        record = {**record, "imported_from": {"package": os.path.abspath(pkg_dir), "name": m["name"],
                                              "sha256": m["graphs"]["encoder"]["sha256"]}}
        with open(os.path.join(out, "training.json"), "w") as f:
            json.dump(record, f, indent=1)
    torch.save({"state_dict": model.state_dict(), "step": steps}, os.path.join(out, "model.pt"))


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("package", help="fp32 model package (folder with sam3d-model.json)")
    ap.add_argument("--out", required=True, help="folder for model.pt (and training.json)")
    ap.add_argument("--check", type=int, default=8, help="random crops to compare under ONNX Runtime (0: none)")
    args = ap.parse_args(argv)
    try:
        model = import_package(args.package)
    except (ImportError_, OSError) as e:
        raise SystemExit(f"error: {e}")
    if args.check:
        worst = check(args.package, model, args.check)
        print(f"max |p_imported - p_package| over {args.check} random crops and clicks: {worst:.2e}")
        if worst > 1e-4:
            raise SystemExit("error: the imported model does not reproduce the package")
    write_resume_folder(args.package, model, args.out)
    print(f"wrote {args.out}")
