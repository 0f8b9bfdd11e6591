"""The server's session table without Triton: malformed requests are answered, never raised."""
import json

import numpy as np
import pytest
import sam3d
from sam3d import hosting, wire

from conftest import SAMPLE, SAMPLE_CLICK, TINY


@pytest.fixture(scope="module")
def table():
    t = hosting.SessionTable(sam3d.Model(sam3d.Runtime(), TINY, threads=1), max_sessions=3, idle_timeout=60)
    yield t
    t.close()


def call(table, cid, op, start=False, end=False, **inputs):
    req = {"OP": np.array([op.encode()], object)}
    for k, v in inputs.items():
        req[k] = np.array([v], object) if isinstance(v, bytes) else np.asarray(v)
    out = table.handle(cid, start, end, req)
    assert set(out) == set(wire.OUTPUTS)
    return out["STATUS"][0].decode(), out["MESSAGE"][0].decode(), out


def raw_start(table, cid, array, geometry=None, dtype=None):
    g = geometry if geometry is not None else wire.geometry_values(array.shape, (1, 1, 1), (0, 0, 0), np.eye(3))
    return call(table, cid, "start", start=True, VOLUME=array.tobytes(order="F"),
                VOLUME_DTYPE=np.array([(dtype or array.dtype.name).encode()], object), GEOMETRY=g)


@pytest.mark.parametrize("inputs, words", [
    ({"GEOMETRY": np.zeros(17)}, "18"),
    ({"GEOMETRY": wire.geometry_values((4, 4, 0), (1, 1, 1), (0, 0, 0), np.eye(3))}, "dims"),
    ({"GEOMETRY": wire.geometry_values((4, 4, 4), (1, 1, 1), (0, 0, np.nan), np.eye(3))}, "finite"),
    ({"GEOMETRY": wire.geometry_values((5, 4, 4), (1, 1, 1), (0, 0, 0), np.eye(3))}, "need"),
    ({"VOLUME_DTYPE": np.array([b"complex64"], object)}, "VOLUME_DTYPE"),
])
def test_malformed_raw_volumes_are_invalid_arguments(table, inputs, words):
    a = np.zeros((4, 4, 4), np.int16)
    req = {"VOLUME": a.tobytes(), "VOLUME_DTYPE": np.array([b"int16"], object),
           "GEOMETRY": wire.geometry_values((4, 4, 4), (1, 1, 1), (0, 0, 0), np.eye(3)), **inputs}
    status, message, out = call(table, 11, "start", start=True, **req)
    assert status == "SAM3D_STATUS_INVALID_ARGUMENT" and words in message, message
    assert out["PATCH"].size == 0 and not out["RESULT"].any()
    assert json.loads(out["INFO"][0])["live_sessions"] == 0


def test_a_geometry_the_library_refuses_keeps_its_name(table):
    a = np.zeros((4, 4, 4), np.int16)
    g = wire.geometry_values((4, 4, 4), (1, 1, 1), (0, 0, 0), np.zeros((3, 3)))   # singular direction
    with pytest.raises(sam3d.Error) as local:
        sam3d.Volume.from_array(a, geometry=sam3d.Geometry((4, 4, 4), (1, 1, 1), (0, 0, 0), np.zeros((3, 3))))
    status, message, _ = raw_start(table, 12, a, g)
    assert (status, message) == (local.value.name, local.value.message)
    assert "direction" in message


def test_malformed_prompts(table):
    with open(SAMPLE, "rb") as f:
        assert call(table, 13, "start", start=True, VOLUME=f.read())[0] == wire.OK
    assert call(table, 13, "add_object")[0] == wire.OK
    for op, inputs, words in [
        ("click", {"OBJECT": [0], "POINT": [1.0, 2.0]}, "3 values in POINT"),
        ("click", {"POINT": [1.0, 2.0, 3.0]}, "needs the input OBJECT"),
        ("click", {"OBJECT": [0, 1], "POINT": [1.0, 2.0, 3.0]}, "OBJECT holds 2"),
        ("click", {"OBJECT": [0], "POINT": [1.0, 2.0, 3.0], "COORD": np.array([b"xyz"], object)}, "COORD"),
        ("set_box", {"OBJECT": [0], "POINT": [1.0, 2.0, 3.0]}, "6 values"),
        ("set_mask", {"OBJECT": [0], "MASK": np.zeros(5, np.uint8)}, "MASK"),
        ("set_inference", {"SETTINGS": [8, 1]}, "SETTINGS"),
    ]:
        status, message, _ = call(table, 13, op, **inputs)
        assert status == "SAM3D_STATUS_INVALID_ARGUMENT" and words in message, (op, message)
    status, _, out = call(table, 13, "click", OBJECT=[0], POINT=np.asarray(SAMPLE_CLICK, float))
    assert status == wire.OK
    lo, hi = out["RESULT"][1:4], out["RESULT"][4:7]
    mask = np.zeros((192, 192, 20), np.uint8)
    wire.unpack_into(mask, lo, hi, out["PATCH"])
    assert mask.sum() == out["RESULT"][0]
    assert call(table, 13, "end", end=True)[0] == wire.OK
    assert len(table) == 0


def test_limit_reap_and_restart(table):
    a = np.zeros((8, 8, 8), np.uint8)
    for cid in (21, 22, 23):
        assert raw_start(table, cid, a)[0] == wire.OK
    status, message, _ = raw_start(table, 24, a)
    assert status == "SAM3D_STATUS_BUSY" and "maximum of 3" in message
    # a START on a live ID replaces its session rather than counting twice
    assert raw_start(table, 23, a)[0] == wire.OK and len(table) == 3
    assert table.reap(now=1e18) == 3 and len(table) == 0
    assert call(table, 21, "info")[1].startswith("no session for correlation ID 21")


def test_pack_round_trip():
    rng = np.random.default_rng(0)
    m = (rng.random((9, 7, 5)) > 0.5).astype(np.uint8)
    lo, hi = (2, 1, 0), (9, 6, 3)
    out = np.zeros_like(m)
    wire.unpack_into(out, lo, hi, wire.pack(m, lo, hi))
    assert np.array_equal(out[2:9, 1:6, 0:3], m[2:9, 1:6, 0:3]) and out.sum() == m[2:9, 1:6, 0:3].sum()
    with pytest.raises(ValueError):
        wire.unpack_into(out, lo, hi, np.zeros(3, np.uint8))
    assert wire.pack(m, (3, 3, 3), (3, 9, 9)).size == 0


def test_model_parameters_take_only_yes_no_values_and_reach_the_model(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        hosting.open_table({"package": TINY, "device": "openvino", "bf16": "maybe", "warm_up": "0"},
                           idle_timeout=60, base_dir=".", name="t")
    t = hosting.open_table({"package": TINY, "device": "openvino", "bf16": "off", "threads": "1", "warm_up": "no",
                            "openvino_cache_dir": str(tmp_path / "ov")}, idle_timeout=60, base_dir=".", name="t")
    try:
        info = t.model.info
        # OpenVINO where this ONNX Runtime has it (fp32: bf16 was off), else the CPU with the reason
        if info["provider"] == "CPU":
            assert info["provider_note"].startswith("OpenVINO unavailable"), info
        else:
            assert info["provider"] == "OpenVINO fp32", info
            assert any((tmp_path / "ov").iterdir())
    finally:
        t.close()
