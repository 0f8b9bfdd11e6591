#!/usr/bin/env python3
"""Fetch ONNX Runtime's shared library from its PyPI wheel (no other download source exists here).

    python3 tools/fetch_ort.py --out .cache/onnxruntime [--flavor cpu|gpu] [--version 1.32.0]

Writes OUT/libonnxruntime.so (and libonnxruntime_providers_*.so for the GPU flavour) and prints
the library's path. Uses pip's ordinary client; nothing is installed into any environment.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

VERSIONS = {"cpu": ("onnxruntime", "1.32.0"), "gpu": ("onnxruntime-gpu", "1.31.1")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--flavor", choices=sorted(VERSIONS), default=os.environ.get("ORT_FLAVOR", "cpu"))
    ap.add_argument("--version", default=None)
    args = ap.parse_args()
    name, version = VERSIONS[args.flavor]
    version = args.version or version
    lib = os.path.join(args.out, "libonnxruntime.so")
    stamp = os.path.join(args.out, f".{name}-{version}")
    if os.path.exists(lib) and os.path.exists(stamp):
        print(lib)
        return 0
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
               "--platform", "manylinux_2_17_x86_64",
               "--python-version", "3.11", "--implementation", "cp", "-d", tmp, f"{name}=={version}"]
        subprocess.run(cmd, check=True)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if len(wheels) != 1:
            print(f"expected one wheel, got {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as z:
            names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
            main_lib = [n for n in names if os.path.basename(n).startswith(f"libonnxruntime.so.")]
            if not main_lib:
                print(f"no libonnxruntime.so.* in {wheels[0]}", file=sys.stderr)
                return 1
            for n in names:
                base = os.path.basename(n)
                target = lib if n == main_lib[0] else os.path.join(args.out, base)
                with z.open(n) as src, open(target + ".part", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(target + ".part", target)
    for f in glob.glob(os.path.join(args.out, ".onnxruntime*")):
        os.remove(f)
    open(stamp, "w").close()
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
