"""The ITK example (examples/itk) built with CMake against Debian's ITK and an installed libsam3d:
it reads NIfTI and a DICOM series with ITK, lends the itk::Image buffer to libsam3d, takes the click
in LPS (or RAS) millimetres and writes the mask with ITK on the input's grid."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("SAM3D_DATA", os.path.join(REPO, ".cache", "data"))
ORT_DIR = os.path.dirname(os.environ.get("SAM3D_ORT_LIBRARY",
                                         os.path.join(REPO, ".cache", "onnxruntime-cpu", "libonnxruntime.so")))
DEMO = os.path.join(REPO, "models", "demo-lesion")
SAMPLE = os.path.join(REPO, "examples", "data", "sample_ct_lesion.nii.gz")
SERIES = os.path.join(DATA, "totalsegmentator_dicom", "example_ct_dicom")
SERIES_NIFTI = os.path.join(DATA, "totalsegmentator_dicom", "example_ct_dicom.nii.gz")
SEGMENT = os.path.join(REPO, "target", "release", "examples", "segment")


@pytest.fixture(scope="module")
def itk_example(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.fail("cmake is missing (Debian: apt-get install cmake libinsighttoolkit5-dev)")
    work = tmp_path_factory.mktemp("itk")
    prefix = work / "prefix"
    subprocess.run([os.path.join(REPO, "tools", "install.sh"), "install", str(prefix), ORT_DIR], check=True,
                   capture_output=True)
    r = subprocess.run(["cmake", "-S", os.path.join(REPO, "examples", "itk"), "-B", str(work / "build"),
                        f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["cmake", "--build", str(work / "build")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return str(work / "build" / "segment_itk")


def run(exe, inp, point, out, ras=False):
    cmd = [exe, DEMO, inp, ",".join(f"{v:.6f}" for v in point), str(out)] + (["--ras"] if ras else [])
    env = {k: v for k, v in os.environ.items() if k not in ("SAM3D_ORT_LIBRARY", "ORT_DYLIB_PATH")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)   # ONNX Runtime found in the prefix
    assert r.returncode == 0, r.stderr
    return sitk.ReadImage(str(out))


def same_geometry(a, b):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_nifti_lps_and_ras_clicks_give_the_engines_mask(itk_example, tmp_path):
    img = sitk.ReadImage(SAMPLE)
    lps = img.TransformContinuousIndexToPhysicalPoint((95.0, 96.0, 11.0))
    m_lps = run(itk_example, SAMPLE, lps, tmp_path / "lps.nii.gz")
    m_ras = run(itk_example, SAMPLE, (-lps[0], -lps[1], lps[2]), tmp_path / "ras.nrrd", ras=True)
    same_geometry(m_lps, img)
    same_geometry(m_ras, img)
    a, b = sitk.GetArrayFromImage(m_lps), sitk.GetArrayFromImage(m_ras)
    assert a.sum() > 100
    np.testing.assert_array_equal(a, b)
    r = subprocess.run([SEGMENT, "--model", DEMO, "--input", SAMPLE, "--click", "95,96,11", "--out",
                        str(tmp_path / "engine.nii.gz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "engine.nii.gz"))))


def test_dicom_series_read_by_itk(itk_example, tmp_path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(SERIES))
    series = reader.Execute()
    # LPS, in the enhanced aorta: a bright, well-bounded structure the demo model draws (since its
    # contrast-phase training it leaves a click in normal liver empty, as it should)
    point = (7.3, -146.5, -784.5)
    m = run(itk_example, SERIES, point, tmp_path / "dicom_mask.nii.gz")
    same_geometry(m, series)
    arr = sitk.GetArrayFromImage(m)
    assert 100 < arr.sum() < 0.05 * arr.size
    # the same world content stored as NIfTI (y flipped) through the engine: the same mask in world space
    r = subprocess.run([SEGMENT, "--model", DEMO, "--input", SERIES_NIFTI, "--click", ",".join(map(str, point)),
                        "--coord", "lps", "--out", str(tmp_path / "engine.nii.gz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    eng = sitk.Resample(sitk.ReadImage(str(tmp_path / "engine.nii.gz")), m, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(arr, sitk.GetArrayFromImage(eng))
