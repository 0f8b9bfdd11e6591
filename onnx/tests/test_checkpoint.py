"""Checkpoint import: the official layout (exact keys of the spec), strictness, SAM initialisation."""
import os
import zipfile
from collections import OrderedDict

import numpy as np
import onnxruntime as ort
import pytest
import torch

import make_weights
from conftest import nondegenerate
from sam3d_onnx import cli
from sam3d_onnx.model import checkpoint
from sam3d_onnx.model.checkpoint import CheckpointError
from sam3d_onnx.model.config import PAPER, TINY
from sam3d_onnx.model.network import Sam3D, dhw_to_dwh


def _shapes(sd):
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def test_paper_model_has_exactly_the_official_keys():
    """Key names, order and shapes of our modules == the official state dicts (spec 3.3/3.4)."""
    with torch.device("meta"):
        model = Sam3D(PAPER)
    assert _shapes(model.encoder.state_dict()) == [(k, s) for k, s, _ in make_weights.encoder_spec()]
    assert _shapes(model.prompt_encoder.state_dict()) == [(k, s) for k, s, _ in make_weights.prompt_encoder_spec()]
    assert _shapes(model.decoder.state_dict()) == [(k, s) for k, s, _ in make_weights.decoder_spec()]
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert n_enc == 104_056_588  # spec 2.5
    assert sum(p.numel() for p in model.decoder.parameters()) == 7_088_256
    assert sum(p.numel() for p in model.prompt_encoder.parameters()) == 3_164_160


def _official_file(model, path, root=None):
    torch.save(checkpoint.official_state(model), path)
    if root:  # rewrite the zip's root folder, as torch 1.12 named it after the file (`last.pth/`)
        tmp = str(path) + ".tmp"
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for item in zin.infolist():
                name = root + "/" + item.filename.split("/", 1)[1]
                zout.writestr(name, zin.read(item.filename))
        os.replace(tmp, path)
    return path


def test_official_layout_round_trips_through_the_converter(tmp_path, tiny_model):
    ckpt = _official_file(tiny_model, tmp_path / "best.pth.tar", root="last.pth")
    with zipfile.ZipFile(ckpt) as z:
        assert z.namelist()[0].startswith("last.pth/")
    raw = checkpoint.read_torch_file(str(ckpt))
    assert isinstance(raw["best_val_loss"], np.floating)  # numpy scalar accepted without full pickle
    out = tmp_path / "pkg"
    rc = cli.main(["convert", str(ckpt), "--dataset", "lits", "--out", str(out), "--config", "tiny"])
    assert rc == 0
    manifest = checkpoint_package_manifest(out)
    assert manifest["frame"] == {"mode": "array", "orientation": None, "array_transpose": [2, 1, 0]}
    assert manifest["intensity"]["clip"] == [-48.0, 163.0]
    assert "none stated by the authors" in manifest["licence"]
    enc = ort.InferenceSession(str(out / "encoder.onnx"))
    dec = ort.InferenceSession(str(out / "decoder.onnx"))
    crop = np.random.default_rng(0).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    pts = np.array([[[16, 9, 21], [14, 16, 16]]], np.float32)
    f3, cp = enc.run(["f3", "cls_partial"], {"crop": crop})
    prob, = dec.run(["prob"], {"f3": f3, "cls_partial": cp, "points": pts})
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(crop).repeat(1, 3, 1, 1, 1), dhw_to_dwh(torch.from_numpy(pts)))
    assert np.abs(prob - ref.numpy()).max() <= 1e-4
    nondegenerate(prob)


def checkpoint_package_manifest(path):
    from sam3d_onnx.export.package import read_manifest
    return read_manifest(str(path))


@pytest.mark.parametrize("group,mutate,needle", [
    ("encoder_dict", "rename", "blocks.1.attn.qkv.weight"),
    ("encoder_dict", "reshape", "blocks.2.adapter.conv.weight"),
    ("decoder_dict", "rename", "cls.0.weight"),
    ("feature_dict", "rename", "transformer.layers.1.global_query"),
    ("feature_dict", "reshape", "transformer.layers.0.mlp.lin1.weight"),
    ("encoder_dict", "drop", "blocks.0.attn_mask"),
])
def test_renamed_or_misshaped_key_is_named(tmp_path, tiny_model, group, mutate, needle):
    state = checkpoint.official_state(tiny_model)
    sd = state[group][0] if group == "feature_dict" else state[group]
    if mutate == "rename":
        sd[needle + "_renamed"] = sd.pop(needle)
    elif mutate == "reshape":
        sd[needle] = sd[needle].reshape(-1)[:-1]
    else:
        del sd[needle]
    path = tmp_path / "last.pth.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
        checkpoint.load_official(str(path), TINY)
    # the converter's command line says so and exits 2, writing nothing
    rc = cli.main(["convert", str(path), "--dataset", "kits", "--out", str(tmp_path / "o"), "--config", "tiny"])
    assert rc == 2 and not (tmp_path / "o").exists()


def test_wrong_shift_mask_is_refused(tmp_path, tiny_model):
    state = checkpoint.official_state(tiny_model)
    state["encoder_dict"]["blocks.2.attn_mask"] = torch.zeros_like(state["encoder_dict"]["blocks.2.attn_mask"])
    with pytest.raises(CheckpointError, match="blocks.2.attn_mask differs"):
        checkpoint.load_official_state(state, TINY)


def test_wrong_files_get_clear_errors(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        checkpoint.read_torch_file(str(text))
    trunc = tmp_path / "trunc.pth.tar"
    torch.save({"a": torch.zeros(1000)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="trunc.pth.tar"):
        checkpoint.read_torch_file(str(trunc))
    sam_like = tmp_path / "sam.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, sam_like)
    assert cli.main(["convert", str(sam_like), "--dataset", "kits", "--out", str(tmp_path / "o")]) == 2
    assert "SAM checkpoint" in capsys.readouterr().err
    assert cli.main(["convert", str(tmp_path / "absent.pth"), "--dataset", "kits", "--out", str(tmp_path / "o")]) == 2


def _fake_sam(cfg, seed=0):
    """A SAM-layout state dict (`sam_vit_b_01ec64.pth` keys) with random values, plus parts the 3D
    model must discard (2D neck, prompt encoder, mask decoder)."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict(("image_encoder." + k, torch.randn(s, generator=g))
                     for k, s in checkpoint.sam_encoder_keys(cfg).items())
    sd["image_encoder.neck.0.weight"] = torch.randn(256, cfg.embed_dim, 1, 1, generator=g)
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128, generator=g)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256, generator=g)
    return sd


def test_sam_initialisation(tmp_path):
    sam = _fake_sam(TINY)
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam, path)
    model = checkpoint.init_from_sam(str(path), TINY)
    enc = model.encoder.state_dict()
    for k in checkpoint.sam_encoder_keys(TINY):
        assert torch.equal(enc[k], sam["image_encoder." + k]), k
    for i, blk in enumerate(model.encoder.blocks):
        a = blk.attn
        assert torch.allclose(a.rel_pos_d, 0.5 * (a.rel_pos_h + a.rel_pos_w))
        assert a.lr.item() == 1.0
    assert torch.equal(model.encoder.depth_embed, torch.ones_like(model.encoder.depth_embed))
    # a missing or mis-shaped SAM key is named
    bad = dict(sam)
    bad.pop("image_encoder.blocks.3.mlp.lin2.bias")
    bad["image_encoder.blocks.0.attn.rel_pos_h"] = torch.zeros(7, 16)
    with pytest.raises(CheckpointError, match=r"blocks\.3\.mlp\.lin2\.bias.*blocks\.0\.attn\.rel_pos_h"):
        checkpoint.init_from_sam_state(bad, TINY)


def test_sam_key_list_matches_paper_shapes():
    keys = checkpoint.sam_encoder_keys(PAPER)
    assert keys["pos_embed"] == (1, 64, 64, 768)
    assert keys["blocks.2.attn.rel_pos_h"] == (127, 64) and keys["blocks.1.attn.rel_pos_w"] == (27, 64)
    # SAM ViT-B image encoder without its 2D neck: 88,883,456 parameters (spec 2.5)
    assert sum(int(np.prod(s)) for s in keys.values()) == 88_883_456
