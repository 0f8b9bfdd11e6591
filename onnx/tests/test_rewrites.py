"""The exact rewrites of the export (export/graphs.py) against the straightforward model, in PyTorch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL, nondegenerate
from make_weights import shift_window_mask as official_mask
from sam3d_onnx.export.graphs import (SingleOutputConv, UpsampledConv, fold_attention, folded_attention, folded_front_end,
                                      gather_trilinear, graphs, interp_taps, key_position_onehots, region_onehots)
from sam3d_onnx.model.config import PAPER, TINY
from sam3d_onnx.model.network import Sam3D, dhw_to_dwh, random_init_, shift_window_mask


@pytest.mark.parametrize("upsample,patch", [(4, 16), (2, 8), (1, 4), (4, 8)])
def test_interp_taps_rows_are_partitions_of_unity(upsample, patch):
    a, pad = interp_taps(upsample, patch)
    assert a.shape == (patch, patch // upsample + 2 * pad)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-15)
    assert (a >= 0).all()


@pytest.mark.parametrize("cfg", [TINY, SMALL], ids=["tiny", "small"])
def test_front_end_fold_equals_upsample_patch_slice(cfg):
    torch.manual_seed(1)
    model = random_init_(Sam3D(cfg), seed=5).double()
    crop = torch.randn(1, 1, cfg.crop, cfg.crop, cfg.crop, dtype=torch.float64)
    with torch.no_grad():
        ref = model.encoder.embed(crop.repeat(1, 3, 1, 1, 1)) - model.encoder.pooled_pos()[:, :, :, None] \
            - model.encoder.depth_embed[:, None, None]
        k, b, stride, pad = folded_front_end(model)
        x = F.pad(crop, (pad,) * 6, mode="replicate") if pad else crop
        got = F.conv3d(x, k.double(), b.double(), stride=stride).permute(0, 3, 4, 2, 1)
    # the kernel is computed in float64 and stored in float32
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5 * ref.abs().max().item()


def test_paper_shift_mask_equals_official_generator():
    ours = shift_window_mask(PAPER).numpy()
    np.testing.assert_array_equal(ours, official_mask())
    assert ours.shape == (64, 512, 512) and set(np.unique(ours)) == {0.0, -100.0}


@pytest.mark.parametrize("cfg", [TINY, SMALL, PAPER], ids=["tiny", "small", "paper"])
def test_region_onehots_rebuild_the_shift_mask(cfg):
    """The one-hots folded into q and k give back the official mask (equal one-hots = same region)."""
    r = region_onehots(cfg)
    same = r @ r.transpose(1, 2) > 0.5
    np.testing.assert_array_equal(torch.where(same, 0.0, cfg.mask_value).numpy(), shift_window_mask(cfg).numpy())
    assert r.sum(-1).eq(1).all() and r[-1].sum(0).gt(0).sum() == 8   # the last window holds all 8 regions


@pytest.mark.parametrize("cfg", [TINY, SMALL], ids=["tiny", "small"])
def test_gather_trilinear_equals_grid_sample(cfg):
    g = cfg.grid
    torch.manual_seed(2)
    f = torch.randn(1, 5, g, g, g, dtype=torch.float64)
    c = cfg.crop
    pts = torch.cat([torch.rand(1, 40, 3, dtype=torch.float64) * (c + 8) - 4,          # some outside
                     torch.tensor([[[0, 0, 0], [c - 1, c - 1, c - 1], [c / 2, 0, c - 1]]],
                                  dtype=torch.float64)], 1)
    got = gather_trilinear(f, pts, c)
    grid = (dhw_to_dwh(pts) + 0.5) * 2.0 / c - 1.0
    ref = F.grid_sample(f, grid[:, None, None], mode="bilinear", padding_mode="zeros",
                        align_corners=False)[:, :, 0, 0].transpose(1, 2)
    assert (got - ref).abs().max().item() < 1e-12


@pytest.mark.parametrize("cfg,block", [(TINY, 0), (TINY, 1), (PAPER, 0), (PAPER, 2)],
                         ids=["tiny-shifted", "tiny", "paper-shifted", "paper-global-table"])
def test_folded_attention_equals_decomposed_rel_pos(cfg, block):
    """Relative position and shift mask inside the logits' product (one-hot keys) = the three broadcast
    additions of the decomposed relative position plus the official mask; with the softmax scale in
    q's weights, k's bias dropped and v's moved into the output projection (`fold_attention`)."""
    torch.manual_seed(3 + block)
    attn = random_init_(Sam3D(cfg), seed=7).encoder.blocks[block].attn.double()
    with torch.no_grad():  # unit-size biases: k's is dropped and v's moved by `fold_attention`
        attn.qkv.bias.normal_()
        attn.proj.bias.normal_()
    w, c = cfg.window, cfg.embed_dim
    nw = min(cfg.n_windows, 3)
    x = torch.randn(nw, w, w, w, c, dtype=torch.float64)
    mask = shift_window_mask(cfg)[-nw:].double()     # the last windows hold every region
    regions = region_onehots(cfg)[-nw:].double()
    tables = [r.double() for r in attn.rel_tables(w)]
    for m, r in ((mask, regions), (None, None)):
        with torch.no_grad():
            ref = attn(x, m, tables)
            got = folded_attention(x, r, key_position_onehots(w).double(), fold_attention(attn, tables), attn.heads,
                                   mask_value=cfg.mask_value)
        assert (got - ref).abs().max().item() < 1e-10 * ref.abs().max().item()
    assert key_position_onehots(w).sum(1).eq(3).all()


@pytest.mark.parametrize("which", ["tiny", "small", "tiny-fine"])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_rewritten_graphs_equal_straightforward_model(which, n, tiny_model, small_model, tiny_fine_model):
    model = {"tiny": tiny_model, "small": small_model, "tiny-fine": tiny_fine_model}[which]
    cfg = model.cfg
    torch.manual_seed(10 + n)
    crop = torch.randn(1, 1, cfg.crop, cfg.crop, cfg.crop)
    # clicks in (d, h, w) with h != w, one on the border, sub-voxel values
    pts = torch.tensor([[[cfg.crop / 2, cfg.crop / 3, 2 * cfg.crop / 3], [0.0, cfg.crop - 1, 3.5],
                         [5.25, 7.0, 1.0], [cfg.crop - 1, 0.0, cfg.crop / 2], [9.0, 2.0, 11.0]]])[:, :n]
    enc, dec = graphs(model)
    with torch.no_grad():
        ref = model(crop.repeat(1, 3, 1, 1, 1), dhw_to_dwh(pts))
        got = dec(*enc(crop), pts)
    assert got.shape == ref.shape == (1, cfg.crop, cfg.crop, cfg.crop)
    assert (got - ref).abs().max().item() <= 1e-4
    nondegenerate(ref[0].numpy())


def test_click_order_matters(tiny_model):
    """Guards the (d,h,w) -> (d,w,h) conversion: swapping h and w must change the answer."""
    enc, dec = graphs(tiny_model)
    crop = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        f = enc(crop)
        a = dec(*f, torch.tensor([[[16.0, 4.0, 27.0]]]))
        b = dec(*f, torch.tensor([[[16.0, 27.0, 4.0]]]))
    assert (a - b).abs().max().item() > 1e-3


@pytest.mark.parametrize("g,scale", [(5, 2), (4, 4), (6, 3), (1, 2)])
def test_upsampled_conv_equals_conv_of_upsampling(g, scale):
    """The decoder's click-half rewrite: channel mixing on the coarse grid + per-axis tap matrices equals
    conv3d(trilinear x scale (align_corners=True), w, padding=1), including the zero-padded border."""
    gen = torch.Generator().manual_seed(g * 10 + scale)
    w = torch.randn(6, 5, 3, 3, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(1, 5, g, g, g, generator=gen, dtype=torch.float64)
    want = F.conv3d(F.interpolate(h, scale_factor=scale, mode="trilinear", align_corners=True), w, padding=1)
    for group in (32, 4):                     # one group of output channels; groups of 4 and 2
        conv = UpsampledConv(w, g, scale, group=group)
        got = conv(h)                         # in float64: only rounding could differ
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        # what package_import reads back from a graph's initializers
        inits = {f"c.{k}": v.numpy() for k, v in conv.named_buffers()}
        np.testing.assert_array_equal(UpsampledConv.weight_from(inits, "c", 6), w.numpy())


def test_single_output_conv_equals_conv():
    """The decoder's last conv (one output channel) as 27 tap planes shifted and summed."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(1, 4, 3, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(1, 4, 5, 6, 7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(SingleOutputConv(w)(y), F.conv3d(y, w, padding=1), rtol=0, atol=1e-12)


def test_graphs_at_decoder_scale_1_keep_the_plain_convolutions():
    """decoder_scale 1 (no upsampling before cls.0): the graphs keep plain convs there and still equal the model."""
    model = random_init_(Sam3D(TINY.replace(decoder_scale=1)), seed=5).eval()
    enc, dec = graphs(model)
    assert hasattr(enc, "cls_static_w") and hasattr(dec, "cls_click_w")
    torch.manual_seed(3)
    crop = torch.randn(1, 1, 32, 32, 32)
    pts = torch.tensor([[[16.0, 10.5, 21.0]]])
    with torch.no_grad():
        ref = model(crop.repeat(1, 3, 1, 1, 1), dhw_to_dwh(pts))
        got = dec(*enc(crop), pts)
    assert (got - ref).abs().max().item() <= 1e-4
