"""Shared test fixtures. Tests run from a fresh clone: everything they need is in the repository or
generated here (the paper-size checkpoint is regenerated from its seed, never committed)."""
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "parity"))

from sam3d_onnx.model.config import TINY  # noqa: E402
from sam3d_onnx.model.network import Sam3D, random_init_  # noqa: E402

PARITY_DIR = os.path.join(HERE, "parity")

# A second small configuration that differs from TINY in every derived quantity: other crop,
# upsampling x2 with 8-voxel patches, larger grid, shift 1, other neck taps.
SMALL = TINY.replace(crop=48, upsample=2, patch=8, num_slice=8, sam_grid=24, window=4, shift=1,
                     depth=5, neck_blocks=(0, 2, 3, 4), global_blocks=(4,), embed_dim=32, heads=2,
                     adapter_dim=16, neck_dim=24, pe_dim=24, pe_heads=3, pe_mlp_dim=48,
                     decoder_dim=12)


OPENVINO_PYTHONPATH = "SAM3D_ORT_OPENVINO_PYTHONPATH"


def openvino_env() -> dict:
    """Environment for a subprocess that imports the ONNX Runtime built with OpenVINO (the folder
    named by SAM3D_ORT_OPENVINO_PYTHONPATH, first on PYTHONPATH; ONNX Runtime cannot be imported
    twice under one name in the test process); skips the test when the variable is unset."""
    path = os.environ.get(OPENVINO_PYTHONPATH)
    if not path:
        pytest.skip(f"{OPENVINO_PYTHONPATH} is unset: the folder of an ONNX Runtime built with OpenVINO "
                    "(`make test-python` sets it)")
    rest = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(path)] + ([rest] if rest else [])))


def nondegenerate(prob, lo=0.02, hi=0.98):
    """A probability map that could fail a comparison: spread over (0, 1), mask neither empty nor full."""
    p = np.asarray(prob, dtype=np.float64)
    frac = float((p > 0.5).mean())
    assert np.isfinite(p).all()
    assert p.min() < 0.5 < p.max(), (p.min(), p.max())
    assert p.std() > 1e-3, p.std()
    assert lo < frac < hi, f"fraction of voxels > 0.5 is {frac}"


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return random_init_(Sam3D(TINY), seed=3).eval()


@pytest.fixture(scope="session")
def tiny_fine_model():
    """TINY with the decoder on the crop's own grid (decoder_scale 4, as the demo model): same
    parameters, no pooling of the crop and no final upsampling of the logits."""
    torch.manual_seed(0)
    return random_init_(Sam3D(TINY.replace(decoder_scale=4)), seed=3).eval()


@pytest.fixture(scope="session")
def small_model():
    torch.manual_seed(0)
    return random_init_(Sam3D(SMALL), seed=4).eval()
