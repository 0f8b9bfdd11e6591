"""libsam3d on a real Triton server: remote sessions against the local binding, errors over the
wire, session limits, idle timeout, clients that vanish, memory, a server restart."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import sam3d
import tritonclient.http as th
from google.protobuf import text_format
from sam3d import wire
from sam3d.remote import RemoteSession, SessionLost
from tritonclient.grpc import model_config_pb2

import launch
from conftest import DEMO, LIMITED_TIMEOUT, LIMITED_VOXELS, SAMPLE, SAMPLE_CLICK, TINY

CLICKS = [SAMPLE_CLICK, (100, 96, 11), (90, 92, 10)]
_TYPES = {"BYTES": "TYPE_STRING", "FP64": "TYPE_FP64", "UINT32": "TYPE_UINT32", "BOOL": "TYPE_BOOL",
          "UINT8": "TYPE_UINT8", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64"}


@pytest.fixture(scope="module")
def runtime():
    return sam3d.Runtime()


@pytest.fixture(scope="module")
def local_models(runtime):
    return {"sam3d": sam3d.Model(runtime, DEMO, threads=1), "tiny": sam3d.Model(runtime, TINY, threads=1),
            "limited": None}


def local_session(local_models, name, volume=None):
    return sam3d.Session(local_models[name], volume if volume is not None else sam3d.Volume.read_nifti(SAMPLE))


def urls(server):
    return ["http://" + server.http_url, "grpc://" + server.grpc_url]


# -- configuration ------------------------------------------------------------------------------

def _parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


def test_config_template_parses_and_matches_the_protocol():
    c = _parse(os.path.join(launch.TEMPLATE, "config.pbtxt"))
    assert c.backend == "python"
    kinds = {ci.name: ci.control[0].kind for ci in c.sequence_batching.control_input}
    assert kinds == {"START": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
                     "END": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END,
                     "CORRID": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID}
    assert c.sequence_batching.max_sequence_idle_microseconds > 0
    types = model_config_pb2.DataType.Name
    assert {i.name: types(i.data_type) for i in c.input} == {k: _TYPES[v] for k, v in wire.INPUTS.items()}
    assert [i.name for i in c.input if not i.optional] == ["OP"]
    assert {o.name: types(o.data_type) for o in c.output} == {k: _TYPES[v] for k, v in wire.OUTPUTS.items()}
    assert {"package", "device", "threads", "memory_budget", "max_sessions", "warm_up"} <= set(c.parameters)
    # room for refused STARTs beyond the sessions, so they are answered rather than queued
    assert c.max_batch_size > int(c.parameters["max_sessions"].string_value)


def test_written_configs_carry_the_settings(tmp_path):
    repo = launch.write_repository(str(tmp_path), {"a": TINY, "b": {"package": DEMO, "max_sessions": 3,
                                                                       "instances": 1, "idle_timeout": 7}},
                                   threads=2, device="cuda")
    a, b = _parse(tmp_path / "a" / "config.pbtxt"), _parse(tmp_path / "b" / "config.pbtxt")
    assert (a.name, a.parameters["package"].string_value, a.parameters["device"].string_value) == ("a", TINY, "cuda")
    assert b.parameters["max_sessions"].string_value == "3" and b.instance_group[0].count == 1
    assert b.sequence_batching.max_sequence_idle_microseconds == 7_000_000
    assert b.max_batch_size > 3 and a.parameters["threads"].string_value == "2"
    assert os.path.exists(os.path.join(repo, "b", "1", "model.py"))


# -- remote against local -----------------------------------------------------------------------

@pytest.mark.parametrize("model", ["sam3d", "tiny"])
def test_four_concurrent_remote_sessions_match_the_local_binding(server, local_models, model):
    local = local_session(local_models, model)
    obj = local.add_object()
    want = []
    for c in CLICKS:
        r = local.click(obj, c)
        want.append((r, local.mask(obj)))
    got, errors = {}, []

    def client(k):
        try:
            with RemoteSession(urls(server)[k % 2], SAMPLE, model=model) as s:
                o = s.add_object()
                got[k] = [(s.click(o, c), s.mask(o)) for c in CLICKS] + [(None, s.fetch_mask(o))]
        except Exception as e:  # reported below: a thread's assertion would be lost
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors
    for k in range(4):
        for (r, m), (lr, lm) in zip(got[k], want):
            assert (r.voxels, r.changed_lo, r.changed_hi, r.zoom) == (lr.voxels, lr.changed_lo, lr.changed_hi, lr.zoom)
            assert m.dtype == np.uint8 and m.tobytes() == lm.tobytes()
        # the local copy kept from patches equals the server's whole mask
        assert got[k][-1][1].tobytes() == want[-1][1].tobytes()
    assert any(r.voxels for r, _ in want), "the clicks must segment something for the comparison to mean anything"


def test_raw_array_volume_objects_undo_redo_match(server, local_models):
    rng = np.random.default_rng(3)
    a = rng.normal(0, 20, (70, 64, 40)).astype(np.int16)
    a[20:45, 20:40, 10:30] += 300
    geom = sam3d.Geometry((70, 64, 40), (0.8, 0.9, 1.5), (-10.0, 5.0, 3.0),
                          np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]))
    local = local_session(local_models, "tiny", sam3d.Volume.from_array(a, geometry=geom))
    steps = [("click", 0, (30, 30, 20)), ("add", None, None), ("click", 1, (10, 50, 5)),
             ("click", 0, (35, 28, 22)), ("undo", 0, None), ("redo", 0, None), ("undo", 0, None),
             ("undo", 1, None), ("box", 1, ((15, 15, 8), (50, 45, 32)))]
    with RemoteSession("grpc://" + server.grpc_url, a, model="tiny", geometry=geom) as remote:
        assert remote.geometry.dims == geom.dims and np.allclose(remote.geometry.direction, geom.direction)
        for s in (local, remote):
            assert s.add_object() == 0
        objects = 1
        for op, obj, arg in steps:
            objects += op == "add"
            rs = []
            for s in (local, remote):
                if op == "add":
                    rs.append(s.add_object())
                elif op == "click":
                    rs.append(s.click(obj, arg))
                elif op == "box":
                    rs.append(s.set_box(obj, *arg))
                else:
                    rs.append(getattr(s, op)(obj))
            assert rs[0] == rs[1], (op, obj)
            for o in range(objects):
                assert remote.mask(o).tobytes() == local.mask(o).tobytes(), (op, obj, o)
        assert remote.fetch_mask(1).tobytes() == local.mask(1).tobytes()
        remote.set_inference(2, False, zoom_out=1)
        local.set_inference(2, False, zoom_out=1)
        assert remote.inference == local.inference == (2, False) and remote.zoom_out == 1
        assert remote.click(0, (31, 30, 21)) == local.click(0, (31, 30, 21))
        assert remote.mask(0).tobytes() == local.mask(0).tobytes()


def test_starting_segment_remotely(server, local_models):
    local = local_session(local_models, "sam3d")
    start = np.zeros((192, 192, 20), np.uint8)
    start[100:110, 60:70, 5:9] = 1
    with RemoteSession("http://" + server.http_url, SAMPLE) as remote:
        for s in (local, remote):
            s.add_object()
        assert remote.set_mask(0, start) == local.set_mask(0, start)
        assert remote.click(0, SAMPLE_CLICK) == local.click(0, SAMPLE_CLICK)
        assert remote.mask(0).tobytes() == local.mask(0).tobytes()
        assert remote.mask(0)[100:110, 60:70, 5:9].all()


def test_patches_are_the_changed_box_as_bits(server, local_models):
    local = local_session(local_models, "sam3d")
    lo_obj = local.add_object()
    with RemoteSession("http://" + server.http_url, SAMPLE) as s:
        sent = []
        send = s._send
        s._send = lambda *a, **k: sent.append(send(*a, **k)) or sent[-1]
        o = s.add_object()
        r = s.click(o, SAMPLE_CLICK)
        n = int(np.prod(wire.box_shape(r.changed_lo, r.changed_hi)))
        assert 0 < n < 192 * 192 * 20
        # what the server sent is the box's bits of the local binding's mask: an eighth of a byte a voxel
        local.click(lo_obj, SAMPLE_CLICK)
        want = wire.pack(local.mask(lo_obj), r.changed_lo, r.changed_hi)
        assert sent[-1]["patch"].size == (n + 7) // 8 and sent[-1]["patch"].tobytes() == want.tobytes()


# -- errors over the wire -----------------------------------------------------------------------

def _local_error(fn):
    with pytest.raises(sam3d.Error) as e:
        fn()
    return e.value


def test_library_errors_keep_their_names(server, local_models, tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\0" * 100 + b"not a nifti file" * 30)
    want = _local_error(lambda: sam3d.Volume.read_nifti(str(bad)))
    with pytest.raises(sam3d.Error) as e:
        RemoteSession("http://" + server.http_url, bad.read_bytes(), model="tiny")
    assert (e.value.name, e.value.status) == (want.name, want.status)
    assert e.value.message == want.message.replace(str(bad), "the uploaded VOLUME")

    for url in urls(server):
        local = local_session(local_models, "tiny")
        local.add_object()
        with RemoteSession(url, SAMPLE, model="tiny") as s:
            s.add_object()
            for call in (lambda x: x.click(0, (5000, 0, 0)), lambda x: x.click(7, (5, 5, 5)),
                         lambda x: x.click(0, (5, 5, float("nan"))), lambda x: x.undo(0),
                         lambda x: x.set_inference(3, True), lambda x: x.set_box(0, (1, 1, 1), (1, 9, 9))):
                w = _local_error(lambda: call(local))
                with pytest.raises(sam3d.Error) as e:
                    call(s)
                assert (e.value.name, e.value.status, e.value.message) == (w.name, w.status, w.message)
            assert w.name == "SAM3D_STATUS_INVALID_ARGUMENT"
            # the session lives on after its errors
            assert s.click(0, SAMPLE_CLICK) == local.click(0, SAMPLE_CLICK)


def test_a_negative_click_on_a_package_without_them_is_unsupported(server):
    with RemoteSession("http://" + server.http_url, SAMPLE, model="tiny") as s:
        s.add_object()
        assert "negative" not in s.prompts
        with pytest.raises(sam3d.Error) as e:
            s.click(0, SAMPLE_CLICK, positive=False)
        assert e.value.name == "SAM3D_STATUS_UNSUPPORTED"


def _raw_infer(server, cid, start=False, end=False, op="info", model="tiny", **inputs):
    client = th.InferenceServerClient(server.http_url)
    tensors = []
    for name, value in [("OP", op), *inputs.items()]:
        arr = np.array([[value.encode() if isinstance(value, str) else value]], dtype=object)
        t = th.InferInput(name, list(arr.shape), wire.INPUTS[name])
        t.set_data_from_numpy(arr)
        tensors.append(t)
    try:
        r = client.infer(model, tensors, sequence_id=cid, sequence_start=start, sequence_end=end)
    except th.InferenceServerException as e:   # Triton's own refusal of a sequence it does not know
        if "START flag" in str(e):
            return "SAM3D_STATUS_INVALID_ARGUMENT", "no session (Triton: " + str(e) + ")"
        raise
    return r.as_numpy("STATUS").ravel()[0].decode(), r.as_numpy("MESSAGE").ravel()[0].decode()


def test_requests_without_a_session(server):
    # Triton itself refuses a sequence that never started: the client names it
    with RemoteSession("http://" + server.http_url, SAMPLE, model="tiny") as s:
        own, s._cid = s._cid, 123456789
        with pytest.raises(SessionLost) as e:
            s.add_object()
        assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT" and "resume()" in e.value.message
        s._cid = own
    # a START without a volume, an unknown op: the model's own answers
    assert _raw_infer(server, 424242, start=True, end=True, op="start")[0] == "SAM3D_STATUS_INVALID_ARGUMENT"
    status, message = _raw_infer(server, 424243, start=True, end=True, op="explode")
    assert status == "SAM3D_STATUS_INVALID_ARGUMENT" and "OP 'explode'" in message
    # a sequence whose START was refused holds no session
    status, message = _raw_infer(server, 424244, start=True, op="start")
    assert status == "SAM3D_STATUS_INVALID_ARGUMENT"
    status, message = _raw_infer(server, 424244, end=True, op="info")
    assert status == "SAM3D_STATUS_INVALID_ARGUMENT" and message.startswith("no session")


def test_end_frees_the_session(server):
    s = RemoteSession("http://" + server.http_url, SAMPLE, model="limited")
    cid = s._cid
    s.close()
    with pytest.raises(ValueError):
        s.add_object()
    t = RemoteSession("http://" + server.http_url, SAMPLE, model="limited")
    own, t._cid = t._cid, cid
    with pytest.raises(SessionLost):
        t.add_object()
    t._cid = own
    t.close()


# -- limits, timeouts, vanished clients, memory -------------------------------------------------

def test_failed_requests_keep_a_session_alive(server):
    with RemoteSession("http://" + server.http_url, SAMPLE, model="limited") as s:
        o = s.add_object()
        t = time.monotonic()
        while time.monotonic() - t < LIMITED_TIMEOUT * 2:
            with pytest.raises(sam3d.Error):
                s.click(o, (5000, 0, 0))
            time.sleep(LIMITED_TIMEOUT / 4)
        assert s.click(o, SAMPLE_CLICK).voxels > 0


def test_string_correlation_ids(server):
    assert _raw_infer(server, "study-7/series-2", start=True, op="start",
                      VOLUME=open(SAMPLE, "rb").read())[0] == wire.OK
    assert _raw_infer(server, "study-7/series-2", op="info")[0] == wire.OK
    assert _raw_infer(server, "study-7/series-2", end=True, op="end")[0] == wire.OK


def test_voxel_limit_refuses_before_decoding(server):
    import gzip
    import struct
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 400, 400, 400, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)            # uint8
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352)
    hdr[344:348] = b"n+1\0"
    small = gzip.compress(bytes(hdr) + bytes(4) + bytes(1 << 20))   # declares 64 M voxels in 1 KB
    with pytest.raises(sam3d.Error) as e:
        RemoteSession("http://" + server.http_url, small, model="limited")
    assert e.value.name == "SAM3D_STATUS_TOO_LARGE" and str(LIMITED_VOXELS) in e.value.message


def test_a_lost_answer_is_settled_by_the_next_call(server, local_models):
    local = local_session(local_models, "tiny")
    lo_obj = local.add_object()
    with RemoteSession("http://" + server.http_url, SAMPLE, model="tiny") as s:
        o = s.add_object()
        send = s._send

        def lose_answer(op, *a, **k):
            out = send(op, *a, **k)
            if op == "click":
                s._send = send
                raise sam3d.Error(3, "connection reset (test)", name="SAM3D_STATUS_IO")
            return out

        s._send = lose_answer
        with pytest.raises(sam3d.Error) as e:
            s.click(o, SAMPLE_CLICK)
        assert e.value.name == "SAM3D_STATUS_IO"
        local.click(lo_obj, SAMPLE_CLICK)
        # the server did the click: the next call learns so and catches up, history included
        assert s.click(o, (100, 96, 11)) == local.click(lo_obj, (100, 96, 11))
        assert s.mask(o).tobytes() == local.mask(lo_obj).tobytes()
        assert [op for op, _ in s._history] == ["add_object", "click", "click"]


def test_resume_ends_the_old_sequence(server):
    with RemoteSession("http://" + server.http_url, SAMPLE, model="limited") as s:
        s.click(s.add_object(), SAMPLE_CLICK)
        old = s._cid
        s.resume()
        assert s._cid != old and s.server_info["live_sessions"] == 1
        status, message = _raw_infer(server, old, op="info", model="limited")
        assert status == "SAM3D_STATUS_INVALID_ARGUMENT" and message.startswith("no session")


def test_session_limit_refuses_with_busy_and_recovers(server):
    url = "http://" + server.http_url
    a, b = RemoteSession(url, SAMPLE, model="limited"), RemoteSession(url, SAMPLE, model="limited")
    try:
        with pytest.raises(sam3d.Error) as e:
            RemoteSession(url, SAMPLE, model="limited")
        assert e.value.name == "SAM3D_STATUS_BUSY" and "maximum of 2 live sessions" in e.value.message
        a.close()
        c = RemoteSession(url, SAMPLE, model="limited")   # the refused START left no slot or session
        assert c.server_info["live_sessions"] == 2
        c.close()
    finally:
        a.close()
        b.close()


def test_idle_timeout_ends_the_session_and_resume_replays(server):
    s = RemoteSession("grpc://" + server.grpc_url, SAMPLE, model="limited")
    o = s.add_object()
    s.click(o, SAMPLE_CLICK)
    before = s.mask(o)
    time.sleep(LIMITED_TIMEOUT + 1.5)
    with pytest.raises(SessionLost) as e:
        s.click(o, (100, 96, 11))
    assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT"
    s.resume()
    assert s.mask(o).tobytes() == before.tobytes() == s.fetch_mask(o).tobytes()
    s.click(o, (100, 96, 11))
    s.close()


_CLIENT = """
import sys, time
from sam3d.remote import RemoteSession
s = RemoteSession(sys.argv[1], sys.argv[2], model="limited")
s.click(s.add_object(), (95, 96, 11))
print("ready", flush=True)
time.sleep(600)
"""


def test_a_killed_client_leaves_no_session_behind(server):
    p = subprocess.Popen([sys.executable, "-c", _CLIENT, "http://" + server.http_url, SAMPLE],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with RemoteSession("http://" + server.http_url, SAMPLE, model="limited") as s:
            assert s.server_info["live_sessions"] == 2
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(LIMITED_TIMEOUT + 1.5)
    with RemoteSession("http://" + server.http_url, SAMPLE, model="limited") as s:
        assert s.server_info["live_sessions"] == 1


def test_rss_returns_to_baseline_after_fifty_sessions(server):
    url = "http://" + server.http_url

    def one():
        with RemoteSession(url, SAMPLE, model="limited") as s:
            s.click(s.add_object(), SAMPLE_CLICK)
            return s.server_info["pid"]

    pids = {one() for _ in range(5)}   # arenas and caches reach their working size
    assert len(pids) == 1, "limited has one instance"
    pid = pids.pop()
    base = launch.rss_bytes(pid)
    for _ in range(50):
        one()
    after = launch.rss_bytes(pid)
    print(f"stub RSS {base / 2**20:.0f} MB before, {after / 2**20:.0f} MB after 50 sessions")
    assert after < base + max(0.1 * base, 32 << 20), (base, after)


def test_a_server_restart_loses_nothing_the_client_needs(tmp_path, local_models):
    repo = launch.write_repository(str(tmp_path / "repository"), {"tiny": TINY}, instances=1, threads=1)
    srv = launch.Server(repo, str(tmp_path)).wait_ready(["tiny"])
    try:
        s = RemoteSession("http://" + srv.http_url, SAMPLE, model="tiny")
        o = s.add_object()
        s.click(o, SAMPLE_CLICK)
        s.click(o, (100, 96, 11))
        s.undo(o)
        srv.stop()
        srv = launch.Server(repo, str(tmp_path), http_port=srv.http_port, grpc_port=srv.grpc_port).wait_ready(["tiny"])
        with pytest.raises(SessionLost):
            s.redo(o)
        s.resume()
        s.redo(o)
        local = local_session(local_models, "tiny")
        lo = local.add_object()
        local.click(lo, SAMPLE_CLICK)
        local.click(lo, (100, 96, 11))
        assert s.mask(o).tobytes() == local.mask(lo).tobytes() == s.fetch_mask(o).tobytes()
        s.close()
    finally:
        srv.stop()
