"""The demo model's pieces: the 2D pretraining stand-in for SAM, the evaluation's click rules, Dice and
region-growing baseline, the demo sample and the shipped demo package."""
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from sam3d_onnx.evaluation import measures, region_growing
from sam3d_onnx.export.package import read_manifest
from sam3d_onnx.model import checkpoint
from sam3d_onnx.model.config import TINY, Sam3DConfig
from sam3d_onnx.training import pretrain2d
from sam3d_onnx.training.demo import model_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_PKG = os.path.join(REPO, "models", "demo-lesion")
SAMPLE = os.path.join(REPO, "examples", "data")


def _labelled_volume(seed=0, shape=(12, 40, 40)):
    """Two 'organs' (labels 1 and 2) of different intensity in background noise."""
    rng = np.random.default_rng(seed)
    d, h, w = np.mgrid[:shape[0], :shape[1], :shape[2]]
    lab = np.zeros(shape, np.uint8)
    lab[((h - 14) ** 2 + (w - 14) ** 2) < 64] = 1
    lab[((h - 28) ** 2 + (w - 26) ** 2) < 49] = 2
    vol = np.choose(lab, [-1.0, 0.5, 1.5]).astype(np.float32) + rng.normal(0, 0.2, shape).astype(np.float32)
    return vol, lab


def test_vit2d_has_sams_layout_and_maps_to_3d():
    vit = pretrain2d.ViT2d(TINY, classes=3)
    state = vit.sam_state()
    want = checkpoint.sam_encoder_keys(TINY)
    assert {k[len("image_encoder."):] for k in state} == set(want)
    assert all(tuple(state["image_encoder." + k].shape) == v for k, v in want.items())
    model = checkpoint.init_from_sam_state(state, TINY)
    for k in want:
        assert torch.equal(model.encoder.state_dict()[k], state["image_encoder." + k]), k


def test_pretraining_learns_the_slice_labels():
    vol, lab = _labelled_volume()
    rng = np.random.default_rng(1)
    x, y = pretrain2d.slice_batch(vol, lab, rng, TINY, 4, 3)
    s = TINY.sam_grid * TINY.patch
    assert x.shape == (4, 3, s, s) and y.shape == (4, TINY.sam_grid, TINY.sam_grid, 3)
    np.testing.assert_allclose(y.sum(-1).numpy(), 1.0, atol=1e-6)
    before = pretrain2d.ViT2d(TINY, 3)
    torch.manual_seed(0)
    model = pretrain2d.pretrain(TINY, vol, lab, steps=60, batch=8, lr=2e-3)

    def loss(m):
        xb, yb = pretrain2d.slice_batch(vol, lab, np.random.default_rng(9), TINY, 8, 3)
        with torch.no_grad():
            return float(-(yb * m(xb).log_softmax(-1)).sum(-1).mean())
    assert loss(model) < 0.7 * loss(before.eval())


def test_edt_click_is_the_deepest_voxel_in_mm():
    # an anisotropic box: deepest in mm is the centre along the long axis, not in voxels
    mask = np.zeros((30, 12, 9), np.uint8)
    mask[2:27, 2:10, 1:8] = 1
    sp = (0.5, 1.0, 3.0)
    c = measures.edt_click(mask, sp)
    # brute force: the distance (mm) from each voxel to the nearest background voxel
    fg, bg = np.argwhere(mask > 0), np.argwhere(mask == 0)
    bgp = np.vstack([bg, [[-1, 5, 4], [30, 5, 4], [15, -1, 4], [15, 12, 4], [15, 5, -1], [15, 5, 9]]])
    d = np.array([np.min(np.linalg.norm((bgp - p) * sp, axis=1)) for p in fg])
    assert d[np.all(fg == c, axis=1)][0] >= d.max() - 1e-6


def test_dice_and_region_growing():
    a = np.zeros((10, 10, 10), np.uint8)
    b = a.copy()
    a[2:6, 2:6, 2:6] = 1
    b[3:7, 2:6, 2:6] = 1
    assert measures.dice(a, b) == pytest.approx(2 * 48 / 128)
    assert measures.dice(a * 0, b * 0) == 1.0
    img = np.where(a > 0, 60.0, 0.0).astype(np.float32)
    img[8, 8, 8] = 60.0   # same intensity, not connected: must not be grown into
    grown = region_growing.region_grow(img, (1.0, 1.0, 1.0), (3, 3, 3), tol=10.0, sigma_mm=0.0, radius_mm=np.inf)
    np.testing.assert_array_equal(grown, a)
    small = region_growing.region_grow(img, (1.0, 1.0, 1.0), (3, 3, 3), tol=10.0, sigma_mm=0.0, radius_mm=1.0)
    assert small.sum() == 7   # the click and its 6 face neighbours


def test_read_ijk_matches_nibabel(tmp_path):
    t = np.deg2rad(10.0)   # oblique, LAS-like storage, anisotropic voxels
    rot = np.array([[-np.cos(t), -np.sin(t), 0], [-np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot * [0.9, 1.1, 2.5]
    aff[:3, 3] = [20.0, -5.0, 7.0]
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    p = tmp_path / "v.nii.gz"
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(p))
    got, affine, sp = measures.read_ijk(str(p))
    np.testing.assert_array_equal(got, arr)
    np.testing.assert_allclose(affine, nib.load(str(p)).affine, atol=1e-4)


def test_demo_sample_is_consistent():
    meta = json.load(open(os.path.join(SAMPLE, "sample_ct_lesion.json")))
    img = nib.load(os.path.join(SAMPLE, "sample_ct_lesion.nii.gz"))
    truth = nib.load(os.path.join(SAMPLE, "sample_ct_lesion_truth.nii.gz"))
    np.testing.assert_allclose(img.affine, truth.affine)
    t = np.asarray(truth.dataobj)
    assert int(t.sum()) == meta["lesion_voxels"] and t[tuple(meta["click_ijk"])] == 1
    sp = img.header.get_zooms()
    np.testing.assert_array_equal(measures.edt_click(t, sp), meta["click_ijk"])


def _size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def test_demo_package_is_small_licensed_and_intact():
    m = read_manifest(DEMO_PKG, verify=True)
    # every weight file in the repository: the demo packages and the test fixtures, 32 MB at most
    fixtures = os.path.join(REPO, "tests", "fixtures", "models")
    total = sum(_size(os.path.join(REPO, "models", p)) for p in os.listdir(os.path.join(REPO, "models"))
                if os.path.isdir(os.path.join(REPO, "models", p)))
    total += sum(_size(os.path.join(fixtures, p)) for p in os.listdir(fixtures)
                 if os.path.isdir(os.path.join(fixtures, p)))
    assert total <= 32 << 20, total
    assert m["licence"].startswith("Apache-2.0") and "pretrain" in m["provenance"]
    # DEMO, with the decoder scale its training record names (manifests before the field: the default)
    assert Sam3DConfig.from_dict(m["architecture"]) == model_config(m["training"])
    assert m["training"]["adaptation"]["loss_last100"] < m["training"]["adaptation"]["loss_first100"]
    # the recipe: the shipped model's trainable share is the adaptation's parts only
    counts = m["training"]["trainable"]
    assert counts["encoder.frozen"] > 0 and "decoder.frozen" not in counts


def test_interactive_package_continues_the_demo_with_click_labels():
    """`models/demo-lesion-interactive`: the demo's training record plus a last stage with negative
    clicks; the extended architecture, a decoder that takes labels, negative clicks declared."""
    pkg = os.path.join(REPO, "models", "demo-lesion-interactive")
    m = read_manifest(pkg, verify=True)
    demo = read_manifest(DEMO_PKG, verify=False)
    assert m["licence"].startswith("Apache-2.0")
    cfg = Sam3DConfig.from_dict(m["architecture"])
    assert cfg.point_labels and cfg == model_config(m["training"])
    assert cfg.replace(point_labels=False) == Sam3DConfig.from_dict(demo["architecture"])
    assert m["prompts"]["negative_points"] and not demo["prompts"]["negative_points"]
    assert [i["name"] for i in m["graphs"]["decoder"]["inputs"]][-1] == "labels"
    # the demo's own stages, then the stages with negative clicks
    k = len(demo["training"]["continued"])
    assert m["training"]["continued"][:k] == demo["training"]["continued"]
    extra = m["training"]["continued"][k:]
    assert extra and all(c["negative_clicks"] for c in extra)
    assert extra[-1]["loss_last100"] < extra[0]["loss_first100"]


def test_scanner_augmentation_ends_the_scan_around_the_click():
    from sam3d_onnx.training.demo import scanner_augment
    c = 32
    crop = np.full((c, c, c), 0.7, np.float32)
    label = np.zeros((c, c, c), np.uint8)
    label[12:20, 12:20, 12:20] = 1
    cut = 0
    for seed in range(40):
        out, lab = scanner_augment(crop, label, np.random.default_rng(seed))
        assert out.shape == crop.shape and lab.shape == label.shape
        assert lab[c // 2, c // 2, c // 2] == 1                      # the click's voxel is kept
        assert not (lab > label).any()                               # labels only removed
        if (lab < label).any() or (out == 0).any():
            cut += 1
            # what was cut is pad value and background, whole planes of one axis
            zero = (out == 0.0)
            assert (lab[zero] == 0).all()
    assert 5 <= cut <= 30


def test_contrast_phase_augmentation_moves_tissue_within_the_window():
    from sam3d_onnx.training.demo import INTENSITY, phase_augment
    rng = np.random.default_rng(0)
    crop = rng.normal(0.1, 0.3, (16, 16, 16)).astype(np.float32)    # soft tissue around 48 HU
    lo = (INTENSITY["clip"][0] - INTENSITY["mean"]) / INTENSITY["std"]
    hi = (INTENSITY["clip"][1] - INTENSITY["mean"]) / INTENSITY["std"]
    shifts = []
    for seed in range(60):
        out = phase_augment(crop, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.float32
        assert out.min() >= lo and out.max() <= hi                   # stays inside the CT window
        shifts.append(float(np.median(out) - np.median(crop)) * INTENSITY["std"])   # HU
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 60.0 + 1.0                        # at most +-60 HU
    assert (np.abs(shifts) > 20.0).sum() >= 15                       # most draws move it visibly
    assert (np.abs(shifts) < 1e-3).sum() >= 3                        # p 0.2: some keep the phase


def test_training_clicks_mix_and_one_click():
    """clicks_for: the paper's draw (10 lesion + 20 random voxels) or 1-3 lesion voxels; with
    one_click always exactly one lesion voxel."""
    from sam3d_onnx.training.demo import clicks_for
    label = np.zeros((32, 32, 32), np.uint8)
    label[10:14, 20:23, 5:9] = 1
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(40):
        c = clicks_for(label, rng)
        sizes.add(len(c))
        one = clicks_for(label, rng, one_click=True)
        assert one.shape == (1, 3) and label[tuple(one[0].astype(int))] == 1
    assert 30 in sizes and sizes - {30} and max(sizes - {30}) <= 3
