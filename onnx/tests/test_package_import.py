"""A package back to PyTorch (`package_import`): the imported model's graphs reproduce the package's
probabilities, the parameters the export keeps as they are come back exactly, and the result resumes
training the way train-demo loads it."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from sam3d_onnx.export import fixtures, package_import
from sam3d_onnx.model.config import TINY as TINY_CFG
from sam3d_onnx.model.config import Sam3DConfig
from sam3d_onnx.model.network import Sam3D, random_init_
from sam3d_onnx.training.demo import model_config

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
    # as train-demo --resume loads it
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


@pytest.mark.parametrize("which", ["tiny_model", "tiny_fine_model", "decoder_scale_1"])
def test_fresh_export_round_trip(tmp_path, request, which):
    """Packages exported now carry the click half of cls.0 as UpsampledConv's mixing matrix (decoder_scale
    2 and 4; a plain conv at 1) and say so in the manifest: the importer turns it back into the conv
    weight exactly."""
    from sam3d_onnx.export import package
    from sam3d_onnx.export.graphs import graph_layout
    if which == "decoder_scale_1":
        original = random_init_(Sam3D(TINY_CFG.replace(decoder_scale=1)), seed=3).eval()
    else:
        original = request.getfixturevalue(which)
    path = tmp_path / "pkg"
    manifest = package.export_package(
        original, str(path), name="t", description="t", licence="Apache-2.0", provenance="random weights (tests)",
        frame={"mode": "orient", "orientation": "RAS", "array_transpose": None},
        intensity={"clip": [-100.0, 200.0], "mean": 50.0, "std": 60.0, "nonfinite": "error"})
    layout = manifest["export"]["graph_layout"]
    assert layout == graph_layout(original.cfg)
    assert layout["cls_click"] == ("conv" if which == "decoder_scale_1" else "upsampled_conv")
    graphs = [package_import._initializers(str(path / f))[1] for f in ("encoder.onnx", "decoder.onnx")]
    assert package_import.guess_layout(*graphs) == layout          # the names agree with the record
    model = package_import.import_package(str(path))
    torch.testing.assert_close(model.decoder.cls[0].weight, original.decoder.cls[0].weight, rtol=0, atol=1e-6)
    assert package_import.check(str(path), model, n=2) < 1e-5


def _with_manifest(src, dst, edit):
    shutil.copytree(src, dst)
    m = json.loads((dst / "sam3d-model.json").read_text())
    edit(m)
    (dst / "sam3d-model.json").write_text(json.dumps(m))
    return str(dst)


def test_the_fixtures_record_their_layout_and_the_importer_follows_it(tmp_path):
    """The committed fixtures carry `export.graph_layout`; the importer reads what it says (a record that
    contradicts the graphs fails naming the missing constant) and refuses layouts it does not know.
    Without the record it recognises the layout by the constants' names, as for older packages."""
    from sam3d_onnx.export.graphs import graph_layout
    m = json.loads(open(os.path.join(TINY, "sam3d-model.json")).read())
    assert m["export"]["graph_layout"] == graph_layout(Sam3DConfig.from_dict(m["architecture"]))

    def set_part(part, value):
        return lambda man: man["export"]["graph_layout"].__setitem__(part, value)

    wrong = _with_manifest(TINY, tmp_path / "wrong", set_part("front_end", "conv_dhw"))
    with pytest.raises(package_import.ImportError_, match="front_kernel"):
        package_import.import_package(wrong)
    wrong = _with_manifest(TINY, tmp_path / "wrong-click", set_part("cls_click", "conv"))
    with pytest.raises(package_import.ImportError_, match="cls_click_w"):
        package_import.import_package(wrong)
    unknown = _with_manifest(TINY, tmp_path / "unknown", set_part("attention", "something-new"))
    with pytest.raises(package_import.ImportError_, match="attention.*something-new"):
        package_import.import_package(unknown)
    newer = _with_manifest(TINY, tmp_path / "newer", set_part("new_part", "x"))
    with pytest.raises(package_import.ImportError_, match="new_part"):
        package_import.import_package(newer)

    bare = _with_manifest(TINY, tmp_path / "bare", lambda man: man.pop("export"))
    model = package_import.import_package(bare)
    assert package_import.check(bare, model, n=2) < 1e-5


def test_a_package_with_click_labels_imports_with_its_label_embedding(tmp_path):
    """The extended architecture's label embedding comes back from the graph (`label_neg`,
    `label_step`): the imported model's export gives the package's probabilities for negative and
    positive clicks alike."""
    pkg = os.path.join(REPO, "tests", "fixtures", "models", "tiny-labels")
    model = package_import.import_package(pkg)
    assert model.cfg.point_labels
    e = model.prompt_encoder.label_embed.detach().numpy()
    assert np.abs(e[1] - e[0]).max() > 1e-3          # the labels differ: negative clicks matter
    assert package_import.check(pkg, model, n=3) < 1e-4
