"""The serving protocol shared by the Triton model (`sam3d.hosting`) and its clients (`sam3d.remote`).

One Triton sequence is one libsam3d session. Every request carries `OP` (one of `OPS`) and the
sequence's correlation ID; the first carries Triton's START flag and the volume, the last END.
Tensors have a leading batch dimension of 1 (the model batches sequences, never the data of one).

Requests (all optional but OP):
    OP            BYTES  [1]   start | click | set_box | set_mask | add_object | undo | redo |
                               set_inference | get_mask | get_mask_nifti | info | end
    VOLUME        BYTES  [1]   start: a NIfTI file's bytes (.nii or .nii.gz), or raw voxels
    VOLUME_DTYPE  BYTES  [1]   start with raw voxels: numpy's name (uint8 .. float64, little-endian)
    GEOMETRY      FP64   [18]  start with raw voxels: dims, spacing, origin (LPS), direction (row-major)
    OBJECT        UINT32 [1]   the object of click, set_box, set_mask, undo, redo, get_mask*
    POINT         FP64   [-1]  click: x, y, z; set_box: two corners (6 values)
    COORD         BYTES  [1]   ijk (default) | lps | ras
    POSITIVE      BOOL   [1]   click: false for a negative click (default true)
    MASK          UINT8  [-1]  set_mask: the volume's mask as packed bits (`pack`)
    SETTINGS      INT32  [3]   set_inference: test-time flips, keep clicked components, zoom-out (0 keeps it)

Replies (always all of them):
    STATUS   BYTES  [1]   the library's status name (SAM3D_STATUS_OK, SAM3D_STATUS_OUT_OF_BOUNDS, ...)
    MESSAGE  BYTES  [1]   the library's message ("" on success)
    RESULT   INT64  [8]   voxels, changed box lo (i, j, k), hi (i, j, k, one past), encoded (0/1)
    ZOOM     FP64   [1]   the zoom that answered (0 when no model ran)
    PATCH    UINT8  [-1]  the object's mask inside the changed box, packed bits (empty when the box is)
    INFO     BYTES  [1]   JSON: start, info: dims, geometry, prompts, inference, model; every reply:
                          object (add_object), live sessions and process of the instance, and the
                          session's `applied` (calls that changed it: mask ops, add_object,
                          set_inference) and `objects` counts, which tell a client whose answer
                          was lost whether its call took effect;
                          get_mask_nifti: nothing (the file is in PATCH, not packed)

A START that fails (a bad volume, or SAM3D_STATUS_BUSY beyond the instance's sessions) leaves no
session, but Triton keeps the sequence's slot until END or the idle timeout: a client sends END
(OP "end") for it. A request on a sequence Triton does not know (never started, ended, idle past
the timeout, a restarted server) is refused by Triton itself ("must specify the START flag").

Packed bits: the box's voxels in index order with i fastest (the library's order), 8 voxels a byte,
the first voxel in the lowest bit (numpy's packbits with bitorder="little").
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

OPS = ("start", "click", "set_box", "set_mask", "add_object", "undo", "redo", "set_inference",
       "get_mask", "get_mask_nifti", "info", "end")
#: ops that change an object's mask and reply with its changed box
MASK_OPS = ("click", "set_box", "set_mask", "undo", "redo")
INPUTS = {"OP": "BYTES", "VOLUME": "BYTES", "VOLUME_DTYPE": "BYTES", "GEOMETRY": "FP64", "OBJECT": "UINT32",
          "POINT": "FP64", "COORD": "BYTES", "POSITIVE": "BOOL", "MASK": "UINT8", "SETTINGS": "INT32"}
OUTPUTS = {"STATUS": "BYTES", "MESSAGE": "BYTES", "RESULT": "INT64", "ZOOM": "FP64", "PATCH": "UINT8",
           "INFO": "BYTES"}
RAW_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
OK = "SAM3D_STATUS_OK"


def box_shape(lo: Sequence[int], hi: Sequence[int]) -> Tuple[int, int, int]:
    """Voxels along i, j, k of the box [lo, hi) (0 on an empty axis)."""
    return tuple(max(0, int(h) - int(l)) for l, h in zip(lo, hi))


def pack(mask: np.ndarray, lo: Sequence[int] = (0, 0, 0), hi: Sequence[int] = None) -> np.ndarray:
    """The box [lo, hi) of `mask` (indexed [i, j, k], non-zero inside) as packed bits, i fastest."""
    hi = mask.shape if hi is None else hi
    n = box_shape(lo, hi)
    if 0 in n:
        return np.zeros(0, np.uint8)
    sub = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return np.packbits(sub.ravel(order="F") != 0, bitorder="little")


def unpack_into(mask: np.ndarray, lo: Sequence[int], hi: Sequence[int], packed: np.ndarray):
    """Write packed bits (`pack`) into the box [lo, hi) of `mask` (uint8, indexed [i, j, k])."""
    n = box_shape(lo, hi)
    count = n[0] * n[1] * n[2]
    if count == 0:
        return
    packed = np.asarray(packed, np.uint8).ravel()
    if packed.size != (count + 7) // 8:
        raise ValueError(f"{packed.size} packed bytes for a box of {count} voxels")
    bits = np.unpackbits(packed, count=count, bitorder="little")
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = bits.reshape(n, order="F")


def geometry_values(dims, spacing, origin, direction) -> np.ndarray:
    """The 18 values of GEOMETRY."""
    return np.concatenate([np.asarray(dims, float), np.asarray(spacing, float), np.asarray(origin, float),
                           np.asarray(direction, float).reshape(9)])


def split_geometry(values) -> tuple:
    """GEOMETRY's 18 values as (dims, spacing, origin, direction 3x3); ValueError when malformed."""
    v = np.asarray(values, float).ravel()
    if v.size != 18:
        raise ValueError(f"GEOMETRY holds {v.size} values, not 18 (dims, spacing, origin, direction)")
    if not np.all(np.isfinite(v)):
        raise ValueError("GEOMETRY holds a value that is not finite")
    dims = v[:3]
    if np.any(dims < 1) or np.any(dims != np.round(dims)) or np.any(dims > 2 ** 31):
        raise ValueError(f"GEOMETRY's dims {dims.tolist()} are not positive whole numbers")
    return tuple(int(d) for d in dims), tuple(v[3:6]), tuple(v[6:9]), v[9:].reshape(3, 3)
