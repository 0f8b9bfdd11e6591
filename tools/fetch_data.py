#!/usr/bin/env python3
"""Fetch the real volumes the tests use from the packages that ship them (checksummed).

    python3 tools/fetch_data.py --out .cache/data [totalsegmentator] [itk_examples]   (default: all)

| file written | package (path inside) | licence |
|---|---|---|
| totalsegmentator/example_ct.nii.gz | PyPI sdist totalsegmentator==2.18.0 (tests/reference_files/; CT 3 mm) | Apache-2.0 |
| totalsegmentator/example_seg_fast_force_split.nii.gz | same (its 'total' organ labels, model output) | Apache-2.0 |
| totalsegmentator_dicom/example_ct_dicom.nii.gz | same (tests/reference_files/example_ct_dicom/, 20-slice JPEG 2000 DICOM CT read by SimpleITK, written on the label grid) | Apache-2.0 |
| totalsegmentator_dicom/example_seg_dicom.nii.gz | same (its organ labels, model output) | Apache-2.0 |
| totalsegmentator_dicom/example_ct_dicom/ | the DICOM series itself (20 files) | Apache-2.0 |
| pyradiomics/{lung1,brain1}_{image,label}.nrrd | PyPI sdist pyradiomics-bhklab==3.1.4 (data/; real lung tumour CT and brain tumour MR with expert masks; read them with SimpleITK/ITK) | BSD-3-Clause |
| itk_examples/KmeansTest_T1UCharRaw.nii.gz | Debian 12 insighttoolkit5-examples 5.2.1-5+deb12u1 (examples/Data/; MR T1, LSA, qform code 2 / sform code 1) | Apache-2.0 |

Only the listed files are extracted; the package archives are deleted afterwards.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

PACKAGES = {
    "totalsegmentator": {
        "spec": "totalsegmentator==2.18.0",
        "archive": "totalsegmentator-2.18.0.tar.gz",
        "sha256": "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        "files": {"totalsegmentator-2.18.0/tests/reference_files/example_ct.nii.gz": "example_ct.nii.gz",
                  "totalsegmentator-2.18.0/tests/reference_files/example_seg_fast_force_split.nii.gz":
                  "example_seg_fast_force_split.nii.gz"},
    },
    # real tumours (evaluation only); the sdist's metadata build needs its build dependencies, which
    # may come as wheels (only the package itself is fetched as source)
    "pyradiomics": {
        "spec": "pyradiomics-bhklab==3.1.4",
        "no_binary": "pyradiomics-bhklab",
        "archive": "pyradiomics_bhklab-3.1.4.tar.gz",
        "sha256": "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
        "files": {f"pyradiomics_bhklab-3.1.4/data/{n}.nrrd": f"{n}.nrrd"
                  for n in ("lung1_image", "lung1_label", "brain1_image", "brain1_label")},
    },
    # the second labelled CT (held out from training the demo model: its evaluation volume)
    "totalsegmentator_dicom": {
        "spec": "totalsegmentator==2.18.0",
        "archive": "totalsegmentator-2.18.0.tar.gz",
        "sha256": "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        "files": {"totalsegmentator-2.18.0/tests/reference_files/example_seg_dicom.nii.gz":
                  "example_seg_dicom.nii.gz"},
        "series": ("totalsegmentator-2.18.0/tests/reference_files/example_ct_dicom/", "example_ct_dicom.nii.gz",
                   "example_seg_dicom.nii.gz"),
    },
}


DEBIAN = {
    "itk_examples": {
        "spec": "insighttoolkit5-examples=5.2.1-5+deb12u1",
        "archive": "insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
        "sha256": "6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69",
        "files": {"usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz":
                  "KmeansTest_T1UCharRaw.nii.gz"},
    },
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(archive, pkg):
    got = sha256(archive)
    if got != pkg["sha256"]:
        raise SystemExit(f"{pkg['archive']}: sha256 {got} differs from the expected {pkg['sha256']}")


def _place(dest, target, data):
    """Write atomically: a partial download never looks like a fetched file."""
    part = os.path.join(dest, target + ".part")
    with open(part, "wb") as f:
        f.write(data)
    os.replace(part, os.path.join(dest, target))


def _destination(out, name, pkg):
    """The set's folder, created; None when every file of the set is already there."""
    dest = os.path.join(out, name)
    if all(os.path.exists(os.path.join(dest, v)) for v in _outputs(pkg)):
        return None
    os.makedirs(dest, exist_ok=True)
    return dest


def _outputs(pkg):
    return list(pkg["files"].values()) + ([pkg["series"][1]] if "series" in pkg else [])


def _convert_series(dest, folder, target, grid_file):
    """A DICOM series (JPEG 2000 needs GDCM: SimpleITK has it) written as NIfTI on the grid of
    `grid_file` (the labels': same voxels, stored y-flipped), so image and labels share one grid."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise SystemExit("converting the DICOM series needs SimpleITK (run with the onnx/ venv's python)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    ref = sitk.ReadImage(os.path.join(dest, grid_file))
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, -1024.0, image.GetPixelID())
    probe = sitk.Resample(ref, image, sitk.Transform(), sitk.sitkNearestNeighbor, -1)
    if (sitk.GetArrayViewFromImage(probe) < 0).any():
        raise SystemExit(f"{folder}: the series and {grid_file} do not cover the same voxels")
    part = os.path.join(dest, target + ".part.nii.gz")
    sitk.WriteImage(out, part)
    os.replace(part, os.path.join(dest, target))


def fetch(name, pkg, out):
    dest = _destination(out, name, pkg)
    if dest is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", pkg.get("no_binary", ":all:"),
                        "-d", tmp, pkg["spec"]], check=True)
        archive = os.path.join(tmp, pkg["archive"])
        _verify(archive, pkg)
        with tarfile.open(archive) as t:
            for member, target in pkg["files"].items():
                _place(dest, target, t.extractfile(member).read())
            if "series" in pkg:
                folder, target, grid = pkg["series"]
                members = [m for m in t.getmembers() if m.isfile() and m.name.startswith(folder)]
                t.extractall(tmp, members=members, filter="data")
                _convert_series(dest, os.path.join(tmp, folder), target, grid)
                # the series itself too, for clients that read DICOM (the ITK example's test)
                series_dir = os.path.join(dest, "example_ct_dicom")
                os.makedirs(series_dir, exist_ok=True)
                for m in members:
                    with open(os.path.join(tmp, m.name), "rb") as src:
                        _place(series_dir, os.path.basename(m.name), src.read())


def fetch_deb(name, pkg, out):
    """Debian package through apt (the package lists are refreshed once if the first try fails)."""
    dest = _destination(out, name, pkg)
    if dest is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        get = ["apt-get", "download", "-q", pkg["spec"]]
        if subprocess.run(get, cwd=tmp, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(get, cwd=tmp, check=True, capture_output=True)
        archive = os.path.join(tmp, pkg["archive"])
        _verify(archive, pkg)
        root = os.path.join(tmp, "x")
        subprocess.run(["dpkg-deb", "-x", archive, root], check=True)
        for member, target in pkg["files"].items():
            with open(os.path.join(root, member), "rb") as src:
                _place(dest, target, src.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    known = sorted(PACKAGES) + sorted(DEBIAN)
    # no `choices` here: argparse (3.11) rejects an empty nargs="*" list against choices
    ap.add_argument("sets", nargs="*", help=f"any of {known} (default: all)")
    args = ap.parse_args()
    unknown = sorted(set(args.sets) - set(known))
    if unknown:
        ap.error(f"unknown data sets {unknown}; choose from {known}")
    wanted = set(args.sets) or set(PACKAGES) | set(DEBIAN)
    for name, pkg in PACKAGES.items():
        if name in wanted:
            fetch(name, pkg, args.out)
    for name, pkg in DEBIAN.items():
        if name in wanted:
            fetch_deb(name, pkg, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
