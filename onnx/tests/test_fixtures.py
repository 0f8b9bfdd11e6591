"""The committed fixture packages (tests/fixtures/models) are exactly what the generator writes."""
import os

import numpy as np
import onnxruntime as ort

from conftest import nondegenerate
from sam3d_onnx.export import fixtures
from sam3d_onnx.export.package import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED = os.path.join(REPO, "tests", "fixtures", "models")


def test_committed_fixtures_are_regenerated_identically(tmp_path):
    fixtures.write_fixtures(str(tmp_path))
    with open(os.path.join(COMMITTED, "SHA256SUMS")) as f:
        committed = f.read()
    assert (tmp_path / "SHA256SUMS").read_text() == committed, \
        "fixtures drifted: run `make fixtures` and commit tests/fixtures/models"


def test_fixture_masks_are_not_degenerate():
    total = 0
    for name in fixtures.FRAMES:
        d = os.path.join(COMMITTED, name)
        m = read_manifest(d)
        assert m["frame"] == fixtures.FRAMES[name]
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        total += size
        enc = ort.InferenceSession(os.path.join(d, "encoder.onnx"))
        dec = ort.InferenceSession(os.path.join(d, "decoder.onnx"))
        c = m["architecture"]["crop"]
        crop = np.random.default_rng(123).standard_normal((1, 1, c, c, c)).astype(np.float32)
        f3, cp = enc.run(["f3", "cls_partial"], {"crop": crop})
        prob, = dec.run(["prob"], {"f3": f3, "cls_partial": cp, "points": np.full((1, 1, 3), c / 2, np.float32)})
        nondegenerate(prob, lo=0.1, hi=0.6)
    assert total < 8e6  # a few MB at most
