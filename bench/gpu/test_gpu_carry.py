"""bench/gpu/carry.py, which brings ONNX Runtime's CUDA provider and the benchmark packages to a lent GPU
machine in parts: what it packs here must come back there intact (apart from the float weights, which
it zeroes and refills), and its fat-binary cut must keep exactly the Hopper code."""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
import carry as gpu_carry  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-orient")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The tiny fixture package with its tensors over 1 KiB as external data (as in the paper-size
    package: gpu_carry zeroes and refills only external float tensors), its manifest's hashes updated."""
    pkg = tmp_path_factory.mktemp("pkg") / "tiny-external"
    shutil.copytree(FIXTURE, pkg)
    man = json.load(open(pkg / "sam3d-model.json"))
    for name, graph in man["graphs"].items():
        data = graph["file"] + ".data"
        onnx.save_model(onnx.load(str(pkg / graph["file"])), str(pkg / graph["file"]), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data, size_threshold=1024)
        graph["data_files"] = [data]
        graph["sha256"] = {f: hashlib.sha256((pkg / f).read_bytes()).hexdigest() for f in (graph["file"], data)}
    json.dump(man, open(pkg / "sam3d-model.json", "w"), indent=2)
    return str(pkg)


def fatbin(entries):
    """A CUDA fat-binary container as gpu_carry reads it: magic, version, header size 16, payload size,
    then per entry a 64-byte header (kind, version, header size, payload size, ..., arch at +28)."""
    body = b""
    for arch, payload in entries:
        head = bytearray(64)
        struct.pack_into("<HHIQ", head, 0, 2, 1, 64, len(payload))
        struct.pack_into("<I", head, 28, arch)
        body += bytes(head) + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_keep_one_arch_zeroes_only_the_other_architectures():
    a80, a90, a100 = b"\x11" * 100, b"\x22" * 60, b"\x33" * 40
    blob = b"junk\x50\xed\x55\xba..." + fatbin([(80, a80), (90, a90)]) + b"between" + fatbin([(100, a100)])
    data = bytearray(blob)
    kept, zeroed = gpu_carry.keep_one_arch(data, 90)
    assert (kept, zeroed) == (60, 140)
    assert len(data) == len(blob)
    assert a90 in data and a80 not in data and a100 not in data
    assert data.count(b"\x22") == 60 and data.count(b"\x11") == 0


@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / "onnxruntime_gpu-0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("onnxruntime/__init__.py", "# module\n")
        z.writestr("onnxruntime/capi/_pybind_state.py", "# state\n")
        z.writestr("onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so", b"\x7fELF pybind")
        z.writestr("onnxruntime/capi/libonnxruntime.so.1.31.1", b"\x7fELF core" * 100)
        z.writestr("onnxruntime/capi/libonnxruntime_providers_shared.so", b"\x7fELF shared")
        z.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so",
                   b"\x7fELF" + fatbin([(80, b"\x11" * 1000), (90, b"\x22" * 500)]))
        z.writestr("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", b"\x7fELF trt")
        z.writestr("onnxruntime/tools/other.py", "# not carried\n")
    return str(path)


def test_pack_unpack_round_trip(tmp_path, wheel, package):
    examples = tmp_path / "release" / "examples"
    examples.mkdir(parents=True)
    for exe in ("bench", "segment"):
        (examples / exe).write_bytes(b"\x7fELF " + exe.encode())
    (tmp_path / "release" / "libsam3d.so").write_bytes(b"\x7fELF libsam3d")
    variant = tmp_path / "variant"
    shutil.copytree(package, variant)
    parts, dest = tmp_path / "parts", tmp_path / "there"
    gpu_carry.main(["pack", wheel, f"{package},{variant}", str(examples), str(parts), "--part-mb", "1", "--python"])
    names = sorted(os.listdir(parts))
    assert names and all(n.startswith("part-") for n in names)
    assert all(os.path.getsize(parts / n) <= 10 ** 6 for n in names)
    gpu_carry.main(["unpack", str(parts), str(dest)])

    # ONNX Runtime: the CUDA provider cut to sm_90, TensorRT left out, the rest as it was
    cuda = (dest / "ort" / "libonnxruntime_providers_cuda.so").read_bytes()
    assert b"\x22" * 500 in cuda and b"\x11" not in cuda
    assert not (dest / "ort" / "libonnxruntime_providers_tensorrt.so").exists()
    assert (dest / "ort" / "libonnxruntime.so.1.31.1").read_bytes() == b"\x7fELF core" * 100
    # the Python module, its providers linked in from ort/
    capi = dest / "py" / "onnxruntime" / "capi"
    assert (capi / "_pybind_state.py").read_text() == "# state\n"
    assert (capi / "libonnxruntime_providers_cuda.so").read_bytes() == cuda
    assert not (dest / "py" / "onnxruntime" / "tools").exists()
    assert (dest / "bench").read_bytes() == b"\x7fELF bench" and os.access(dest / "bench", os.X_OK)
    assert (dest / "libsam3d.so").exists()

    # both packages: graphs and integer tensors as they were, float weights refilled (not zero, not the
    # originals), the manifest's hashes those of the refilled files
    for name in ("paper", "paper-variant"):
        pkg = dest / name
        man = json.load(open(pkg / "sam3d-model.json"))
        for graph in man["graphs"].values():
            for f, digest in graph["sha256"].items():
                assert hashlib.sha256((pkg / f).read_bytes()).hexdigest() == digest
        refilled = kept = 0
        for g in ("encoder", "decoder"):
            a = onnx.load(os.path.join(package, g + ".onnx"))
            b = onnx.load(str(pkg / (g + ".onnx")))
            external = {t.name for t in onnx.load(str(pkg / (g + ".onnx")), load_external_data=False).graph.initializer
                        if t.data_location == onnx.TensorProto.EXTERNAL}
            assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
            assert len(a.graph.initializer) == len(b.graph.initializer)
            for ta, tb in zip(a.graph.initializer, b.graph.initializer):
                va, vb = onnx.numpy_helper.to_array(ta), onnx.numpy_helper.to_array(tb)
                assert ta.name == tb.name and va.shape == vb.shape and va.dtype == vb.dtype
                if va.dtype == np.float32 and tb.name in external:
                    assert not np.array_equal(va, vb) and np.isfinite(vb).all() and 0 < np.abs(vb).max() < 1
                    refilled += 1
                else:
                    np.testing.assert_array_equal(va, vb)
                    kept += 1
        assert refilled > 10 and kept > 0


def test_unpacked_package_still_opens_in_the_engine(tmp_path, wheel, package):
    """The refilled package passes the engine's own hash check (segment opens it and segments)."""
    exe = os.path.join(ROOT, "target", "release", "examples", "segment")
    ort = os.environ.get("SAM3D_ORT_LIBRARY")
    if not (os.path.exists(exe) and ort):
        pytest.skip("needs the release examples and SAM3D_ORT_LIBRARY (make test provides both)")
    examples = tmp_path / "examples"
    examples.mkdir()
    for e in ("bench", "segment"):
        (examples / e).write_bytes(b"")
    parts, dest = tmp_path / "parts", tmp_path / "there"
    gpu_carry.main(["pack", wheel, package, str(examples), str(parts)])
    gpu_carry.main(["unpack", str(parts), str(dest)])
    ct = tmp_path / "ct.nii"
    r = subprocess.run([exe, "--model", str(dest / "paper"), "--input", os.path.join(ROOT, "examples", "data",
                        "sample_ct_lesion.nii.gz"), "--click", "95,96,11", "--coord", "ijk", "--out", str(ct),
                        "--ort", ort], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mask" in r.stdout and ct.exists()
