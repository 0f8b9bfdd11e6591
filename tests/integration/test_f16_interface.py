"""Packages whose graphs take the crop and give the probabilities as float16 (halving those copies
between host and device): the engine converts at the boundary (the `half` crate), and the masks
equal the float32 package's up to float16 rounding. The float16 package is the tiny fixture with a
Cast at each end, made here with the `onnx` package."""
import hashlib
import json
import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SAM3D_BIN", os.path.join(REPO, "target", "release", "examples"))
ORT = os.environ.get("SAM3D_ORT_LIBRARY", os.path.join(REPO, ".cache", "onnxruntime-cpu", "libonnxruntime.so"))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")
SAMPLE = os.path.join(REPO, "examples", "data", "sample_ct_lesion.nii.gz")


def _rename_uses(graph, old, new):
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _retype_input(path, name, elem_type):
    """The graph's input `name` becomes `elem_type`, cast to float32 where the graph reads it."""
    m = onnx.load(path)
    g = m.graph
    inp = next(i for i in g.input if i.name == name)
    inp.type.tensor_type.elem_type = elem_type
    _rename_uses(g, name, name + "_f32")
    g.node.insert(0, helper.make_node("Cast", [name], [name + "_f32"], to=TensorProto.FLOAT))
    onnx.save(m, path)


def _retype_output(path, name, elem_type):
    """The graph's output `name` is cast from float32 to `elem_type`."""
    m = onnx.load(path)
    g = m.graph
    for node in g.node:
        for i, o in enumerate(node.output):
            if o == name:
                node.output[i] = name + "_f32"
    g.node.append(helper.make_node("Cast", [name + "_f32"], [name], to=elem_type))
    out = next(o for o in g.output if o.name == name)
    out.type.tensor_type.elem_type = elem_type
    onnx.save(m, path)


def _package(tmp_path, tag, crop_type, prob_type):
    dst = tmp_path / tag
    shutil.copytree(TINY, dst)
    _retype_input(str(dst / "encoder.onnx"), "crop", crop_type)
    _retype_output(str(dst / "decoder.onnx"), "prob", prob_type)
    manifest = json.loads((dst / "sam3d-model.json").read_text())
    for g in ("encoder", "decoder"):
        for f in manifest["graphs"][g]["sha256"]:
            manifest["graphs"][g]["sha256"][f] = hashlib.sha256((dst / f).read_bytes()).hexdigest()
    (dst / "sam3d-model.json").write_text(json.dumps(manifest, indent=2))
    return dst


def _segment(model, out):
    click = json.load(open(os.path.join(REPO, "examples", "data", "sample_ct_lesion.json")))["click"]
    return subprocess.run([os.path.join(BIN, "segment"), "--model", str(model), "--input", SAMPLE,
                           "--click", click, "--out", str(out), "--ort", ORT],
                          capture_output=True, text=True)


def test_float16_interface_gives_the_float32_mask(tmp_path):
    half = _package(tmp_path, "half", TensorProto.FLOAT16, TensorProto.FLOAT16)
    r32 = _segment(TINY, tmp_path / "f32.nii.gz")
    r16 = _segment(half, tmp_path / "f16.nii.gz")
    assert r32.returncode == 0, r32.stderr
    assert r16.returncode == 0, r16.stderr
    a = np.asarray(nib.load(str(tmp_path / "f32.nii.gz")).dataobj) > 0
    b = np.asarray(nib.load(str(tmp_path / "f16.nii.gz")).dataobj) > 0
    assert a.sum() > 100, "degenerate float32 mask"
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.99, dice
    # the package really takes float16 (the engine would fail to bind a float32 crop to it)
    enc = onnx.load(str(half / "encoder.onnx"))
    assert enc.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_other_interface_types_are_refused_at_open(tmp_path):
    bad = _package(tmp_path, "double", TensorProto.DOUBLE, TensorProto.FLOAT)
    r = _segment(bad, tmp_path / "x.nii.gz")
    assert r.returncode == 1
    assert "SAM3D_STATUS_BAD_MODEL" in r.stderr and "`crop`" in r.stderr, r.stderr
    assert not (tmp_path / "x.nii.gz").exists()
