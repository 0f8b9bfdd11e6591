#!/usr/bin/env python3
"""Fetch the real volumes the tests use from the packages that ship them (checksummed).

    python3 tools/fetch_data.py --out .cache/data [totalsegmentator] [itk_examples]   (default: all)

| file written | package (path inside) | licence |
|---|---|---|
| totalsegmentator/example_ct.nii.gz | PyPI sdist totalsegmentator==2.18.0 (tests/reference_files/) | Apache-2.0 |
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
        "files": {"totalsegmentator-2.18.0/tests/reference_files/example_ct.nii.gz": "example_ct.nii.gz"},
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
    if all(os.path.exists(os.path.join(dest, v)) for v in pkg["files"].values()):
        return None
    os.makedirs(dest, exist_ok=True)
    return dest


def fetch(name, pkg, out):
    dest = _destination(out, name, pkg)
    if dest is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, pkg["spec"]], check=True)
        archive = os.path.join(tmp, pkg["archive"])
        _verify(archive, pkg)
        with tarfile.open(archive) as t:
            for member, target in pkg["files"].items():
                _place(dest, target, t.extractfile(member).read())


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
