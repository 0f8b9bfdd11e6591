"""Prompts beyond one positive click, through the engine's `segment` command, against the reference
pipeline (`sam3d_onnx.evaluation.reference_pipeline`): negative clicks on a package whose decoder takes
labels, box prompts at the zoom that fits them, zoom-out on the demo model and the sample."""
import json
import os
import re

import nibabel as nib
import numpy as np

from test_engine import CT, DEMO, MODELS, SAMPLE, segment
from sam3d_onnx.evaluation.reference_pipeline import Pipeline


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.get_fdata(dtype=np.float32)), img.affine


def _differ(a, b):
    return int((np.asarray(a).astype(bool) ^ np.asarray(b).astype(bool)).sum())


def test_negative_clicks_equal_the_reference_and_are_refused_where_untrained(tmp_path):
    # the second click lies beyond the first region's reuse margin: both place the crop alike
    clicks = [(60.3, 50.0, 56.7), (74.0, 50.0, 56.7)]
    arr, affine = _load(CT)
    pipe = Pipeline(os.path.join(MODELS, "tiny-labels"))
    out = tmp_path / "neg.nii.gz"
    cmd_clicks = [clicks[0]]
    r = segment("tiny-labels", CT, cmd_clicks, out, extra=["--click", "74.0,50.0,56.7,-"])
    assert r.returncode == 0, r.stderr
    got = np.asarray(nib.load(str(out)).dataobj)
    ref = pipe.segment_array(arr, affine, clicks, labels=[1, 0])
    pos = pipe.segment_array(arr, affine, clicks, labels=[1, 1])
    n = int(ref.sum())
    assert 100 < n < 0.5 * ref.size
    assert _differ(got, ref) <= max(2, n // 2000)
    # the label reaches the decoder: the same points, both positive, give another mask
    assert _differ(ref, pos) > 10 * max(2, n // 2000)
    # a package trained without labels refuses the negative click with its own status
    r = segment("tiny-orient", CT, cmd_clicks, tmp_path / "x.nii.gz", extra=["--click", "74.0,50.0,56.7,-"])
    assert r.returncode == 1
    assert "SAM3D_STATUS_UNSUPPORTED" in r.stderr and "positive clicks" in r.stderr
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_box_equals_the_reference_at_its_zoom_clipped_to_the_box(tmp_path):
    """A box larger than the crop's view: the engine resamples at the zoom it reports; the reference
    pipeline at that zoom, clicked at the box's centre and clipped to the box, gives the same mask."""
    lo, hi = np.array([40.0, 30.0, 35.0]), np.array([80.0, 72.0, 78.0])
    arr, affine = _load(CT)
    out = tmp_path / "box.nii.gz"
    box = ",".join(f"{v:.6f}" for v in [*lo, *hi])
    r = segment("tiny-orient", CT, [], out, extra=["--box", box])
    assert r.returncode == 0, r.stderr
    zoom = float(re.search(r"zoom\s+([0-9.eE+-]+)x", r.stdout).group(1))
    assert zoom > 1.0
    got = np.asarray(nib.load(str(out)).dataobj)
    pipe = Pipeline(os.path.join(MODELS, "tiny-orient"), keep_clicked_components=False)
    centre = (lo + hi) / 2.0
    ref = pipe.segment_array(arr, affine, [centre], zoom=zoom)
    clip = np.zeros_like(ref)
    a, b = np.ceil(lo).astype(int), np.floor(hi).astype(int) + 1
    clip[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = 1
    ref = ref * clip
    n = int(ref.sum())
    assert 100 < n, n
    assert _differ(got, ref) <= max(2, n // 2000)
    assert not (got.astype(bool) & ~clip.astype(bool)).any()
    # at the package's own spacing the box's answer would differ: the zoom is what the engine used
    plain = pipe.segment_array(arr, affine, [centre]) * clip
    assert _differ(plain, ref) > 10 * max(2, n // 2000)


def test_zoom_out_leaves_the_demo_sample_as_it_was(tmp_path):
    """The sample's 20 mm lesion fits the demo's crop: with zoom-out on (the default) the package's
    spacing answers and the mask is the reference pipeline's, as with zoom-out off."""
    meta = json.load(open(SAMPLE + ".json"))
    on, off = tmp_path / "on.nii.gz", tmp_path / "off.nii.gz"
    r_on = segment(DEMO, SAMPLE + ".nii.gz", [meta["click_ijk"]], on, extra=["--zoom-out", "4"])
    r_off = segment(DEMO, SAMPLE + ".nii.gz", [meta["click_ijk"]], off, extra=["--zoom-out", "1"])
    assert r_on.returncode == 0 and r_off.returncode == 0, r_on.stderr + r_off.stderr
    assert "zoom         1x" in r_on.stdout, r_on.stdout
    m_on, m_off = (np.asarray(nib.load(str(p)).dataobj) for p in (on, off))
    assert np.array_equal(m_on, m_off) and int(m_on.sum()) > 100


def test_a_starting_segment_round_trips_and_clicks_add_to_it(tmp_path):
    """--init-mask: alone, the written mask is the segment (any non-zero value inside); with a
    positive click, the segment is kept and the reference pipeline's answer is added to it."""
    arr, affine = _load(CT)
    seg = np.zeros(arr.shape, np.int16)
    seg[10:20, 15:25, 20:30] = 7
    p = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(seg, affine), str(p))
    out = tmp_path / "m.nii.gz"
    r = segment("tiny-orient", CT, [], out, extra=["--init-mask", str(p)])
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), (seg != 0).astype(np.uint8))
    click = (60.3, 50.0, 56.7)
    r = segment("tiny-orient", CT, [click], out, extra=["--init-mask", str(p)])
    assert r.returncode == 0, r.stderr
    got = np.asarray(nib.load(str(out)).dataobj)
    ref = Pipeline(os.path.join(MODELS, "tiny-orient")).segment_array(arr, affine, [click])
    want = ((seg != 0) | ref.astype(bool)).astype(np.uint8)
    assert _differ(got, want) <= max(2, int(want.sum()) // 2000)
    # a segment on another grid is refused
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(seg[:-1], affine), str(small))
    r = segment("tiny-orient", CT, [click], tmp_path / "y.nii.gz", extra=["--init-mask", str(small)])
    assert r.returncode == 1 and "differs from the input" in r.stderr


INTERACTIVE = os.path.join(os.path.dirname(DEMO), "demo-lesion-interactive")


def test_the_interactive_demo_package_takes_negative_clicks_as_the_reference_does(tmp_path):
    """The shipped package with click labels: a positive click on the sample's lesion and a negative
    one beside it give the reference pipeline's mask (labels 1, 0), and the negative click removes
    voxels the same two clicks as positives keep."""
    meta = json.load(open(SAMPLE + ".json"))
    c = np.asarray(meta["click_ijk"], float)
    # 20 voxels (19.5 mm) away: beyond the first region's reuse margin, so the engine centres the
    # crop on both clicks as the reference does
    neg = c + [20.0, 0.0, 0.0]
    out = tmp_path / "m.nii.gz"
    cmd = ["--click", ",".join(f"{v:.6f}" for v in neg) + ",-"]
    r = segment(INTERACTIVE, SAMPLE + ".nii.gz", [c], out, extra=cmd)
    assert r.returncode == 0, r.stderr
    got = np.asarray(nib.load(str(out)).dataobj)
    arr, affine = _load(SAMPLE + ".nii.gz")
    pipe = Pipeline(INTERACTIVE)
    assert pipe.takes_labels
    ref = pipe.segment_array(arr, affine, [c, neg], labels=[1, 0])
    both = pipe.segment_array(arr, affine, [c, neg], labels=[1, 1])
    n = int(ref.sum())
    assert n > 100
    assert _differ(got, ref) <= max(2, n // 2000)
    assert _differ(ref, both) > 0
