"""SAM3DSegmentLogic on a real vtkMRMLScene (slicer-core, no application, no stand-in modules):
volume node in (read by Slicer's own storage node), markups point in RAS, segmentation node out
with the volume's geometry, the same voxels as libsam3d's command line gives."""
import os
import subprocess
import sys

import numpy as np
import pytest
import slicer
import vtk
from vtkmodules.util import numpy_support

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from SAM3DSegmentLib import SAM3DSegmentLogic  # noqa: E402
from SAM3DSegmentLib.logic import NOTHING_FOUND  # noqa: E402

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
