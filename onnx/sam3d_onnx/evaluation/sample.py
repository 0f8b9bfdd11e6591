"""Write the demo's sample volume: a crop of the held-out CT with one synthetic liver lesion.

    python -m sam3d_onnx sample --data .cache/data --out examples/data

Writes `sample_ct_lesion.nii.gz` (int16 HU, the CT's own 0.98 x 0.98 x 2 mm grid and orientation),
`sample_ct_lesion_truth.nii.gz` (uint8 lesion mask, same grid) and `sample_ct_lesion.json` (the click:
the lesion voxel farthest from its boundary, and the lesion's parameters). The CT is the 20-slice
DICOM example of the TotalSegmentator package (Apache-2.0), which the demo model never saw in
training; the lesion comes from its own seed stream (not a training or evaluation lesion).
"""
from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np

from ..training import dataset, lesions
from .evaluate import VOLUMES
from .measures import edt_click

SAMPLE_STREAM = 4_000_003
EDGE = 192          # in-plane crop edge in voxels (188 mm)


def make(data: str, out: str):
    img_path, lab_path = (os.path.join(data, p) for p in VOLUMES["heldout-ct"])
    img, lab = nib.load(img_path), nib.load(lab_path)
    image = np.asarray(img.get_fdata(dtype=np.float32))
    labels = np.asarray(lab.dataobj).astype(np.uint8)
    spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    liver = labels == dataset.ORGANS["liver"]
    for i in range(100):   # the first lesion of the stream that is 20 mm or more across
        rng = np.random.default_rng([SAMPLE_STREAM, i])
        new, mask, info = lesions.insert_lesion(image, liver, spacing, rng)
        if info.equivalent_diameter_mm >= 20.0:
            break
    c = np.argwhere(mask).mean(0).round().astype(int)
    lo = np.clip(c[:2] - EDGE // 2, 0, np.asarray(image.shape[:2]) - EDGE)
    sl = (slice(lo[0], lo[0] + EDGE), slice(lo[1], lo[1] + EDGE), slice(None))
    sub = img.slicer[sl]
    hu = np.round(new[sl]).astype(np.int16)
    truth = mask[sl].astype(np.uint8)
    click = edt_click(truth, spacing)
    os.makedirs(out, exist_ok=True)
    for name, arr in (("sample_ct_lesion.nii.gz", hu), ("sample_ct_lesion_truth.nii.gz", truth)):
        im = nib.Nifti1Image(arr, sub.affine)
        im.set_qform(sub.affine, code=1)
        im.set_sform(sub.affine, code=1)
        im.header.set_xyzt_units("mm")
        nib.save(im, os.path.join(out, name))
    meta = {"click_ijk": [int(v) for v in click], "click": ",".join(str(int(v)) for v in click), "stream": SAMPLE_STREAM, "index": i, "organ": "liver",
            "lesion_voxels": int(truth.sum()), "equivalent_diameter_mm": round(info.equivalent_diameter_mm, 2),
            "contrast_hu": round(info.contrast_hu, 2), "source": "totalsegmentator==2.18.0 sdist, "
            "tests/reference_files/example_ct_dicom/ (read with SimpleITK), in-plane crop at "
            f"i={int(lo[0])}, j={int(lo[1])}", "licence": "Apache-2.0"}
    with open(os.path.join(out, "sample_ct_lesion.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder written by tools/fetch_data.py (needs totalsegmentator_dicom)")
    ap.add_argument("--out", required=True, help="folder for the volume, its truth and the click (examples/data)")
    args = ap.parse_args(argv)
    print(json.dumps(make(args.data, args.out)))
