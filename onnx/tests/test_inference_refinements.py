"""The manifest's `inference` refinements on the Python side: the component rule against a brute-force
labelling, the flip enumeration, and `package.set_inference` (validated, only the manifest changes,
written in one rename). The engine is checked against the reference pipeline in
tests/integration/test_engine.py."""
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from sam3d_onnx.export import package
from sam3d_onnx.evaluation.reference_pipeline import Pipeline, clicked_components, flip_axes, inference_settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")


def _brute_force(mask, seeds):
    """Grow from the seeds on the mask through 26-neighbours until nothing changes."""
    inn = np.zeros(mask.shape, bool)
    for s in seeds:
        if mask[tuple(s)]:
            inn[tuple(s)] = True
    if not inn.any():
        return mask
    while True:
        p = np.pad(inn, 1)
        grown = np.zeros_like(inn)
        for d in itertools.product((0, 1, 2), repeat=3):
            grown |= p[d[0]:d[0] + mask.shape[0], d[1]:d[1] + mask.shape[1], d[2]:d[2] + mask.shape[2]]
        new = grown & mask.astype(bool)
        if (new == inn).all():
            return inn.astype(mask.dtype)
        inn = new


def test_clicked_components_match_brute_force():
    rng = np.random.default_rng(5)
    for trial in range(30):
        shape = tuple(int(v) for v in rng.integers(3, 10, 3))
        mask = (rng.random(shape) < rng.uniform(0.2, 0.6)).astype(np.uint8)
        clicks = rng.uniform(-0.4, np.asarray(shape) - 0.6, (int(rng.integers(1, 4)), 3))
        seeds = np.clip(np.floor(clicks + 0.5).astype(int), 0, np.asarray(shape) - 1)
        np.testing.assert_array_equal(clicked_components(mask, clicks), _brute_force(mask, seeds), err_msg=str(trial))


def test_flip_enumeration_and_defaults():
    assert [flip_axes(b) for b in range(8)] == [(), (0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]
    assert inference_settings({}) == {"test_time_flips": 1, "keep_clicked_components": False}
    with pytest.raises(ValueError):
        Pipeline(TINY, test_time_flips=3)


def test_set_inference_rewrites_only_the_manifest(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(TINY, pkg)
    before = {f: (pkg / f).read_bytes() for f in os.listdir(pkg) if f != package.MANIFEST}
    old = json.loads((pkg / package.MANIFEST).read_text())
    for bad in ({"threshold": 1.0, "test_time_flips": 8}, {"threshold": 0.4, "test_time_flips": 3}):
        with pytest.raises(ValueError):
            package.set_inference(str(pkg), keep_clicked_components=True, chosen_by="test", **bad)
    assert json.loads((pkg / package.MANIFEST).read_text()) == old
    package.set_inference(str(pkg), threshold=0.4, test_time_flips=4, keep_clicked_components=True, chosen_by="test")
    m = package.read_manifest(str(pkg))          # the graphs' hashes still hold
    assert m["threshold"] == 0.4
    assert m["inference"] == {"test_time_flips": 4, "keep_clicked_components": True, "chosen_by": "test"}
    assert {k: v for k, v in m.items() if k not in ("threshold", "inference")} == \
        {k: v for k, v in old.items() if k != "threshold"}
    assert {f: (pkg / f).read_bytes() for f in os.listdir(pkg) if f != package.MANIFEST} == before
    assert sorted(os.listdir(pkg)) == sorted(list(before) + [package.MANIFEST])   # no temporary left
    p = Pipeline(str(pkg))
    assert (p.flips, p.keep_clicked) == (4, True)
