"""A package back to PyTorch (`package_import`): the imported model's graphs reproduce the package's
probabilities, the parameters the export keeps as they are come back exactly, and the result resumes
training the way demo_train loads it."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from sam3d_onnx import fixtures, package_import
from sam3d_onnx.config import Sam3DConfig
from sam3d_onnx.demo_train import model_config
from sam3d_onnx.model import Sam3D

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")
DEMO = os.path.join(REPO, "models", "demo-lesion")

# parameters the export folds, resamples or drops (imported as an equivalent, not an equal, value), and
# the official random-Fourier buffer that no layer uses
FOLDED = ("patch_embed", "slice_embed", "pos_embed", "rel_pos_", ".lr", "decoder.cls.3.weight",
          "cross_attn_token_to_image", "positional_encoding_gaussian_matrix", "attn.qkv.bias", "attn.proj.bias")


def test_tiny_fixture_round_trip_and_exact_parameters():
    _, _, original = fixtures.pick_model()          # the model the fixture was exported from
    model = package_import.import_package(TINY)
    assert package_import.check(TINY, model, n=4) < 1e-5
    got, want = model.state_dict(), original.state_dict()
    exact = [k for k in want if not any(f in k for f in FOLDED)]
    assert len(exact) > 100
    for k in exact:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)
    # the folded ones still compute the same: the window blocks' tables are recovered exactly; q's bias
    # too, k's (which softmax ignores) and v's become 0, v's moving into the projection's bias
    cfg = original.cfg
    c = cfg.embed_dim
    for i, (a, b) in enumerate(zip(model.encoder.blocks, original.encoder.blocks)):
        if i not in cfg.global_blocks:
            torch.testing.assert_close(a.attn.rel_pos_d, b.attn.lr * b.attn.rel_pos_d, atol=1e-6, rtol=0)
        bq, bk, bv = b.attn.qkv.bias.detach().chunk(3)
        assert bk.abs().max() > 1e-3 and bv.abs().max() > 1e-3        # the fixture's biases are not 0
        torch.testing.assert_close(a.attn.qkv.bias[:c], bq, atol=1e-6, rtol=0)
        assert a.attn.qkv.bias[c:].abs().max() == 0
        want_bp = b.attn.proj.bias + b.attn.proj.weight @ bv
        torch.testing.assert_close(a.attn.proj.bias, want_bp.detach(), atol=1e-6, rtol=0)


def test_demo_package_imports_and_resumes(tmp_path):
    model = package_import.import_package(DEMO)
    assert package_import.check(DEMO, model, n=3) < 1e-5
    out = tmp_path / "resume"
    package_import.write_resume_folder(DEMO, model, str(out))
    record = json.loads((out / "training.json").read_text())
    manifest = json.loads(open(os.path.join(DEMO, "sam3d-model.json")).read())
    assert record["imported_from"]["sha256"] == manifest["graphs"]["encoder"]["sha256"]
    # as demo_train --resume loads it
    again = Sam3D(model_config(record))
    again.load_state_dict(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    assert again.cfg == Sam3DConfig.from_dict(manifest["architecture"])
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_quantised_packages_are_refused(tmp_path):
    pkg = tmp_path / "int8"
    shutil.copytree(TINY, pkg)
    m = json.loads((pkg / "sam3d-model.json").read_text())
    m["precision"] = {"encoder": "int8", "decoder": "fp32"}
    (pkg / "sam3d-model.json").write_text(json.dumps(m))
    with pytest.raises(package_import.ImportError_, match="fp32"):
        package_import.import_package(str(pkg))


@pytest.mark.parametrize("which", ["tiny_model", "tiny_fine_model"])
def test_fresh_export_round_trip(tmp_path, request, which):
    """Packages exported now carry the click half of cls.0 as UpsampledConv's mixing matrix (decoder_scale
    2 and 4): the importer turns it back into the conv weight exactly."""
    from sam3d_onnx import package
    original = request.getfixturevalue(which)
    path = tmp_path / "pkg"
    package.export_package(
        original, str(path), name="t", description="t", licence="Apache-2.0", provenance="random weights (tests)",
        frame={"mode": "orient", "orientation": "RAS", "array_transpose": None},
        intensity={"clip": [-100.0, 200.0], "mean": 50.0, "std": 60.0, "nonfinite": "error"})
    model = package_import.import_package(str(path))
    torch.testing.assert_close(model.decoder.cls[0].weight, original.decoder.cls[0].weight, rtol=0, atol=1e-6)
    assert package_import.check(str(path), model, n=2) < 1e-5
