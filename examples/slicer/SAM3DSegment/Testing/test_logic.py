"""SAM3DSegmentLogic on a real vtkMRMLScene (slicer-core, no application, no stand-in modules):
volume node in (read by Slicer's own storage node), markups point in RAS, segmentation node out
with the volume's geometry, the same voxels as libsam3d's command line gives."""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import slicer
import vtk
from vtkmodules.util import numpy_support

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from SAM3DSegmentLib import SAM3DSegmentLogic  # noqa: E402
from SAM3DSegmentLib.logic import DEVICES, NOTHING_FOUND, device_settings, stage_label  # noqa: E402

import sam3d  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
MODEL = os.path.join(REPO, "models", "demo-lesion")
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")
SAMPLE = os.path.join(REPO, "examples", "data", "sample_ct_lesion")
SEGMENT = os.path.join(REPO, "target", "release", "examples", "segment")
CLICK_IJK = (95.0, 96.0, 11.0)


def read_node(scene, path, cls="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(cls)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(path)
    assert storage.ReadData(node) == 1, path
    return node


def click_ras():
    """The sample's click in RAS, through libsam3d's reading of the NIfTI geometry."""
    g = sam3d.Volume.read_nifti(SAMPLE + ".nii.gz").geometry
    lps = g.index_to_lps(CLICK_IJK)
    return [-lps[0], -lps[1], lps[2]]


@pytest.fixture(scope="module")
def logic():
    stages = []
    lg = SAM3DSegmentLogic(MODEL, device="cuda", threads=1, progress=lambda s, d: stages.append((s, d)),
                           gpu_memory_limit=1 << 30, cuda_tf32=True)
    lg.stages = stages
    return lg


def test_segmentation_node_from_a_volume_and_a_point(logic, tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = read_node(scene, SAMPLE + ".nii.gz")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = click_ras()
    points.AddControlPointWorld(vtk.vtkVector3d(*ras))
    seg, segment_id, result = logic.segment(volume, points)
    assert seg.IsA("vtkMRMLSegmentationNode") and scene.GetNodeByID(seg.GetID()) is seg
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    # CUDA was asked for: on a machine without a GPU the fallback to CPU comes with its reason
    assert logic.provider == "CUDA" or (logic.provider == "CPU" and logic.provider_note)
    assert ("encode", True) in logic.stages and ("paste", True) in logic.stages

    mask = SAM3DSegmentLogic.segment_mask(seg, segment_id, volume)   # checks labelmap geometry == volume's
    assert mask.sum() == result.voxels > 100
    assert not result.empty and logic.message == f"{result.voxels} voxels"
    # the segment lies around the click, in RAS
    ijk_to_ras = SAM3DSegmentLogic.ijk_to_ras(volume)
    idx = np.argwhere(mask > 0)
    centre = (ijk_to_ras @ np.c_[idx, np.ones(len(idx))].T)[:3].mean(1)
    assert np.linalg.norm(centre - ras) < 15.0, (centre, ras)
    # the same voxels as the engine's command line, read back by Slicer on the same grid
    out = tmp_path / "engine.nii.gz"
    env = dict(os.environ)
    subprocess.run([SEGMENT, "--model", MODEL, "--input", SAMPLE + ".nii.gz", "--click",
                    ",".join(f"{v:.6f}" for v in ras), "--coord", "ras", "--out", str(out)], check=True,
                   capture_output=True, env=env)
    engine = read_node(scene, str(out), "vtkMRMLLabelMapVolumeNode")
    np.testing.assert_allclose(SAM3DSegmentLogic.ijk_to_ras(engine), ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(SAM3DSegmentLogic.volume_array(engine), mask)
    # the segment overlaps the lesion it was clicked in (accuracy itself: `make evaluate`)
    truth = SAM3DSegmentLogic.volume_array(read_node(scene, SAMPLE + "_truth.nii.gz", "vtkMRMLLabelMapVolumeNode"))
    assert (truth.astype(bool) & mask.astype(bool)).sum() > 0


def test_second_click_reuses_the_session_and_errors_are_clear(logic):
    scene = slicer.vtkMRMLScene()
    volume = read_node(scene, SAMPLE + ".nii.gz")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = click_ras()
    points.AddControlPointWorld(vtk.vtkVector3d(*ras))
    points.AddControlPointWorld(vtk.vtkVector3d(ras[0] + 2.0, ras[1], ras[2]))
    seg, first, r1 = logic.segment(volume, points, 0)
    seg2, second, r2 = logic.segment(volume, points, 1, segmentation_node=seg)
    assert seg2 is seg and first != second and seg.GetSegmentation().GetNumberOfSegments() == 2
    assert r1.encoded and not r2.encoded        # the cached encoder region served the second click
    with pytest.raises(ValueError):
        logic.segment(volume, points, 5)
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    far.AddControlPointWorld(vtk.vtkVector3d(5000.0, 0.0, 0.0))
    with pytest.raises(sam3d.Error) as e:
        logic.segment(volume, far)
    assert e.value.name == "SAM3D_STATUS_OUT_OF_BOUNDS"


def test_background_warm_up_neither_delays_nor_changes_a_click():
    """The module opens the model and warms it up when its settings are known; the user's click stops
    a running warm-up and gets the same segment as a model that never warmed up."""
    scene = slicer.vtkMRMLScene()
    volume = read_node(scene, SAMPLE + ".nii.gz")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPointWorld(vtk.vtkVector3d(*click_ras()))
    cold_seg, cold_id, _ = SAM3DSegmentLogic(MODEL, threads=1).segment(volume, points)
    cold = SAM3DSegmentLogic.segment_mask(cold_seg, cold_id, volume)

    warm = SAM3DSegmentLogic(MODEL, threads=1)
    thread = warm.start_warm_up()
    assert warm.start_warm_up() is thread           # one warm-up per logic
    seg, segment_id, _ = warm.segment(volume, points)
    thread.join(120)
    assert not thread.is_alive()
    assert warm.warm_up_outcome in ("done", "stopped"), warm.warm_up_outcome
    np.testing.assert_array_equal(SAM3DSegmentLogic.segment_mask(seg, segment_id, volume), cold)

    # stop_warm_up before a logic is replaced: returns once the thread has ended, whatever its stage
    other = SAM3DSegmentLogic(MODEL, threads=1)
    t2 = other.start_warm_up()
    other.stop_warm_up()
    assert not t2.is_alive() and other.warm_up_outcome in ("done", "stopped")
    SAM3DSegmentLogic(MODEL, threads=1).stop_warm_up()   # none started: nothing to stop, no error


def test_a_click_that_finds_nothing_says_so():
    """An empty mask is no error, but the logic's message (the module's status line) says the click
    found nothing, and the binding warns."""
    scene = slicer.vtkMRMLScene()
    # air, 2x2x2 voxels of 8 mm: the tiny fixture's mask is empty wherever it is clicked
    img = vtk.vtkImageData()
    img.SetDimensions(2, 2, 2)
    img.AllocateScalars(vtk.VTK_SHORT, 1)
    numpy_support.vtk_to_numpy(img.GetPointData().GetScalars())[:] = -1000
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "air")
    volume.SetAndObserveImageData(img)
    volume.SetSpacing(8.0, 8.0, 8.0)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPointWorld(vtk.vtkVector3d(4.0, 4.0, 4.0))
    logic = SAM3DSegmentLogic(TINY, threads=1)
    with pytest.warns(sam3d.EmptyMaskWarning, match="found nothing"):
        seg, segment_id, result = logic.segment(volume, points)
    assert result.empty and result.voxels == 0
    assert logic.message == NOTHING_FOUND and logic.message.startswith("the click found nothing")
    assert SAM3DSegmentLogic.segment_mask(seg, segment_id, volume).sum() == 0


def test_refine_box_start_from_segment_and_undo(logic):
    """The module's other prompts on one segment: a positive refinement updates the segment in place;
    a negative click on a package without them is refused and changes nothing; a markups ROI gives a
    segment inside its bounds; an existing segment is the start that clicks add to; undo steps back."""
    scene = slicer.vtkMRMLScene()
    volume = read_node(scene, SAMPLE + ".nii.gz")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = click_ras()
    points.AddControlPointWorld(vtk.vtkVector3d(*ras))
    points.AddControlPointWorld(vtk.vtkVector3d(ras[0] + 3.0, ras[1], ras[2]))
    assert not logic.accepts_negative                    # the demo package: positive clicks only
    seg, sid, r1 = logic.segment(volume, points, 0)
    first = SAM3DSegmentLogic.segment_mask(seg, sid, volume)
    seg2, sid2, r2 = logic.refine(volume, points, 1)
    assert (seg2, sid2) == (seg, sid) and seg.GetSegmentation().GetNumberOfSegments() == 1
    assert SAM3DSegmentLogic.segment_mask(seg, sid, volume).sum() == r2.voxels
    with pytest.raises(sam3d.Error) as e:
        logic.refine(volume, points, 1, positive=False)
    assert e.value.name == "SAM3D_STATUS_UNSUPPORTED"
    logic.undo(volume)
    np.testing.assert_array_equal(SAM3DSegmentLogic.segment_mask(seg, sid, volume), first)

    # a box: the ROI's bounds around the click, 40 mm wide; the segment stays inside them
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(*ras)
    roi.SetSize(40.0, 40.0, 30.0)
    bseg, bid, rb = logic.segment_box(volume, roi, segmentation_node=seg)
    assert bseg is seg and bid != sid and rb.voxels > 0
    box_mask = SAM3DSegmentLogic.segment_mask(seg, bid, volume)
    ijk_to_ras = SAM3DSegmentLogic.ijk_to_ras(volume)
    idx = np.argwhere(box_mask > 0)
    pts = (ijk_to_ras @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    assert (np.abs(pts - np.asarray(ras)) <= np.array([20.0, 20.0, 15.0]) + 1.0).all()

    # start from a segment drawn elsewhere; a click adds to it, in the same segment
    block = np.zeros_like(first)
    block[10:20, 10:20, 2:5] = 1
    _, start_id = logic.add_segment(volume, block, seg, "drawn")
    logic.start_from_segment(volume, seg, start_id)
    _, sid3, r3 = logic.refine(volume, points, 0)
    grown = SAM3DSegmentLogic.segment_mask(seg, start_id, volume)
    assert sid3 == start_id and (grown >= block).all() and grown.sum() > block.sum()
    logic.undo(volume)
    np.testing.assert_array_equal(SAM3DSegmentLogic.segment_mask(seg, start_id, volume), block)


def cpu_has_bf16():
    """What libsam3d reads before computing in bf16: AMX-BF16 or AVX512-BF16 among the CPU flags."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def test_openvino_and_bf16_reach_the_model(tmp_path):
    """The module's OpenVINO choice with its bf16 box ticked, as the widget passes it: the model runs
    on OpenVINO in bf16 where the CPU has it (fp32 with a note where not), or, where this ONNX
    Runtime has no OpenVINO for this CPU, on the CPU provider with the reason and the CPU's segment.
    bf16 and the compiled-model cache go with "openvino" only."""
    assert "openvino" in DEVICES
    cache = str(tmp_path / "openvino")
    base = {"gpu_memory_limit": 256 << 20, "cuda_tf32": False}
    for device in ("cpu", "cuda", "tensorrt"):
        assert device_settings(device, 256, False, True, cache) == base
    settings = device_settings("openvino", 256, False, True, cache)
    assert settings == {**base, "bf16": True, "openvino_cache_dir": cache}
    assert device_settings("openvino", 256, False, False, None) == {**base, "bf16": False}
    with pytest.raises(ValueError, match="openvino"):
        device_settings("npu")

    scene, volume, points = sample_scene()   # the scene must outlive its nodes
    cpu_seg, cpu_id, _ = SAM3DSegmentLogic(MODEL, threads=1).segment(volume, points)
    want = SAM3DSegmentLogic.segment_mask(cpu_seg, cpu_id, volume)

    lg = SAM3DSegmentLogic(MODEL, device="openvino", threads=1, **settings)
    assert os.path.isdir(cache)   # made by libsam3d for the OpenVINO device, whichever provider runs
    seg, segment_id, result = lg.segment(volume, points)
    got = SAM3DSegmentLogic.segment_mask(seg, segment_id, volume)
    if lg.provider_note.startswith("OpenVINO unavailable"):
        assert lg.provider == "CPU" and len(lg.provider_note) > len("OpenVINO unavailable"), lg.provider_note
        np.testing.assert_array_equal(got, want)
        return
    has = cpu_has_bf16()
    assert lg.provider == ("OpenVINO bf16" if has else "OpenVINO fp32"), (lg.provider, lg.provider_note)
    # bf16 asked for on a CPU without it: fp32, and the note says why; else no note
    assert ("AVX512-BF16" in lg.provider_note) == (not has) and (lg.provider_note == "") == has, lg.provider_note
    assert os.listdir(cache), "OpenVINO got the cache folder: it holds the compiled graphs"
    dice = 2.0 * (got.astype(bool) & want.astype(bool)).sum() / (got.sum() + want.sum())
    assert result.voxels > 100 and dice >= 0.99, (lg.provider, dice)


# ---- sessions on a Triton Inference Server (serve/triton) ----------------------------------------
# The server runs in its own environment (.venv-triton: nvidia-pytriton pins numpy below 2), started
# the way a user starts it: serve/triton/launch.py, which prints "serving ..." once the model is ready.
TRITON_PY = os.path.join(REPO, ".venv-triton", "bin", "python")
LAUNCH = os.path.join(REPO, "serve", "triton", "launch.py")
SERVER_START_TIMEOUT = 300.0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    """Processes whose parent is `pid` (the tritonserver that launch.py started)."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _stop(proc):
    """Stop launch.py and its server. SIGTERM to launch.py stops tritonserver gracefully (its models
    unload, their sessions, temporary folders and shared memory go); only if that hangs are both
    process groups killed: tritonserver runs in a session of its own, so launch.py's group alone
    would miss it. (SIGINT to launch.py would not do: a shell without job control starts background
    jobs with SIGINT ignored, and the tests may run under one.)"""
    groups = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    for pgid in ([proc.pid] if proc.poll() is None else []) + groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with the demo package as model "sam3d" on free loopback ports: its HTTP URL."""
    if not os.access(TRITON_PY, os.X_OK):
        pytest.fail(f"{TRITON_PY} is missing: `make triton-venv` makes it")
    work = tmp_path_factory.mktemp("triton")
    http_port, grpc_port = _free_port(), _free_port()
    # one instance, one ONNX Runtime thread: the server shares the machine with the local logic
    proc = subprocess.Popen([TRITON_PY, LAUNCH, "--model", f"sam3d={MODEL}", "--workdir", str(work),
                             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                             "--instances", "1", "--threads", "1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        said, deadline = [], time.monotonic() + SERVER_START_TIMEOUT
        while not (said and said[-1] and said[-1].startswith("serving")):
            try:
                said.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"launch.py did not say 'serving' in {SERVER_START_TIMEOUT:g} s: {''.join(said)}")
            if said[-1] is None:
                pytest.fail(f"launch.py exited with {proc.wait()}: {''.join(filter(None, said))}")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def remote(server):
    stages = []
    lg = SAM3DSegmentLogic(server=server, server_model="sam3d", progress=lambda s, d: stages.append((s, d)))
    lg.stages = stages
    yield lg
    lg.close()


@pytest.fixture(scope="module")
def local():
    return SAM3DSegmentLogic(MODEL, threads=1)


def sample_scene(offsets=((0.0, 0.0, 0.0),)):
    """A scene with the sample volume and a point list: the sample's click plus `offsets` (RAS, mm)."""
    scene = slicer.vtkMRMLScene()
    volume = read_node(scene, SAMPLE + ".nii.gz")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = click_ras()
    for d in offsets:
        points.AddControlPointWorld(vtk.vtkVector3d(*(np.asarray(ras) + d)))
    return scene, volume, points


def test_a_server_gives_the_local_segment(server, remote, local):
    """Same volume node, same click: the server's segment has the local logic's voxels; no model is
    opened here; progress reports the server's stage, in words for the status line."""
    assert remote.model is None and remote.server == server
    thread = remote.start_warm_up()        # with a server: checks it has the model
    thread.join(60)
    assert remote.warm_up_outcome == "done", remote.warm_up_outcome
    remote.stop_warm_up()

    scene, volume, points = sample_scene()
    lseg, lid, lres = local.segment(volume, points)
    del remote.stages[:]
    rseg, rid, rres = remote.segment(volume, points)
    assert rseg is not lseg and rseg.GetSegmentation().GetNumberOfSegments() == 1
    expected = SAM3DSegmentLogic.segment_mask(lseg, lid, volume)
    got = SAM3DSegmentLogic.segment_mask(rseg, rid, volume)
    assert got.sum() > 100
    np.testing.assert_array_equal(got, expected)
    assert (rres.voxels, rres.changed_lo, rres.changed_hi, rres.encoded, rres.zoom) == \
        (lres.voxels, lres.changed_lo, lres.changed_hi, lres.encoded, lres.zoom)
    assert remote.message == local.message == f"{rres.voxels} voxels"
    assert remote.stages[0] == ("remote", False) and remote.stages[-1] == ("remote", True)
    assert {s for s, _ in remote.stages} == {"remote"}
    assert stage_label("remote") == "computing on the server" and stage_label("encode") == "encode"
    assert remote.provider == f"CPU on the server {server}" and not remote.accepts_negative


def _interact(logic, volume, points):
    """The module's prompts in one sequence; the masks after each step."""
    masks = []
    seg, sid, _ = logic.segment(volume, points, 0)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, sid, volume))
    logic.refine(volume, points, 1)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, sid, volume))
    with pytest.raises(sam3d.Error) as e:
        logic.refine(volume, points, 1, positive=False)
    assert e.value.name == "SAM3D_STATUS_UNSUPPORTED"
    logic.undo(volume)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, sid, volume))
    roi = volume.GetScene().AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(*click_ras())
    roi.SetSize(40.0, 40.0, 30.0)
    _, bid, _ = logic.segment_box(volume, roi, segmentation_node=seg)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, bid, volume))
    block = np.zeros_like(masks[0])
    block[10:20, 10:20, 2:5] = 1
    _, start_id = logic.add_segment(volume, block, seg, "drawn")
    logic.start_from_segment(volume, seg, start_id)
    logic.refine(volume, points, 0)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, start_id, volume))
    logic.undo(volume)
    masks.append(SAM3DSegmentLogic.segment_mask(seg, start_id, volume))
    logic.zoom_out = 1
    try:
        _, zid, _ = logic.segment(volume, points, 1, segmentation_node=seg)
    finally:
        logic.zoom_out = 4
    masks.append(SAM3DSegmentLogic.segment_mask(seg, zid, volume))
    return masks


def test_refine_box_start_and_undo_on_a_server(remote, local):
    """Refinement, the refused negative click, undo, a box, a starting segment and a zoom-out change:
    on the server, step by step the local logic's segments."""
    scene, volume, points = sample_scene(((0.0, 0.0, 0.0), (3.0, 0.0, 0.0)))
    expected = _interact(local, volume, points)
    got = _interact(remote, volume, points)
    assert len(got) == len(expected)
    for step, (g, x) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(g, x, err_msg=f"step {step}")
    # the steps did something: the refinement changed the segment, undo took it back, the click
    # grew the starting segment and undo returned to it
    assert (expected[1] != expected[0]).any() and (expected[2] == expected[0]).all()
    assert expected[4].sum() > expected[5].sum() == 10 * 10 * 3


def test_server_errors_are_the_local_errors(server, remote, local):
    """A click outside the volume: the same sam3d.Error (name and message) as in process; a server
    that is not there or lacks the model: a sam3d.Error saying so."""
    scene, volume, _ = sample_scene()
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    far.AddControlPointWorld(vtk.vtkVector3d(5000.0, 0.0, 0.0))
    with pytest.raises(sam3d.Error) as lerr:
        local.segment(volume, far)
    with pytest.raises(sam3d.Error) as rerr:
        remote.segment(volume, far)
    assert rerr.value.name == lerr.value.name == "SAM3D_STATUS_OUT_OF_BOUNDS"
    assert str(rerr.value) == str(lerr.value)
    with pytest.raises(ValueError):
        remote.segment(volume, far, 5)

    scene, volume, points = sample_scene()
    nobody = SAM3DSegmentLogic(server=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(sam3d.Error) as e:
        nobody.segment(volume, points)
    assert e.value.name == "SAM3D_STATUS_IO" and "no answer from the server" in str(e.value)
    nobody.start_warm_up().join(60)
    assert nobody.warm_up_outcome.startswith("no answer from the server")
    wrong = SAM3DSegmentLogic(server=server, server_model="no-such-model")
    with pytest.raises(sam3d.Error) as e:
        wrong.segment(volume, points)
    assert "no-such-model" in str(e.value)
    wrong.start_warm_up().join(60)
    assert "no-such-model" in wrong.warm_up_outcome
    with pytest.raises(ValueError, match="no model package and no server"):
        SAM3DSegmentLogic()


@pytest.mark.parametrize("where", ["local", "remote"])
def test_cancel_stops_a_call_and_leaves_the_segment(where, request):
    """`cancel()` from the progress callback (as the module's event processing would call it): the
    call raises CANCELLED, no segment appears, and the next click works. On a server the cancelled
    refine still happens there, so the segment is no longer the one refine works on."""
    logic = request.getfixturevalue(where)
    # a new volume node and a refinement far from the first click: both calls encode, so on the
    # server they last long enough for the wait to be stopped
    g = sam3d.Volume.read_nifti(SAMPLE + ".nii.gz").geometry
    far = np.asarray(g.index_to_lps((20.0, 20.0, 11.0))) * [-1.0, -1.0, 1.0]
    scene, volume, points = sample_scene(((0.0, 0.0, 0.0), far - click_ras()))
    progress, cancelling = logic.progress, [True]

    def cancel_at_start(stage, done):
        if cancelling[0] and not done:
            logic.cancel()

    logic.progress = cancel_at_start   # the volume node's session, made at its first click, takes it
    try:
        with pytest.raises(sam3d.Error) as e:
            logic.segment(volume, points)
        assert e.value.name == "SAM3D_STATUS_CANCELLED"
        assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
        cancelling[0] = False
        seg, sid, result = logic.segment(volume, points)
        assert not result.empty
        cancelling[0] = True
        with pytest.raises(sam3d.Error) as e:
            logic.refine(volume, points, 1)
        assert e.value.name == "SAM3D_STATUS_CANCELLED"
        cancelling[0] = False
        if where == "local":
            # nothing changed: refining goes on from the segment as it is
            before = SAM3DSegmentLogic.segment_mask(seg, sid, volume)
            logic.undo(volume)
            assert SAM3DSegmentLogic.segment_mask(seg, sid, volume).sum() == 0 < before.sum()
        else:
            with pytest.raises(ValueError, match="no segment to refine"):
                logic.refine(volume, points, 1)
            logic.start_from_segment(volume, seg, sid)   # the segment as shown is the start again
            logic.refine(volume, points, 1)
    finally:
        logic.progress = progress


def test_a_session_the_server_dropped_is_started_again(remote, local):
    """The server ends idle sessions (and forgets all at a restart): the next click starts the
    session again there with its history, and refining goes on as if nothing happened."""
    scene, volume, points = sample_scene(((0.0, 0.0, 0.0), (3.0, 0.0, 0.0)))
    lseg, lid, _ = local.segment(volume, points, 0)
    local.refine(volume, points, 1)
    seg, sid, _ = remote.segment(volume, points, 0)
    session = remote._sessions[volume.GetID()][0]
    # what the idle timeout does, without waiting for it: end the session's sequence on the server
    session._pool.submit(session._end_quietly).result()
    resumed, resume = [], session.resume
    session.resume = lambda: (resumed.append(True), resume())
    remote.refine(volume, points, 1)
    assert resumed == [True]
    np.testing.assert_array_equal(SAM3DSegmentLogic.segment_mask(seg, sid, volume),
                                  SAM3DSegmentLogic.segment_mask(lseg, lid, volume))


def test_in_process_needs_no_tritonclient():
    """Without tritonclient the in-process logic works as before, and a server setting says what is
    missing when the logic is made, not at the first click."""
    code = f"""
import sys
sys.modules["tritonclient"] = None   # as if not installed
sys.path.insert(0, {os.path.dirname(HERE)!r})
from SAM3DSegmentLib import SAM3DSegmentLogic
SAM3DSegmentLogic({TINY!r}, threads=1)
assert "sam3d.remote" not in sys.modules
try:
    SAM3DSegmentLogic(server="grpc://127.0.0.1:1")
except ImportError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert 'pip install "tritonclient[grpc]"' in out
