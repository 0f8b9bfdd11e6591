"""The batch client (`python -m sam3d.batch`) against a real Triton server: masks beside their
volumes equal to the local binding's, the summary, a bad clicks file, a failing volume."""
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sam3d

from conftest import DEMO, SAMPLE, SAMPLE_CLICK

# the NIfTI-1 header with its 4-byte extension flag: libsam3d writes the voxels right after it
HEADER = 352
SECOND_CLICK = (99, 100, 12)


def ras(geometry, ijk):
    return tuple(float(v) for v in np.asarray(geometry.index_to_lps(ijk)) * (-1, -1, 1))


@pytest.fixture(scope="module")
def reference():
    """The local binding's masks for the clicks the batch sends (the three volumes are one CT):
    SAMPLE_CLICK alone, and SAMPLE_CLICK then SECOND_CLICK, both given in RAS millimetres."""
    rt = sam3d.Runtime()
    m = sam3d.Model(rt, DEMO, threads=1)
    vol = sam3d.Volume.read_nifti(SAMPLE)
    g = vol.geometry
    with sam3d.Session(m, vol) as s:
        one = s.add_object()
        s.click(one, SAMPLE_CLICK)
        two = s.add_object()
        s.click(two, ras(g, SAMPLE_CLICK), coord="ras")
        s.click(two, ras(g, SECOND_CLICK), coord="ras")
        masks = {"one": s.mask(one), "two": s.mask(two)}
    assert masks["one"].any() and (masks["one"] != masks["two"]).any()
    return g, masks


def mask_voxels(path, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    assert len(data) == HEADER + int(np.prod(dims)), "a uint8 mask of the volume's dims"
    return np.frombuffer(data, np.uint8, offset=HEADER).reshape(dims, order="F")


def batch(server, folder, clicks, *args, model="sam3d"):
    path = os.path.join(folder, "clicks.json")
    with open(path, "w") as f:
        json.dump(clicks, f)
    return subprocess.run([sys.executable, "-m", "sam3d.batch", "--server", "http://" + server.http_url,
                           "--model", model, "--clicks", path, str(folder), *args],
                          capture_output=True, text=True, timeout=300)


def copies(folder, names):
    for name in names:
        if name.endswith(".nii.gz"):
            shutil.copy(SAMPLE, folder / name)
        else:
            with gzip.open(SAMPLE, "rb") as src, open(folder / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def table_rows(stdout):
    lines = stdout.strip().splitlines()
    return {line.split()[0]: line for line in lines[1:-1]}, lines[-1]


def test_a_folder_matches_the_local_binding(server, reference, tmp_path):
    g, ref = reference
    copies(tmp_path, ["a.nii.gz", "b.nii.gz", "c.nii"])
    clicks = {
        "a.nii.gz": [list(SAMPLE_CLICK)],
        "b.nii.gz": {"coord": "ras", "objects": [[list(ras(g, SAMPLE_CLICK))],
                                                 [{"point": list(ras(g, SAMPLE_CLICK))},
                                                  {"point": list(ras(g, SECOND_CLICK)), "positive": True}]]},
        "c.nii": [list(SAMPLE_CLICK)],
    }
    p = batch(server, tmp_path, clicks, "--parallel", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    expected = {"a_mask.nii.gz": ref["one"], "b_mask.nii.gz": ref["one"],
                "b_mask-1.nii.gz": ref["two"], "c_mask.nii.gz": ref["one"]}
    for name, want in expected.items():
        got = mask_voxels(tmp_path / name, g.dims)
        assert np.array_equal(got, want), name
    assert sorted(os.listdir(tmp_path)) == sorted([*clicks, *expected, "clicks.json"]), "nothing staged left"

    rows, totals = table_rows(p.stdout)
    assert set(rows) == set(clicks)
    assert rows["b.nii.gz"].split()[1:4] == ["2", "3", f"{int(ref['one'].sum())}/{int(ref['two'].sum())}"]
    assert all(row.rstrip().endswith("ok") for row in rows.values())
    assert totals.startswith("3 volumes, 5 clicks, 0 failures")
    # stderr is a pipe here: one line per finished volume, not a bar
    assert sorted(line.split()[1] for line in p.stderr.splitlines()) == sorted(f"{n}:" for n in clicks)


def test_a_bad_clicks_file_exits_2_naming_every_problem(server, tmp_path):
    copies(tmp_path, ["a.nii.gz"])
    clicks = {"a.nii.gz": [[95, 96]], "missing.nii.gz": [[95, 96, 11]],
              "a.txt": [[1, 2, 3]], "a2.nii.gz": {"coord": "xyz", "objects": [[{"point": [1, 2, 3], "positive": 1}]]},
              "../a.nii.gz": [[95, 96, 11]]}
    p = batch(server, tmp_path, clicks)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == ""
    problems = p.stderr.splitlines()[1:]
    for name in ("a.nii.gz: clicks[0]", "missing.nii.gz: no such file", "a.txt: not a NIfTI",
                 "a2.nii.gz: coord", "a2.nii.gz: objects[0][0]", "../a.nii.gz: the name must be relative"):
        assert any(line.strip().startswith(name) for line in problems), (name, p.stderr)
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "clicks.json"]


def test_a_failing_volume_is_reported_and_leaves_no_mask(server, tmp_path):
    copies(tmp_path, ["good.nii.gz", "bad.nii.gz"])
    # the bad volume's first object succeeds and is written (staged) before the second fails
    clicks = {"bad.nii.gz": {"objects": [[list(SAMPLE_CLICK)], [[500, 96, 11]]]},
              "good.nii.gz": [list(SAMPLE_CLICK)]}
    p = batch(server, tmp_path, clicks, "--parallel", "2", "--quiet")
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == ""
    rows, totals = table_rows(p.stdout)
    assert "SAM3D_STATUS_OUT_OF_BOUNDS" in rows["bad.nii.gz"]
    assert rows["bad.nii.gz"].split()[2] == "1/2"
    assert rows["good.nii.gz"].rstrip().endswith("ok")
    assert "1 failure" in totals
    assert sorted(os.listdir(tmp_path)) == ["bad.nii.gz", "clicks.json", "good.nii.gz", "good_mask.nii.gz"]


def test_run_as_a_function_reports_progress(server, tmp_path):
    from sam3d.batch import run

    copies(tmp_path, ["a.nii.gz", "b.nii.gz"])
    events = []
    records = run("http://" + server.http_url, str(tmp_path),
                  {"a.nii.gz": [list(SAMPLE_CLICK)], "b.nii.gz": [list(SAMPLE_CLICK), [100, 96, 11]]},
                  parallel=2, model="tiny", suffix=".seg", progress=lambda e, r: events.append((e, r.volume)))
    assert [r.volume for r in records] == ["a.nii.gz", "b.nii.gz"], "the clicks file's order"
    assert all(r.ok and r.clicks_sent == r.clicks and len(r.masks) == 1 for r in records)
    assert [r.masks[0] for r in records] == [str(tmp_path / "a.seg.nii.gz"), str(tmp_path / "b.seg.nii.gz")]
    assert events[:2] == [("queued", "a.nii.gz"), ("queued", "b.nii.gz")]
    assert sorted(events[2:]) == [("click", "a.nii.gz"), ("click", "b.nii.gz"), ("click", "b.nii.gz"),
                                  ("done", "a.nii.gz"), ("done", "b.nii.gz")]
    assert events.index(("done", "b.nii.gz")) > max(i for i, e in enumerate(events) if e == ("click", "b.nii.gz"))
