"""Exported packages: ONNX Runtime on the graphs equals PyTorch, and the package follows the contract."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import nondegenerate
from sam3d_onnx.export import package
from sam3d_onnx.export.graphs import graphs
from sam3d_onnx.model.network import dhw_to_dwh


def _export(model, path):
    return package.export_package(
        model, str(path), name="test", description="test package", licence="Apache-2.0",
        provenance="random weights (tests)", frame={"mode": "orient", "orientation": "RAS",
                                                    "array_transpose": None},
        intensity={"clip": [-100.0, 200.0], "mean": 50.0, "std": 60.0, "nonfinite": "error"})


@pytest.fixture(scope="module")
def tiny_pkg(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("pkg") / "tiny"
    manifest = _export(tiny_model, path)
    return path, manifest


def _sessions(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return (ort.InferenceSession(str(path / "encoder.onnx"), opts),
            ort.InferenceSession(str(path / "decoder.onnx"), opts))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_onnxruntime_equals_pytorch(tiny_pkg, tiny_model, n):
    path, _ = tiny_pkg
    _check_onnxruntime_equals_pytorch(path, tiny_model, n)


def test_onnxruntime_equals_pytorch_fine_decoder(tmp_path, tiny_fine_model):
    """decoder_scale 4: the decoder's static half and the click half both on the crop's grid."""
    _export(tiny_fine_model, tmp_path / "fine")
    _check_onnxruntime_equals_pytorch(tmp_path / "fine", tiny_fine_model, 2)


def _check_onnxruntime_equals_pytorch(path, model, n):
    enc_s, dec_s = _sessions(path)
    c = model.cfg.crop
    rng = np.random.default_rng(n)
    crop = rng.standard_normal((1, 1, c, c, c)).astype(np.float32)
    pts = np.concatenate([rng.uniform(0, c - 1, (1, n, 3)), ], 1).astype(np.float32)
    cache = enc_s.run(None, {"crop": crop})
    names = [o.name for o in enc_s.get_outputs()]
    prob, = dec_s.run(["prob"], {**dict(zip(names, cache)), "points": pts})
    enc, dec = graphs(model)
    with torch.no_grad():
        f = enc(torch.from_numpy(crop))
        got_graph = dec(*f, torch.from_numpy(pts)).numpy()
        ref = model(torch.from_numpy(crop).repeat(1, 3, 1, 1, 1), dhw_to_dwh(torch.from_numpy(pts))).numpy()
    for name, t, tt in zip(names, cache, f):
        assert np.abs(t - tt.numpy()).max() <= 1e-4, name
    assert prob.shape == (1, c, c, c)
    assert np.abs(prob - got_graph).max() <= 1e-4
    assert np.abs(prob - ref).max() <= 1e-4
    nondegenerate(prob)


def test_graph_interface_follows_contract(tiny_pkg, tiny_model):
    path, manifest = tiny_pkg
    cfg = tiny_model.cfg
    c, g = cfg.crop, cfg.grid
    enc_s, dec_s = _sessions(path)
    assert [(i.name, i.shape) for i in enc_s.get_inputs()] == [("crop", [1, 1, c, c, c])]
    enc_out = {o.name: o.shape for o in enc_s.get_outputs()}
    assert enc_out == {"f3": [1, cfg.neck_dim, g, g, g], "cls_partial": [1, cfg.decoder_dim, 2 * g, 2 * g, 2 * g]}
    dec_in = {i.name: i.shape for i in dec_s.get_inputs()}
    assert set(dec_in) == {"f3", "cls_partial", "points"}
    for k, v in enc_out.items():  # every encoder output is fed back by name, same shape
        assert dec_in[k] == v
    assert dec_in["points"][0] == 1 and dec_in["points"][2] == 3 and isinstance(dec_in["points"][1], str)
    assert [(o.name, o.shape) for o in dec_s.get_outputs()] == [("prob", [1, c, c, c])]
    for f in ("encoder.onnx", "decoder.onnx"):
        m = onnx.load(str(path / f))
        ops = {n.op_type for n in m.graph.node}
        assert "GridSample" not in ops
        assert "Einsum" not in ops        # relative position folded into the attention MatMul
        assert {o.domain: o.version for o in m.opset_import}.get("", None) == manifest["opset"] == 20
    # the manifest matches the graphs it describes
    assert manifest["graphs"]["encoder"]["outputs"] == [{"name": k, "shape": v} for k, v in enc_out.items()]
    assert manifest["architecture"]["crop"] == c


def test_manifest_hashes_and_reader(tiny_pkg, tmp_path):
    path, manifest = tiny_pkg
    on_disk = json.loads((path / package.MANIFEST).read_text())
    assert on_disk == manifest
    assert on_disk["format"] == "sam3d-model" and on_disk["format_version"] == 1
    for gname in ("encoder", "decoder"):
        for fname, digest in on_disk["graphs"][gname]["sha256"].items():
            assert package.sha256_file(str(path / fname)) == digest
    assert package.read_manifest(str(path))["name"] == "test"
    # a tampered graph is refused with its file named
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    with open(bad / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="decoder.onnx"):
        package.read_manifest(str(bad))


def test_failed_export_leaves_nothing(tmp_path, tiny_model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("export failed on purpose")
    monkeypatch.setattr(package, "_export", boom)
    with pytest.raises(RuntimeError):
        _export(tiny_model, tmp_path / "pkg")
    assert os.listdir(tmp_path) == []
