"""The training recipe: exactly the intended parameters change; counts match the paper's code."""
import numpy as np
import torch

from sam3d_onnx.model import checkpoint
from sam3d_onnx.model.config import PAPER, TINY
from sam3d_onnx.model.network import Sam3D
from sam3d_onnx.training import recipe
from test_checkpoint import _fake_sam


def test_paper_trainable_counts_match_the_official_script():
    with torch.device("meta"):
        model = Sam3D(PAPER)
    n = {}
    for name, p in model.named_parameters():
        if recipe.is_trainable(name):
            part = name.split(".")[0]
            n[part] = n.get(part, 0) + p.numel()
    # spec 2.5: encoder 15,209,984 trained; decoder 7,088,256; the applied prompt encoder in full
    assert n["encoder"] == 15_209_984
    assert n["decoder"] == 7_088_256
    assert n["prompt_encoder"] == 3_164_160


def _blob_sample(c, seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:c, :c, :c]
    centre = rng.uniform(c * 0.3, c * 0.7, 3)
    label = (((z - centre[0]) / 5) ** 2 + ((y - centre[1]) / 4) ** 2 + ((x - centre[2]) / 6) ** 2 <= 1).astype(np.uint8)
    crop = (rng.normal(0, 0.3, (c, c, c)) + 1.5 * label).astype(np.float32)
    return crop, label


def test_a_few_steps_change_exactly_the_intended_parameters():
    model = checkpoint.init_from_sam_state(_fake_sam(TINY), TINY)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    losses = recipe.train(model, [_blob_sample(TINY.crop, s) for s in range(2)], steps=4, seed=1, shift=0.25)
    assert len(losses) == 4 and all(np.isfinite(losses))
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    intended = {k for k, _ in model.named_parameters() if recipe.is_trainable(k)}
    # the prompt encoder's cross_attn_token_to_image is never called by the paper's forward: no gradient
    never_used = {k for k in intended if ".cross_attn_token_to_image." in k}
    assert changed == intended - never_used, (sorted(changed ^ (intended - never_used))[:10])
    # SAM's 2D weights are untouched
    for k in checkpoint.sam_encoder_keys(TINY):
        if not recipe.is_trainable("encoder." + k):
            assert torch.equal(model.encoder.state_dict()[k], before["encoder." + k]), k
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert model.encoder.blocks[0].attn.lr.item() == 1.0


def test_training_clicks_and_augmentation():
    rng = np.random.default_rng(0)
    crop, label = _blob_sample(24, 3)
    pts = recipe.training_clicks(label, rng)
    assert pts.shape == (30, 3)
    fg = pts[:10].astype(int)
    assert label[fg[:, 0], fg[:, 1], fg[:, 2]].all()
    assert (pts >= 0).all() and (pts < 24).all()
    c2, l2 = recipe.augment(crop, label, rng, shift=0.0)
    assert c2.shape == crop.shape and l2.sum() == label.sum()
    # geometry is applied to image and label alike: the blob stays where the bright voxels are
    assert c2[l2 > 0].mean() > c2[l2 == 0].mean() + 1.0


def test_finetune_from_a_sam_checkpoint_and_a_dataset_folder(tmp_path):
    """The generic trainer: SAM checkpoint + MSD-layout folder -> official-layout checkpoint in which
    exactly the recipe's parameters moved away from their SAM initialisation."""
    import nibabel as nib
    from sam3d_onnx.training import finetune

    sam = _fake_sam(TINY)
    torch.save(sam, tmp_path / "sam.pth")
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        crop, label = _blob_sample(36, i)
        aff = np.diag([1.5, 1.5, 1.5, 1.0])
        nib.save(nib.Nifti1Image((crop * 50).astype(np.float32), aff), tmp_path / "data" / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image((label * 2).astype(np.uint8), aff), tmp_path / "data" / "labelsTr" / f"case{i}.nii.gz")
    losses = finetune.main(["--sam", str(tmp_path / "sam.pth"), "--data", str(tmp_path / "data"), "--dataset", "kits",
                            "--config", "tiny", "--steps", "3", "--out", str(tmp_path / "run"), "--log-every", "1"])
    assert len(losses) == 3 and all(np.isfinite(losses))
    trained = checkpoint.load_official(str(tmp_path / "run" / "last.pth.tar"), TINY)
    start = checkpoint.init_from_sam_state(sam, TINY, seed=0)
    start_params = dict(start.named_parameters())
    changed = {k for k, v in trained.named_parameters() if not torch.equal(v, start_params[k])}
    intended = {k for k, _ in trained.named_parameters() if recipe.is_trainable(k)}
    never_used = {k for k in intended if ".cross_attn_token_to_image." in k}
    assert changed == intended - never_used


def test_correction_clicks_follow_the_largest_error_region():
    """The iterative protocol's next click: positive inside the largest false-negative region, negative
    inside the largest false-positive one, None for an exact prediction."""
    rng = np.random.default_rng(0)
    label = np.zeros((16, 16, 16), np.uint8)
    label[2:10, 2:10, 2:10] = 1
    pred = np.zeros_like(label, dtype=bool)
    pred[2:10, 2:10, 2:5] = True                 # misses a 8x8x5 slab of the lesion
    pred[12:14, 12:14, 12:14] = True             # a small false positive
    for _ in range(6):
        (d, h, w), positive = recipe.correction_click(pred, label, rng)
        assert positive and label[d, h, w] == 1 and not pred[d, h, w]
    pred = label.astype(bool).copy()
    pred[11:16, 0:16, 0:16] = True               # a large false positive now
    (d, h, w), positive = recipe.correction_click(pred, label, rng)
    assert not positive and label[d, h, w] == 0 and pred[d, h, w]
    assert recipe.correction_click(label.astype(bool), label, rng) is None


def test_an_interactive_step_trains_the_label_embedding():
    cfg = TINY.replace(point_labels=True)
    model = checkpoint.init_from_sam_state(_fake_sam(cfg), cfg)
    recipe.freeze_for_adaptation(model)
    opt, sched = recipe.make_optimizer(model, 3)
    before = model.prompt_encoder.label_embed.detach().clone()
    assert torch.count_nonzero(before) == 0       # zero: the extended model starts as the paper's
    crop, label = _blob_sample(cfg.crop, 0)
    rng = np.random.default_rng(1)
    first = recipe.training_clicks(label, rng, n_fg=1, n_random=0)
    for _ in range(3):
        loss = recipe.train_step_interactive(model, opt, sched, crop, label, first, rng, rounds=2)
        assert np.isfinite(loss)
    assert not torch.equal(model.prompt_encoder.label_embed.detach(), before)
