"""The ctypes binding: geometry round trips, errors carry the library's status and message, masks
equal the engine's command line, 1000 session open/close cycles do not leak, and the GPU and
OpenVINO devices run or fall back to the CPU with the reason."""
import json
import os
import subprocess
import threading
import warnings

import nibabel as nib
import numpy as np
import pytest

import sam3d

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "models", "demo-lesion")
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")
SAMPLE = os.path.join(REPO, "examples", "data", "sample_ct_lesion")
BIN = os.path.join(REPO, "target", "release", "examples")


@pytest.fixture(scope="module")
def rt():
    return sam3d.Runtime()


@pytest.fixture(scope="module")
def model(rt):
    return sam3d.Model(rt, DEMO, threads=1)


def _oblique():
    t = np.deg2rad(12.0)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, -1.0]])


def test_geometry_round_trips(tmp_path):
    a = np.zeros((7, 9, 5), np.int16)
    d = _oblique()
    v = sam3d.Volume.from_array(a, spacing=(0.7, 1.3, 2.5), origin=(10.0, -20.0, 30.5), direction=d)
    g = v.geometry
    assert g.dims == (7, 9, 5)
    np.testing.assert_allclose(g.spacing, (0.7, 1.3, 2.5))
    np.testing.assert_allclose(g.origin, (10.0, -20.0, 30.5))
    np.testing.assert_allclose(g.direction, d, atol=1e-12)
    # NIfTI: the geometry libsam3d reads equals nibabel's affine (RAS) converted to LPS
    img = nib.load(SAMPLE + ".nii.gz")
    gv = sam3d.Volume.read_nifti(SAMPLE + ".nii.gz").geometry
    np.testing.assert_allclose(gv.ras_affine(), img.affine, atol=1e-4)
    gn = sam3d.Geometry.from_ras_affine(img.affine, img.shape)
    np.testing.assert_allclose(gn.index_to_lps((3, 4, 5)), gv.index_to_lps((3, 4, 5)), atol=1e-4)
    np.testing.assert_allclose(gv.lps_to_index(gv.index_to_lps((3.5, 4, 5))), (3.5, 4, 5), atol=1e-9)


def test_errors_carry_status_and_message(rt, model, tmp_path):
    with pytest.raises(sam3d.Error) as e:
        sam3d.Model(rt, str(tmp_path / "no-such-package"))
    assert e.value.name == "SAM3D_STATUS_BAD_MODEL" and e.value.status == 5 and "no-such-package" in e.value.message
    with pytest.raises(sam3d.Error) as e:
        sam3d.Volume.read_nifti(str(tmp_path / "missing.nii.gz"))
    assert e.value.name == "SAM3D_STATUS_IO"
    (tmp_path / "garbage.nii").write_bytes(b"not a nifti file" * 40)
    with pytest.raises(sam3d.Error) as e:
        sam3d.Volume.read_nifti(str(tmp_path / "garbage.nii"))
    assert e.value.name == "SAM3D_STATUS_BAD_VOLUME"
    with pytest.raises(sam3d.Error) as e:
        sam3d.Volume.from_array(np.zeros((4, 4, 4), np.float32), spacing=(1.0, float("nan"), 1.0))
    assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT"
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(sam3d.Error) as e:
        sam3d.Session(model, sam3d.Volume.from_array(nan))
    assert e.value.name == "SAM3D_STATUS_NON_FINITE"
    with sam3d.Session(model, sam3d.Volume.from_array(np.zeros((8, 8, 8), np.int16))) as s:
        obj = s.add_object()
        with pytest.raises(sam3d.Error) as e:
            s.click(obj, (100.0, 1.0, 1.0))
        assert e.value.name == "SAM3D_STATUS_OUT_OF_BOUNDS"
        with pytest.raises(sam3d.Error) as e:
            s.undo(obj)
        assert e.value.name == "SAM3D_STATUS_NOTHING_TO_DO"
    with pytest.raises(ValueError):
        s.add_object()   # closed
    with pytest.raises(TypeError):
        sam3d.Volume.from_array(np.zeros((4, 4, 4), np.complex64))


def test_masks_equal_the_command_line_and_coordinates_agree(rt, model, tmp_path):
    meta = json.load(open(SAMPLE + ".json"))
    click = meta["click_ijk"]
    out = tmp_path / "cli.nii.gz"
    r = subprocess.run([os.path.join(BIN, "segment"), "--model", DEMO, "--input", SAMPLE + ".nii.gz",
                        "--click", ",".join(map(str, click)), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cli = np.asarray(nib.load(str(out)).dataobj)
    img = nib.load(SAMPLE + ".nii.gz")
    arr = np.asarray(img.dataobj)                       # int16 [i, j, k], borrowed without a copy
    geom = sam3d.Geometry.from_ras_affine(img.affine, arr.shape)
    stages = []
    vol = sam3d.Volume.from_array(arr, geometry=geom)
    with sam3d.Session(model, vol, progress=lambda st, done: stages.append((st, done))) as s:
        obj = s.add_object()
        res = s.click(obj, click)
        m1 = s.mask(obj)
        assert res.encoded and res.voxels == int(m1.sum()) > 0
        assert ("encode", True) in stages and ("decode", True) in stages
        np.testing.assert_array_equal(m1, cli)
        ras = (img.affine @ np.r_[click, 1.0])[:3]
        s.undo(obj)
        assert s.mask(obj).sum() == 0
        s.click(obj, ras, coord="ras")
        np.testing.assert_array_equal(s.mask(obj), cli)
        s.undo(obj)
        s.click(obj, geom.index_to_lps(click), coord="lps")
        np.testing.assert_array_equal(s.mask(obj), cli)
        # the demo package's refinements are in force; a session may change them for its next clicks
        assert s.inference == (8, True)
        s.set_inference(1, False)
        assert s.inference == (1, False)
        s.undo(obj)
        res = s.click(obj, click)
        assert res.encoded  # a new flip count re-encodes
        one = s.mask(obj)
        assert int((one != cli).sum()) > 0
        with pytest.raises(sam3d.Error) as e:
            s.set_inference(3, True)
        assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT" and s.inference == (1, False)
    r = subprocess.run([os.path.join(BIN, "segment"), "--model", DEMO, "--input", SAMPLE + ".nii.gz",
                        "--click", ",".join(map(str, click)), "--out", str(out), "--flips", "1",
                        "--keep-clicked", "0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(one, np.asarray(nib.load(str(out)).dataobj))


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_leak_over_1000_sessions(rt):
    model = sam3d.Model(rt, TINY, threads=1)
    arr = np.random.default_rng(0).normal(0, 50, (40, 40, 40)).astype(np.float32)
    vol = sam3d.Volume.from_array(arr, spacing=(2.0, 2.0, 2.0))

    def cycles(n, click_every=50):
        for i in range(n):
            s = sam3d.Session(model, vol)
            obj = s.add_object()
            if i % click_every == 0:
                s.click(obj, (20, 20, 20))
                s.mask(obj)
            s.close()
    cycles(100)                  # warm-up: ONNX Runtime's arenas, allocator pools
    before = _rss_kb()
    cycles(1000)
    grown = _rss_kb() - before
    assert grown < 2 * 1024, f"RSS grew by {grown} kB over 1000 session cycles"   # measured: about 60 kB


def test_gpu_settings_are_checked_and_fall_back_to_cpu(rt, tmp_path):
    cache = tmp_path / "trt"
    m = sam3d.Model(rt, TINY, device="tensorrt", threads=1, gpu_memory_limit=1 << 30, trt_fp16=True, cuda_tf32=True,
                    trt_cache_dir=str(cache))
    info = m.info
    assert info["provider"] == "TensorRT" or "TensorRT unavailable" in info["provider_note"]
    assert cache.is_dir()
    with pytest.raises(sam3d.Error) as e:
        sam3d.Model(rt, TINY, device="cuda", device_id=-1)
    assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT"
    (tmp_path / "file").write_text("x")
    with pytest.raises(sam3d.Error) as e:
        sam3d.Model(rt, TINY, device="tensorrt", trt_cache_dir=str(tmp_path / "file" / "sub"))
    assert e.value.name == "SAM3D_STATUS_IO" and "TensorRT cache folder" in e.value.message


def _cpu_has_bf16():
    """What libsam3d reads before computing in bf16: AMX-BF16 or AVX512-BF16 among the CPU flags."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _blob_mask(model):
    """Two clicks in a bright blob at the package's spacing only (zoom-out off), so that both graphs
    run on the model's provider."""
    i, j, k = np.meshgrid(np.arange(48), np.arange(40), np.arange(30), indexing="ij")
    r2 = ((i - 24) / 8.0) ** 2 + ((j - 18) / 6.0) ** 2 + ((k - 15) / 4.0) ** 2
    arr = (40.0 + 120.0 * np.exp(-r2) + 3.0 * ((i * 7 + j * 13 + k * 3) % 11)).astype(np.float32)
    vol = sam3d.Volume.from_array(arr, spacing=(1.5, 1.5, 2.5))
    with sam3d.Session(model, vol) as s:
        s.set_zoom_out(1)
        obj = s.add_object()
        s.click(obj, (24, 18, 15))
        s.click(obj, (26, 19, 15))
        return s.mask(obj)


def test_openvino_runs_or_falls_back_to_cpu_with_the_reason(rt, tmp_path):
    """device="openvino" runs on OpenVINO, or (an ONNX Runtime without OpenVINO for this CPU) on the
    CPU provider with the reason and the CPU's mask; which one is read from the note, and the
    provider must then be exactly that branch's. On OpenVINO, bf16 runs where the CPU has AMX-BF16
    or AVX512-BF16; elsewhere fp32 with a note saying so. The OpenVINO settings do nothing on the
    CPU device, and a cache folder that cannot be made is an error."""
    want = _blob_mask(sam3d.Model(rt, TINY, threads=1))
    assert want.sum() > 0
    has_bf16 = _cpu_has_bf16()
    for bf16 in (False, True):
        cache = tmp_path / f"openvino-bf16-{bf16}"
        m = sam3d.Model(rt, TINY, device="openvino", threads=1, bf16=bf16, openvino_cache_dir=str(cache))
        provider, note = m.info["provider"], m.info["provider_note"]
        assert cache.is_dir()   # made for the OpenVINO device, whichever provider runs
        got = _blob_mask(m)
        fell_back = note.startswith("OpenVINO unavailable, running on CPU: ")
        assert provider.startswith("OpenVINO") != fell_back, (provider, note)
        if fell_back:
            assert provider == "CPU" and len(note) > len("OpenVINO unavailable, running on CPU: "), note
            np.testing.assert_array_equal(got, want)
            continue
        runs_bf16 = bf16 and has_bf16
        assert provider == ("OpenVINO bf16" if runs_bf16 else "OpenVINO fp32"), (bf16, provider, note)
        assert ("AVX512-BF16" in note) == (bf16 and not has_bf16), note
        if bf16 and not has_bf16:
            assert "bf16" in note and "fp32" in note, note
        # the fixture's encoder has ONNX Runtime's own attention nodes, which OpenVINO does not take
        assert "standard-operator variant" in note, note
        assert any(cache.iterdir()), "OpenVINO got the cache folder: it holds the compiled graphs"
        dice = 2.0 * (got.astype(bool) & want.astype(bool)).sum() / (got.sum() + want.sum())
        assert dice >= (0.99 if runs_bf16 else 0.999), (provider, dice)

    unused = tmp_path / "cpu-cache"
    info = sam3d.Model(rt, TINY, threads=1, bf16=True, openvino_cache_dir=str(unused)).info
    assert (info["provider"], info["provider_note"]) == ("CPU", "") and not unused.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(sam3d.Error) as e:
        sam3d.Model(rt, TINY, device="openvino", openvino_cache_dir=str(tmp_path / "file" / "sub"))
    assert e.value.name == "SAM3D_STATUS_IO" and "OpenVINO cache folder" in e.value.message


def test_warm_up_in_a_thread_yields_to_a_click(rt):
    """A warm-up on a worker thread and a click at once: the click's mask is the one a model never
    warmed up gives; the warm-up ends finished or stopped by the click (which comes first is up to
    the threads), and a warm-up with nothing else running finishes."""
    meta = json.load(open(SAMPLE + ".json"))
    click = meta["click_ijk"]

    def segment(m):
        with sam3d.Volume.read_nifti(SAMPLE + ".nii.gz") as vol, sam3d.Session(m, vol) as s:
            obj = s.add_object()
            s.click(obj, click)
            return s.mask(obj)

    with sam3d.Model(rt, DEMO, threads=1) as cold:
        want = segment(cold)
    assert want.sum() > 0
    with sam3d.Model(rt, DEMO, threads=1) as m:
        ended = []

        def warm():
            try:
                m.warm_up()
                ended.append("finished")
            except sam3d.Error as e:
                ended.append(e.name)

        t = threading.Thread(target=warm)
        t.start()
        got = segment(m)
        t.join()
        assert ended[0] in ("finished", "SAM3D_STATUS_CANCELLED"), ended
        np.testing.assert_array_equal(got, want)
        m.cancel_warm_up()
        m.warm_up()
        np.testing.assert_array_equal(segment(m), want)


def test_a_click_that_finds_nothing_warns_and_says_so(rt):
    """A click whose mask is empty returns normally, with `empty` set and an EmptyMaskWarning; an
    undo back to no clicks is empty without a warning."""
    model = sam3d.Model(rt, TINY, threads=1)
    # air, 2x2x2 voxels of 8 mm: the tiny fixture's mask is empty wherever it is clicked
    air = sam3d.Volume.from_array(np.full((2, 2, 2), -1000, np.int16), spacing=(8.0, 8.0, 8.0))
    with sam3d.Session(model, air) as s:
        obj = s.add_object()
        with pytest.warns(sam3d.EmptyMaskWarning, match="found nothing") as caught:
            r = s.click(obj, (1, 1, 1))
        assert len(caught) == 1 and issubclass(sam3d.EmptyMaskWarning, UserWarning)
        assert r.empty and r.voxels == 0 and s.mask(obj).sum() == 0
    noise = np.random.default_rng(0).normal(0, 50, (40, 40, 40)).astype(np.float32)
    with sam3d.Session(model, sam3d.Volume.from_array(noise, spacing=(2.0, 2.0, 2.0))) as s:
        obj = s.add_object()
        with warnings.catch_warnings():
            warnings.simplefilter("error", sam3d.EmptyMaskWarning)
            r = s.click(obj, (20, 20, 20))
            assert not r.empty and r.voxels > 0
            r = s.undo(obj)                   # back to no clicks: empty, as expected
            assert r.empty and r.voxels == 0
            r = s.redo(obj)
            assert not r.empty and r.voxels > 0


def test_prompts_boxes_segments_and_zoom_out(rt, tmp_path):
    """The binding's prompts against the command line: a box, a starting segment with a click, the
    zoom-out setting; negative clicks raise UNSUPPORTED on a package without them and work on one
    with them."""
    tiny = sam3d.Model(rt, TINY, threads=1)
    labelled = sam3d.Model(rt, os.path.join(os.path.dirname(TINY), "tiny-labels"), threads=1)
    assert tiny.prompts == {"positive", "box", "mask"}
    assert labelled.prompts == {"positive", "negative", "box", "mask"}
    img = nib.load(SAMPLE + ".nii.gz")
    arr = np.asarray(img.dataobj)
    geom = sam3d.Geometry.from_ras_affine(img.affine, arr.shape)
    lo, hi = (40.0, 50.0, 2.0), (120.0, 130.0, 17.0)
    out = tmp_path / "box.nii.gz"
    r = subprocess.run([os.path.join(BIN, "segment"), "--model", TINY, "--input", SAMPLE + ".nii.gz",
                        "--box", ",".join(map(str, lo + hi)), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cli = np.asarray(nib.load(str(out)).dataobj)
    vol = sam3d.Volume.from_array(arr, geometry=geom)
    with sam3d.Session(tiny, vol) as s:
        assert s.zoom_out == 4
        o = s.add_object()
        res = s.set_box(o, lo, hi)
        np.testing.assert_array_equal(s.mask(o), cli)
        assert res.zoom > 1.0 and res.voxels == int(cli.sum())
        with pytest.raises(sam3d.Error) as e:
            s.click(o, (80, 90, 10), positive=False)
        assert e.value.name == "SAM3D_STATUS_UNSUPPORTED"
        np.testing.assert_array_equal(s.mask(o), cli)
        with pytest.raises(sam3d.Error) as e:
            s.set_zoom_out(3)
        assert e.value.name == "SAM3D_STATUS_INVALID_ARGUMENT" and s.zoom_out == 4
        s.set_inference(1, False, zoom_out=1)
        assert s.zoom_out == 1
        # a starting segment, then a click that adds to it; undo returns to the segment
        seg = np.zeros(arr.shape, np.uint8)
        seg[10:20, 10:20, 3:6] = 1
        o2 = s.add_object()
        r0 = s.set_mask(o2, seg * 9)
        assert r0.voxels == int(seg.sum()) and r0.zoom == 0.0
        np.testing.assert_array_equal(s.mask(o2), seg)
        r1 = s.click(o2, (80, 90, 10))
        m = s.mask(o2)
        assert r1.zoom == 1.0 and (m >= seg).all() and m.sum() > seg.sum()
        s.undo(o2)
        np.testing.assert_array_equal(s.mask(o2), seg)
        with pytest.raises(ValueError):
            s.set_mask(o2, seg[:-1])
    with sam3d.Session(labelled, vol) as s:
        s.set_zoom_out(1)
        o = s.add_object()
        s.click(o, (80, 90, 10))
        pos = s.mask(o)
        s.click(o, (90, 90, 10), positive=False)
        assert not np.array_equal(s.mask(o), pos)


def test_mask_box_and_write_mask(rt, model, tmp_path):
    """mask_box is that box of the whole mask; write_mask writes the command line's file."""
    with sam3d.Session(model, sam3d.Volume.read_nifti(SAMPLE + ".nii.gz")) as s:
        o = s.add_object()
        r = s.click(o, (95, 96, 11))
        whole = s.mask(o)
        (a, b, c), (d, e, f) = r.changed_lo, r.changed_hi
        np.testing.assert_array_equal(s.mask_box(o, r.changed_lo, r.changed_hi), whole[a:d, b:e, c:f])
        np.testing.assert_array_equal(s.mask_box(o, (0, 0, 0), whole.shape), whole)
        assert s.mask_box(o, (5, 5, 5), (5, 9, 9)).shape == (0, 4, 4)
        for lo, hi in [((0, 0, 0), (193, 1, 1)), ((-1, 0, 0), (1, 1, 1)), ((4, 0, 0), (3, 1, 1))]:
            with pytest.raises(sam3d.Error) as err:
                s.mask_box(o, lo, hi)
            assert err.value.name == "SAM3D_STATUS_OUT_OF_BOUNDS"
        out = tmp_path / "m.nii.gz"
        s.write_mask(o, str(out))
        np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), whole)
        with pytest.raises(sam3d.Error) as err:
            s.write_mask(o, str(tmp_path / "m.png"))
        assert err.value.name == "SAM3D_STATUS_INVALID_ARGUMENT" and not (tmp_path / "m.png").exists()
