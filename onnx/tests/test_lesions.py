"""Synthetic lesions: seeded, inside the organ, 8-40 mm, low contrast within the paper's range."""
import numpy as np
import pytest

from sam3d_onnx.training.lesions import gaussian_blur, insert_lesion


def _phantom():
    """A soft-tissue 'organ' (ellipsoid at 50 HU with noise) in fat (-100 HU), 1.5 x 1 x 2 mm voxels."""
    rng = np.random.default_rng(7)
    d, h, w = np.mgrid[:48, :64, :56]
    organ = ((d - 24) / 18.0) ** 2 + ((h - 32) / 26.0) ** 2 + ((w - 28) / 22.0) ** 2 <= 1
    img = np.where(organ, 50.0, -100.0) + rng.normal(0, 8, organ.shape)
    return img.astype(np.float32), organ, (1.5, 1.0, 2.0)


def test_blur_preserves_mean_and_smooths():
    x = np.random.default_rng(0).normal(size=(20, 24, 28)).astype(np.float32)
    y = gaussian_blur(x, (1.0, 2.0, 1.5))
    assert y.shape == x.shape
    assert abs(y.mean() - x.mean()) < 0.05 and y.std() < 0.5 * x.std()


@pytest.mark.parametrize("seed", range(8))
def test_lesions_are_inside_sized_and_low_contrast(seed):
    img, organ, sp = _phantom()
    out, lesion, info = insert_lesion(img, organ, sp, np.random.default_rng(seed))
    assert lesion.any() and (lesion <= organ).all()
    assert 8.0 <= info.diameter_mm <= 40.0 and 15.0 <= abs(info.contrast_hu) <= 60.0
    assert 0.25 * info.diameter_mm <= info.equivalent_diameter_mm <= info.diameter_mm
    # extent in mm along each axis never exceeds the drawn diameter by more than the surface noise
    idx = np.argwhere(lesion)
    extent = (idx.max(0) - idx.min(0) + 1) * np.asarray(sp)
    assert extent.max() <= 1.6 * info.diameter_mm + 2 * max(sp)
    # the measured contrast (lesion core vs the untouched organ) has the drawn sign and size
    core = gaussian_blur(lesion.astype(np.float32), 1.0) > 0.95
    if core.sum() > 20:
        measured = out[core].mean() - img[organ & ~lesion].mean()
        assert abs(measured - info.contrast_hu) < 12.0, (measured, info)
    # far from the lesion nothing changes
    far = gaussian_blur(lesion.astype(np.float32), 4.0) == 0
    assert np.array_equal(out[far], img[far])


def test_same_seed_same_lesion_other_seed_other_lesion():
    img, organ, sp = _phantom()
    a = insert_lesion(img, organ, sp, np.random.default_rng(1))
    b = insert_lesion(img, organ, sp, np.random.default_rng(1))
    c = insert_lesion(img, organ, sp, np.random.default_rng(2))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_empty_organ_is_refused():
    img, organ, sp = _phantom()
    with pytest.raises(ValueError, match="empty"):
        insert_lesion(img, np.zeros_like(organ), sp, np.random.default_rng(0))


def test_training_samples_hold_the_lesion_at_model_spacing():
    from sam3d_onnx.training.dataset import ORGANS, make_sample, to_model_grid

    img, organ, sp = _phantom()
    labels = np.where(organ, ORGANS["liver"], 0).astype(np.int16)
    s1 = make_sample(img, labels, sp, np.random.default_rng(3), crop=32, target_spacing=(2.0, 2.0, 2.0))
    s2 = make_sample(img, labels, sp, np.random.default_rng(3), crop=32, target_spacing=(2.0, 2.0, 2.0))
    assert s1.organ == "liver" and s1.crop.shape == (32, 32, 32) and s1.label.shape == (32, 32, 32)
    assert np.array_equal(s1.crop, s2.crop) and np.array_equal(s1.label, s2.label)
    assert s1.label.sum() > 0
    # the lesion's volume survives resampling (nearest on the label) within 25 %
    vol_native = s1.lesion.voxels * np.prod(sp)
    assert abs(s1.label.sum() * 8.0 - vol_native) <= 0.25 * vol_native + 16
    # normalised intensities: the window maps to [(-160-40)/80, (240-40)/80]
    assert s1.crop.min() >= -2.5 - 1e-6 and s1.crop.max() <= 2.5 + 1e-6
    # resampling keeps the physical size: 48 x 64 x 56 voxels of 1.5 x 1 x 2 mm at 2 mm
    im2, lab2 = to_model_grid(img, organ.astype(np.uint8), sp, (2.0, 2.0, 2.0))
    assert im2.shape == (36, 32, 56)
    with pytest.raises(ValueError, match="none of the organs"):
        make_sample(img, np.zeros_like(labels), sp, np.random.default_rng(0), crop=32)


def test_a_given_centre_keeps_the_other_draws():
    img, organ, sp = _phantom()
    free = insert_lesion(img, organ, sp, np.random.default_rng(5))[2]
    out, lesion, fixed = insert_lesion(img, organ, sp, np.random.default_rng(5), centre=(20, 30, 25))
    assert fixed.centre_vox == (20, 30, 25) and lesion[20, 30, 25]
    assert (fixed.diameter_mm, fixed.contrast_hu) == (free.diameter_mm, free.contrast_hu)


@pytest.mark.parametrize("seed", range(4))
def test_fine_samples_draw_the_lesion_finer_than_the_ct(seed):
    """make_sample_fine on a 3 mm CT: the lesion is drawn on a 1 mm box and its model-grid label is
    the fraction of lesion >= 0.5, so the label's volume matches the drawn lesion's; the crop shows
    the lesion where the label is (contrast of the drawn sign against the organ around it)."""
    from sam3d_onnx.training.dataset import ORGANS, make_sample_fine

    rng0 = np.random.default_rng(11)
    d, h, w = np.mgrid[:40, :40, :40]
    organ = ((d - 20) / 15.0) ** 2 + ((h - 20) / 14.0) ** 2 + ((w - 20) / 16.0) ** 2 <= 1
    img = (np.where(organ, 50.0, -100.0) + rng0.normal(0, 3, organ.shape)).astype(np.float32)
    labels = np.where(organ, ORGANS["spleen"], 0).astype(np.uint8)
    kw = dict(crop=32, target_spacing=(2.0, 2.0, 2.0), fine_spacing=(1.0, 1.0, 1.0), jitter=0.1)
    s = make_sample_fine(img, labels, (3.0,) * 3, np.random.default_rng(seed), **kw)
    again = make_sample_fine(img, labels, (3.0,) * 3, np.random.default_rng(seed), **kw)
    assert np.array_equal(s.crop, again.crop) and np.array_equal(s.label, again.label)
    assert s.organ == "spleen" and s.crop.shape == s.label.shape == (32, 32, 32)
    drawn_mm3 = s.lesion.voxels * 1.0               # voxels of the 1 mm box
    assert abs(s.label.sum() * 8.0 - drawn_mm3) <= 0.2 * drawn_mm3 + 24, (s.label.sum(), s.lesion)
    lab = s.label.astype(bool)
    ring = (gaussian_blur(lab.astype(np.float32), 1.5) > 0.02) & ~lab & (s.crop > -1.0)  # organ side
    core = gaussian_blur(lab.astype(np.float32), 0.7) > 0.9
    if core.sum() > 8 and ring.sum() > 8:
        measured = (s.crop[core].mean() - s.crop[ring].mean()) * 80.0
        assert np.sign(measured) == np.sign(s.lesion.contrast_hu) and abs(measured) > 5.0, (measured, s.lesion)


@pytest.mark.parametrize("phase", ["arterial", "portal-venous", "delayed"])
def test_contrast_phases_raise_each_structure_within_its_phase_range(phase):
    """phases.enhance: every labelled group gains one increment from its phase's range (checked in the
    group's interior, away from the 0.7-voxel edge blur); unlabelled tissue and bone stay as they were."""
    from sam3d_onnx.training import phases

    rng0 = np.random.default_rng(2)
    labels = np.zeros((30, 40, 50), np.uint8)
    blocks = {52: (slice(2, 12), slice(2, 12), slice(2, 12)), 5: (slice(2, 14), slice(20, 36), slice(2, 20)),
              7: (slice(16, 28), slice(2, 14), slice(25, 45)), 2: (slice(16, 28), slice(20, 36), slice(2, 14)),
              25: (slice(16, 28), slice(20, 36), slice(30, 48))}   # 25: sacrum, never enhanced
    for lab, sl in blocks.items():
        labels[sl] = lab
    vol = rng0.normal(40.0, 10.0, labels.shape).astype(np.float32)
    out = phases.enhance(vol, labels, np.random.default_rng(9), phase)
    ranges = {ids: r for ids, r in phases.PHASES[phase].items()}
    for lab in blocks:
        core = np.zeros(labels.shape, bool)
        core[tuple(slice(s.start + 3, s.stop - 3) for s in blocks[lab])] = True
        inc = out[core] - vol[core]
        assert inc.std() < 1e-3, lab                                # one increment per structure
        lo, hi = next((r for ids, r in ranges.items() if lab in ids), (0.0, 0.0))
        assert lo - 1e-3 <= inc.mean() <= hi + 1e-3, (lab, inc.mean(), lo, hi)
    far = gaussian_blur((labels > 0).astype(np.float32), 1.0) == 0      # 3 voxels from every structure
    assert np.abs(out[far] - vol[far]).max() < 1e-3


def test_contrast_phases_keep_the_lesion_draws_of_the_sample():
    """training.demo.training_sample with contrast phases: the same lesion (its own stream), another image."""
    from sam3d_onnx.training import demo
    from sam3d_onnx.training.dataset import ORGANS

    rng0 = np.random.default_rng(4)
    d, h, w = np.mgrid[:40, :40, :40]
    organ = ((d - 20) / 15.0) ** 2 + ((h - 20) / 14.0) ** 2 + ((w - 20) / 16.0) ** 2 <= 1
    img = (np.where(organ, 50.0, -100.0) + rng0.normal(0, 3, organ.shape)).astype(np.float32)
    labels = np.where(organ, ORGANS["liver"], 0).astype(np.uint8)
    changed = 0
    for i in range(6):
        plain, lab, _ = demo.training_sample(img, labels, (3.0,) * 3, i)
        phased, lab2, _ = demo.training_sample(img, labels, (3.0,) * 3, i, contrast=True)
        assert np.array_equal(lab, lab2)
        changed += not np.array_equal(plain, phased)
    assert changed >= 2                                              # CONTRAST_P of 0.7 over 6 samples


@pytest.mark.parametrize("seed", range(4))
def test_a_bowel_lesion_is_a_soft_tissue_mass_not_gas(seed):
    """A bowel label holds its lumen's gas: the lesion's contrast is against the wall's soft tissue and
    the mass fills the gas it covers (before the fix, such lesions sat at -700 to -900 HU)."""
    from sam3d_onnx.training.lesions import tissue_level

    rng0 = np.random.default_rng(seed)
    d, h, w = np.mgrid[:40, :48, :48]
    r = np.hypot(h - 24.0, w - 24.0)
    bowel = r <= 16                                                   # the label: wall and lumen
    img = np.where(r <= 12, -950.0, np.where(bowel, 40.0, -100.0)) + rng0.normal(0, 5, bowel.shape)
    img = img.astype(np.float32)
    out, lesion, info = insert_lesion(img, bowel, (2.0, 1.0, 1.0), np.random.default_rng(seed))
    core = gaussian_blur(lesion.astype(np.float32), 1.0) > 0.95
    assert core.sum() >= 5
    assert abs(out[core].mean() - (40.0 + info.contrast_hu)) < 15.0, (out[core].mean(), info)
    assert (img[core] < -500).any()                                   # it does cover lumen
    # the level: a solid organ's plain median; a hollow one's wall; no tissue at all: soft tissue
    assert tissue_level(np.array([10.0, 20.0, -150.0]), np.array([0.0])) == 10.0
    assert tissue_level(np.array([-900.0, 45.0, 35.0, -120.0]), np.array([0.0])) == 40.0
    assert tissue_level(np.array([-900.0, -950.0]), np.array([-900.0, 30.0])) == 30.0
    assert tissue_level(np.array([]), np.array([-999.0])) == 40.0
