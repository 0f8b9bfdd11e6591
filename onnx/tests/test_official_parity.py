"""The paper-size model against the official 3DSAM-adapter code (goldens in tests/parity/).

The seeded generator writes a checkpoint in the official layout (not committed, ~0.9 GB); the
converter turns it into a package; ONNX Runtime runs the exported graphs; the probabilities must match
what the official code computed (stored as float16) and what our straightforward PyTorch model
computes. Takes several minutes on a small CPU (mark `paper`; deselect with `-m "not paper"`)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

import check_parity
import make_weights
from conftest import PARITY_DIR, nondegenerate, openvino_env
from sam3d_onnx import cli
from sam3d_onnx.export.package import session_options
from sam3d_onnx.model import checkpoint
from sam3d_onnx.model.config import PAPER

pytestmark = pytest.mark.paper

TIMINGS = {}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper")
    state = make_weights.make_state(0)
    with open(os.path.join(PARITY_DIR, "weights_seed0_checksums.json")) as f:
        assert make_weights.verify_checksums(state, 0, json.load(f)) == [], "generator drifted"
    ckpt = str(d / "last.pth.tar")
    torch.save(make_weights.to_torch(state), ckpt)
    del state
    t = time.time()
    assert cli.main(["convert", ckpt, "--dataset", "kits", "--out", str(d / "pkg")]) == 0
    TIMINGS["convert_s"] = time.time() - t
    opts = session_options(2)                     # as the engine runs it
    enc = ort.InferenceSession(str(d / "pkg" / "encoder.onnx"), opts)
    dec = ort.InferenceSession(str(d / "pkg" / "decoder.onnx"), opts)
    crop = np.load(os.path.join(PARITY_DIR, "input_crop.npy"))
    t = time.time()
    cache = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"crop": crop[None, None]})))
    TIMINGS["ort_encoder_s"] = time.time() - t
    probs = {}
    for which in check_parity.CASES:
        case = check_parity.load_case(which)
        t = time.time()
        probs[which] = dec.run(["prob"], {**cache, "points": case["clicks_dhw"]})[0][0]
        TIMINGS[f"ort_decoder_{which}_s"] = time.time() - t
    sizes = {f: os.path.getsize(d / "pkg" / f) for f in os.listdir(d / "pkg")}
    del enc, dec, cache                           # the OpenVINO tests load the graphs again
    yield {"ckpt": ckpt, "probs": probs, "sizes": sizes, "dir": d, "pkg": d / "pkg"}
    print("\npaper-size timings (2 threads):", {k: round(v, 2) for k, v in TIMINGS.items()},
          "sizes MB:", {k: round(v / 1e6, 1) for k, v in sizes.items()})


@pytest.mark.parametrize("which", check_parity.CASES)
def test_exported_graphs_match_the_official_model(paper, which):
    prob = paper["probs"][which]
    m = check_parity.compare(prob, which)
    assert m["nonfinite"] == 0
    assert m["max_abs"] <= 1e-3, m            # goldens are float16 (rounding <= 2.4e-4)
    assert m["samples_max_abs_fp32"] <= 1e-4, m  # 1000 voxels stored in float32
    assert m["dice"] >= 0.999, m
    nondegenerate(prob, lo=0.05, hi=0.95)


def test_exported_graphs_equal_the_straightforward_model(paper):
    model = checkpoint.load_official(paper["ckpt"], PAPER)
    case = check_parity.load_case("1click")
    crop = torch.from_numpy(case["crop_3ch"])
    with torch.no_grad():
        t = time.time()
        feats = model.encoder(crop)
        TIMINGS["torch_reference_encoder_s"] = time.time() - t
        for which in check_parity.CASES:
            case = check_parity.load_case(which)
            t = time.time()
            ref = model.decode(feats, crop, torch.from_numpy(case["clicks_dwh"]))[0].numpy()
            TIMINGS[f"torch_reference_decoder_{which}_s"] = time.time() - t
            assert np.abs(ref - paper["probs"][which]).max() <= 1e-4
            nondegenerate(ref, lo=0.05, hi=0.95)


def test_package_sizes_and_layout(paper):
    sizes = paper["sizes"]
    assert set(sizes) == {"sam3d-model.json", "encoder.onnx", "encoder.onnx.data", "decoder.onnx",
                          "decoder.onnx.data"}
    # one shared shift mask (67 MB) instead of six: the encoder stays well under the official 819 MB
    assert sizes["encoder.onnx.data"] < 520e6


# bf16's sanity bars. bf16 rounds each operation to 8 significant bits (relative 2^-9); through the
# paper-size encoder that leaves logit errors up to about 0.1, |dp| <= logit error / 4, and a third
# of this random-weight model's voxels have p within 0.1 of 0.5, where such errors flip the mask. The
# bars allow about five times the |dp| and three times the Dice loss that bf16 gives (max |dp| ~0.02,
# Dice ~0.986 against the official mask); a broken path (noise, an empty or full mask) is far below.
BF16_SANITY_DICE = 0.95
BF16_SANITY_MAX_ABS = 0.1


@pytest.fixture(scope="module")
def openvino(request, tmp_path_factory):
    """The same package through ONNX Runtime's OpenVINO provider, fp32 and bf16, with the engine's
    settings (tests/parity/run_openvino.py, in a subprocess)."""
    env = openvino_env()                          # skips before the paper-size fixture is built
    paper = request.getfixturevalue("paper")
    out = tmp_path_factory.mktemp("openvino") / "probs.npz"
    cmd = [sys.executable, os.path.join(PARITY_DIR, "run_openvino.py"), str(paper["pkg"]), str(out),
           "--precision", "fp32,bf16", "--threads", "2"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    with np.load(out) as z:
        res = {k: z[k] for k in z.files}
    TIMINGS.update({f"openvino_{k}": float(v) for k, v in res.items() if k.endswith("_s")})
    return res


def _figures(m: dict) -> str:
    return (f"max_abs {m['max_abs']:.2e}, p99_abs {m['p99_abs']:.2e}, samples_max_abs_fp32 "
            f"{m['samples_max_abs_fp32']:.2e}, Dice {m['dice']:.6f} ({m['count_gt_0.5']} voxels > 0.5, "
            f"official {m['expected_count_gt_0.5']})")


@pytest.mark.openvino
@pytest.mark.parametrize("which", check_parity.CASES)
def test_openvino_fp32_matches_the_official_model(openvino, which):
    prob = openvino[f"fp32_{which}"]
    m = check_parity.compare(prob, which)
    print(f"\nOpenVINO fp32 {which}: {_figures(m)}")
    assert m["nonfinite"] == 0
    assert m["max_abs"] <= 1e-3, m               # the bars of the CPU provider's test above
    assert m["samples_max_abs_fp32"] <= 1e-4, m
    assert m["dice"] >= 0.999, m
    nondegenerate(prob, lo=0.05, hi=0.95)


@pytest.mark.openvino
@pytest.mark.parametrize("which", check_parity.CASES)
def test_openvino_bf16_against_the_official_model(openvino, which):
    """bf16 keeps 8 bits of mantissa: on random weights, whose probabilities lie near 0.5 over wide
    regions, small logit errors flip many voxels, so the figures are printed and only a sanity bar
    is held: finite, and a mask that still overlaps the official one for the most part (a broken
    bf16 path, e.g. overflowing attention logits or a lost shift mask, gives noise or an empty or
    full mask, far below it)."""
    prob = openvino[f"bf16_{which}"]
    m = check_parity.compare(prob, which)
    print(f"\nOpenVINO bf16 {which}: {_figures(m)}; max |bf16 - fp32| "
          f"{float(np.abs(prob - openvino[f'fp32_{which}']).max()):.2e}")
    assert m["nonfinite"] == 0
    assert m["dice"] >= BF16_SANITY_DICE, m
    assert m["max_abs"] <= BF16_SANITY_MAX_ABS, m
