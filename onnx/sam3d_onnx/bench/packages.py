"""The benchmark's inputs: the 512 x 512 x 300 CT, the paper-size random-weight package and int8
variants, each made once and cached in the output folder."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

REPO = str(Path(__file__).resolve().parents[3])
PACKAGES = {"tiny": os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient"),
            "demo": os.path.join(REPO, "models", "demo-lesion")}
SHAPE = (512, 512, 300)


def make_ct(data: str, out: str) -> str:
    """The example CT resampled to 512 x 512 x 300 (same field of view), int16, .nii.gz."""
    import nibabel as nib
    import torch.nn.functional as F

    path = os.path.join(out, "ct_512x512x300.nii.gz")
    if os.path.exists(path):
        return path
    img = nib.load(os.path.join(data, "totalsegmentator", "example_ct.nii.gz"))
    x = torch.from_numpy(np.asarray(img.get_fdata(dtype=np.float32)))[None, None]
    y = F.interpolate(x, size=SHAPE, mode="trilinear", align_corners=False)[0, 0].numpy()
    aff = img.affine.copy()
    aff[:3, :3] = aff[:3, :3] * (np.asarray(img.shape[:3]) / np.asarray(SHAPE))
    nib.save(nib.Nifti1Image(np.round(y).astype(np.int16), aff), path + ".part.nii.gz")
    os.replace(path + ".part.nii.gz", path)
    return path


def paper_package(out: str) -> str:
    from ..export.package import export_package
    from ..model.config import PAPER
    from ..model.network import Sam3D, random_init_

    path = os.path.join(out, "paper-random")
    # exported again when the export code changed since the cached copy
    here = Path(__file__).resolve().parents[1]
    stamp = hashlib.sha256(b"".join((here / f).read_bytes()
                                    for f in ("export/graphs.py", "model/network.py", "export/package.py")))
    stamp_file = Path(out) / "paper-random.source-sha256"
    if os.path.exists(os.path.join(path, "sam3d-model.json")) and stamp_file.exists() \
            and stamp_file.read_text().strip() == stamp.hexdigest():
        return path
    torch.manual_seed(0)
    model = random_init_(Sam3D(PAPER), seed=0).eval()
    export_package(model, path, name="paper-random", description="paper-size 3DSAM-adapter, random weights (benchmark)",
                   licence="Apache-2.0 (random weights)", provenance="python -m sam3d_onnx bench (random_init_ seed 0)",
                   frame={"mode": "orient", "orientation": "RAS", "array_transpose": None},
                   intensity={"clip": [-160.0, 240.0], "mean": 40.0, "std": 80.0, "nonfinite": "error"},
                   spacing_mm=(1.0, 1.0, 1.0))
    stamp_file.write_text(stamp.hexdigest() + "\n")
    return path


def int8_package(pkg: str, out: str) -> str:
    """The int8 variant of a package (`export/quantize.py`), cached next to the fp32 one."""
    from ..export.package import read_manifest
    from ..export.quantize import quantize_package

    src = read_manifest(pkg, verify=False)["graphs"]["encoder"]["sha256"]
    if os.path.exists(os.path.join(out, "sam3d-model.json")):
        made = read_manifest(out, verify=False)
        # "int8_convs" in the record: made since the convolutions are quantised too
        if made.get("quantised_from", {}).get("encoder") == src and \
                "int8_convs" in made.get("quantisation", {}).get("encoder", {}):
            return out
    quantize_package(pkg, out)
    return out


def standard_package(pkg: str, out: str) -> str:
    """The standard-operator variant of a package (`export/standard.py`: what OpenVINO runs whole),
    cached next to the original."""
    from ..export.package import read_manifest
    from ..export.quantize import quantize_package

    src = read_manifest(pkg, verify=False)["graphs"]["encoder"]["sha256"]
    if os.path.exists(os.path.join(out, "sam3d-model.json")):
        if read_manifest(out, verify=False).get("quantised_from", {}).get("encoder") == src:
            return out
    quantize_package(pkg, out, graphs=("encoder", "decoder"), precision="standard")
    return out
