"""The C++ example client (examples/triton/remote_segment.cpp: HTTP/REST with Triton's binary tensor
extension over libcurl) against a real Triton server: its mask equals the local binding's, the
server's NIfTI file arrives whole, clicks cost a box not a volume, and errors end the session."""
import gzip
import http.server
import json
import os
import shutil
import struct
import subprocess
import threading
import time

import numpy as np
import pytest
import sam3d

import launch
from conftest import DEMO, LIMITED_TIMEOUT, ROOT, SAMPLE, SAMPLE_CLICK

SOURCE = os.path.join(ROOT, "examples", "triton", "remote_segment.cpp")
FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]
CLICKS = [SAMPLE_CLICK, (100, 96, 11)]
NIFTI_HEADER = 352   # a .nii file's header and extension flag, then the voxels


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The example compiled with the flags its header names; a missing compiler or libcurl is a
    failure, not a skip: C++ hosts are what this example serves."""
    cxx = shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler: `c++` is not on PATH (install g++ or clang)")
    exe = str(tmp_path_factory.mktemp("cpp") / "remote_segment")
    p = subprocess.run([cxx, *FLAGS, SOURCE, "-lcurl", "-o", exe], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        hint = ""
        if "curl/curl.h" in p.stderr or "-lcurl" in p.stderr:
            hint = "libcurl's development files are missing (apt-get install libcurl4-openssl-dev)\n"
        pytest.fail(f"{hint}compiling {SOURCE} failed:\n{p.stderr[-4000:]}")
    return exe


def run(exe, *args, timeout=300):
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def click_args(clicks):
    out = []
    for c in clicks:
        out += ["--click", ",".join(str(v) for v in c)]
    return out


@pytest.fixture(scope="module")
def local():
    """The same clicks with the local binding: (dims, mask indexed [i, j, k])."""
    rt = sam3d.Runtime()
    model = sam3d.Model(rt, DEMO, threads=1)
    vol = sam3d.Volume.read_nifti(SAMPLE)
    with sam3d.Session(model, vol) as s:
        obj = s.add_object()
        for c in CLICKS:
            s.click(obj, c)
        mask = s.mask(obj)
    return tuple(mask.shape), np.asarray(mask, np.uint8)


def test_masks_match_the_local_binding(server, client, local, tmp_path):
    dims, expected = local
    out, raw = tmp_path / "mask.nii.gz", tmp_path / "mask.raw"
    p = run(client, "--server", server.http_url, "--model", "sam3d", "--input", SAMPLE, *click_args(CLICKS),
            "--out", out, "--raw", raw)
    assert p.returncode == 0, p.stderr
    assert "found nothing" not in p.stderr

    # the mask this program kept from the patches alone
    got = np.fromfile(raw, np.uint8)
    assert got.size == expected.size
    np.testing.assert_array_equal(got.reshape(dims, order="F"), expected)

    # the server's file: a gzip NIfTI of uint8 voxels, i fastest
    with gzip.open(out) as f:
        nii = f.read()
    assert len(nii) == NIFTI_HEADER + expected.size
    np.testing.assert_array_equal(np.frombuffer(nii[NIFTI_HEADER:], np.uint8).reshape(dims, order="F"), expected)
    assert not [n for n in os.listdir(tmp_path) if ".part-" in n]

    # one line per click; each carried its changed box, far less than the whole mask
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("click ")]
    assert len(lines) == len(CLICKS), p.stdout
    whole_packed = expected.size // 8
    for k, line in enumerate(lines, 1):
        assert line.startswith(f"click {k}: "), line
        wire_bytes = int(line.rsplit(", ", 1)[1].split()[0])
        assert 0 < wire_bytes < whole_packed // 4, line
    assert lines[-1].split(": ", 1)[1].startswith(f"{int(expected.sum())} voxels, changed ["), lines[-1]


def test_click_outside_the_volume_fails_and_writes_nothing(server, client, tmp_path):
    out = tmp_path / "mask.nii.gz"
    p = run(client, "--server", server.http_url, "--input", SAMPLE, "--click", "5000,0,0", "--out", out)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "error: SAM3D_STATUS_OUT_OF_BOUNDS: " in p.stderr
    assert not os.listdir(tmp_path)


def test_a_failed_run_ends_its_session(server, client, tmp_path):
    # "limited" holds 2 sessions on one instance: a client that left its session behind after a
    # failure would make the third START here a SAM3D_STATUS_BUSY. Other tests' sessions there
    # are gone after its idle timeout.
    time.sleep(LIMITED_TIMEOUT + 1.0)
    for _ in range(3):
        p = run(client, "--server", server.http_url, "--model", "limited", "--input", SAMPLE,
                "--click", "5000,0,0", "--out", tmp_path / "m.nii.gz")
        assert p.returncode == 1
        assert "SAM3D_STATUS_OUT_OF_BOUNDS" in p.stderr, p.stderr


def test_triton_refusal_is_reported(server, client, tmp_path):
    p = run(client, "--server", server.http_url, "--model", "no-such-model", "--input", SAMPLE,
            "--click", "1,1,1", "--out", tmp_path / "m.nii.gz")
    assert p.returncode == 1
    assert "refused the request (HTTP 4" in p.stderr and "no-such-model" in p.stderr, p.stderr
    assert not os.listdir(tmp_path)


def test_no_server_on_the_port(client, tmp_path):
    port = launch.free_port()
    p = run(client, "--server", f"127.0.0.1:{port}", "--input", SAMPLE, "--click", "1,1,1",
            "--out", tmp_path / "m.nii.gz", timeout=60)
    assert p.returncode == 1
    assert f"no answer from the server at http://127.0.0.1:{port}" in p.stderr, p.stderr
    assert not os.listdir(tmp_path)


def test_bad_command_line(client, tmp_path):
    p = run(client, "--server", "127.0.0.1:1", "--input", SAMPLE, "--click", "1,2", "--out", tmp_path / "m")
    assert p.returncode == 2 and "--click" in p.stderr


# -- a scripted stand-in for Triton: what the client sends, and replies a real server does not give

def _binary_reply(outputs):
    """A KServe v2 reply with binary outputs: [(name, datatype, shape, bytes)] -> (header length, body)."""
    header = json.dumps({"model_name": "fake", "outputs": [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
        for n, d, s, b in outputs]}).encode()
    return len(header), header + b"".join(b for _, _, _, b in outputs)


def _bytes(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def _sam3d_reply(status="SAM3D_STATUS_OK", result=(0,) * 8, patch=b"", info=None):
    return _binary_reply([("STATUS", "BYTES", [1, 1], _bytes(status.encode())),
                          ("MESSAGE", "BYTES", [1, 1], _bytes(b"")),
                          ("RESULT", "INT64", [1, 8], struct.pack("<8q", *result)),
                          ("ZOOM", "FP64", [1, 1], struct.pack("<d", 0.0)),
                          ("PATCH", "UINT8", [1, len(patch)], patch),
                          ("INFO", "BYTES", [1, 1], _bytes(json.dumps(info or {}).encode()))])


class _Fake(http.server.BaseHTTPRequestHandler):
    """Answers each OP from `replies` (op -> (header length, body)) and records the requests."""
    protocol_version = "HTTP/1.1"
    replies = {}
    requests = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        hlen = int(self.headers["Inference-Header-Content-Length"])
        header = json.loads(body[:hlen])
        first = header["inputs"][0]
        n = first["parameters"]["binary_data_size"]
        (size,) = struct.unpack("<I", body[hlen:hlen + 4])
        assert first["name"] == "OP" and n == 4 + size
        op = body[hlen + 4:hlen + n].decode()
        type(self).requests.append((self.path, op, header))
        length, reply = type(self).replies[op]
        self.send_response(200)
        self.send_header("Inference-Header-Content-Length", str(length))
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def fake():
    _Fake.requests = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_empty_mask_is_reported_and_written(client, fake, tmp_path):
    ok = _sam3d_reply()
    _Fake.replies = {"start": _sam3d_reply(info={"dims": [4, 3, 2]}), "add_object": _sam3d_reply(info={"object": 7}),
                     "click": _sam3d_reply(result=(0, 1, 1, 1, 1, 1, 1, 0)),
                     "get_mask_nifti": _sam3d_reply(patch=b"\x1f\x8bnot really"), "end": ok}
    out, raw = tmp_path / "m.nii.gz", tmp_path / "m.raw"
    p = run(client, "--server", f"127.0.0.1:{fake.server_address[1]}", "--model", "fake", "--input", SAMPLE,
            "--click", "1,2,1", "--out", out, "--raw", raw, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "the click found nothing" in p.stderr
    assert p.stdout.startswith("click 1: 0 voxels, changed [1,1,1]..[1,1,1), ")
    assert out.read_bytes() == b"\x1f\x8bnot really" and raw.read_bytes() == bytes(24)

    # the requests: one sequence, START first and END last, inputs batched as [1, n], binary outputs
    ops = [op for _, op, _ in _Fake.requests]
    assert ops == ["start", "add_object", "click", "get_mask_nifti", "end"]
    assert {path for path, _, _ in _Fake.requests} == {"/v2/models/fake/infer"}
    params = [h["parameters"] for _, _, h in _Fake.requests]
    ids = {q["sequence_id"] for q in params}
    assert len(ids) == 1 and 0 < ids.pop() < 2 ** 63
    assert [(q["sequence_start"], q["sequence_end"]) for q in params] == \
        [(True, False)] + [(False, False)] * 3 + [(False, True)]
    click = {i["name"]: i for i in _Fake.requests[2][2]["inputs"]}
    assert {n: (i["datatype"], i["shape"]) for n, i in click.items()} == {
        "OP": ("BYTES", [1, 1]), "OBJECT": ("UINT32", [1, 1]), "POINT": ("FP64", [1, 3]),
        "COORD": ("BYTES", [1, 1]), "POSITIVE": ("BOOL", [1, 1])}
    for _, _, h in _Fake.requests:
        assert all(o["parameters"] == {"binary_data": True} for o in h["outputs"])


@pytest.mark.parametrize("broken", ["past_the_end", "patch_size", "box_outside"])
def test_malformed_reply_is_an_error_not_a_crash(client, fake, tmp_path, broken):
    start = _sam3d_reply(info={"dims": [4, 3, 2]})
    if broken == "past_the_end":   # the header promises more bytes than follow
        length, body = start
        start = length, body[:-10]
    click = _sam3d_reply(result=(3, 0, 0, 0, 2, 2, 1, 0), patch=b"\x0f" * (2 if broken == "patch_size" else 1))
    if broken == "box_outside":
        click = _sam3d_reply(result=(3, 0, 0, 0, 5, 2, 1, 0), patch=b"\x0f\x00")
    _Fake.replies = {"start": start, "add_object": _sam3d_reply(info={"object": 1}), "click": click,
                     "get_mask_nifti": _sam3d_reply(patch=b"x"), "end": _sam3d_reply()}
    p = run(client, "--server", f"127.0.0.1:{fake.server_address[1]}", "--input", SAMPLE,
            "--click", "1,1,1", "--out", tmp_path / "m.nii.gz", timeout=60)
    assert p.returncode == 1, p.stderr
    assert "error: malformed reply" in p.stderr, p.stderr
    assert not os.listdir(tmp_path)
    assert [op for _, op, _ in _Fake.requests][-1] == "end"   # the session is ended all the same
