"""One Triton server for the serving tests, started on free loopback ports and stopped at the end.

Models in its repository:
  sam3d    the demo package, 2 instances, 8 sessions each
  tiny     the tiny-orient fixture, 2 instances
  limited  the tiny-orient fixture, 1 instance, 2 sessions, 2 M voxels, a 2 s idle timeout (limits,
           timeouts, memory: one instance makes its session count and process observable)
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "serve", "triton"))

import launch  # noqa: E402

DEMO = os.path.join(ROOT, "models", "demo-lesion")
TINY = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-orient")
SAMPLE = os.path.join(ROOT, "examples", "data", "sample_ct_lesion.nii.gz")
SAMPLE_CLICK = (95, 96, 11)
LIMITED_TIMEOUT = 2.0
LIMITED_VOXELS = 2_000_000   # two sessions of the sample volume (737 280 voxels each), not three
MODELS = {
    "sam3d": {"package": DEMO, "instances": 2, "max_sessions": 8},
    "tiny": {"package": TINY, "instances": 2, "max_sessions": 8},
    "limited": {"package": TINY, "instances": 1, "max_sessions": 2, "idle_timeout": LIMITED_TIMEOUT,
                "max_voxels": LIMITED_VOXELS},
}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("triton"))
    repo = launch.write_repository(os.path.join(work, "repository"), MODELS, threads=1, idle_timeout=120.0)
    srv = launch.Server(repo, work)
    try:
        srv.wait_ready(list(MODELS), timeout=300)
        yield srv
    finally:
        srv.stop()
