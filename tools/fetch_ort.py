#!/usr/bin/env python3
"""Fetch ONNX Runtime's shared library from its PyPI wheel (no other download source exists here).

    python3 tools/fetch_ort.py --out .cache/onnxruntime [--flavor cpu|gpu|openvino] [--version V] [--openvino]

Writes OUT/libonnxruntime.so (and libonnxruntime_providers_*.so for the GPU flavour) and prints
the library's path. The openvino flavour is the onnxruntime-openvino wheel (MIT): an ONNX Runtime
built with the OpenVINO execution provider, with the OpenVINO (Apache-2.0) and TBB (Apache-2.0)
libraries it loads from its own folder; OpenVINO's CPU device then runs on any x86-64 CPU. --openvino also unpacks Intel's OpenVINO plugin execution provider
(onnxruntime-ep-openvino, MIT: the plugin with the OpenVINO and TBB libraries it finds beside it)
into OUT/onnxruntime_ep_openvino/, where libsam3d looks for it. Uses pip's ordinary client; nothing
is installed into any environment.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

VERSIONS = {
    "cpu": ("onnxruntime", "1.32.0"),
    "gpu": ("onnxruntime-gpu", "1.31.1"),
    "openvino": ("onnxruntime-openvino", "1.24.1"),
}
OPENVINO = ("onnxruntime-ep-openvino", "1.8.1")
PLUGIN_DIR = "onnxruntime_ep_openvino"


def download(name: str, version: str, tmp: str) -> str:
    """The one wheel of name==version for Linux x86-64, downloaded into tmp."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
           "--platform", "manylinux_2_17_x86_64",
           "--python-version", "3.11", "--implementation", "cp", "-d", tmp, f"{name}=={version}"]
    subprocess.run(cmd, check=True)
    wheels = glob.glob(os.path.join(tmp, "*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel, got {wheels}")
    return wheels[0]


def fetch_openvino(out: str) -> str:
    """The OpenVINO plugin and its libraries in out/onnxruntime_ep_openvino/ (its RPATH finds them
    beside it)."""
    name, version = OPENVINO
    dest = os.path.join(out, PLUGIN_DIR)
    plugin = os.path.join(dest, "libonnxruntime_providers_openvino_plugin.so")
    stamp = os.path.join(dest, f".{name}-{version}")
    if os.path.exists(plugin) and os.path.exists(stamp):
        return plugin
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(download(name, version, tmp)) as z:
        for n in z.namelist():
            if n.startswith(PLUGIN_DIR + "/") and ".so" in os.path.basename(n):
                target = os.path.join(dest, os.path.basename(n))
                with z.open(n) as src, open(target + ".part", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(target + ".part", target)
                os.chmod(target, 0o755)
    if not os.path.exists(plugin):
        raise SystemExit(f"no {os.path.basename(plugin)} in the {name} wheel")
    open(stamp, "w").close()
    return plugin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--flavor", choices=sorted(VERSIONS), default=os.environ.get("ORT_FLAVOR", "cpu"))
    ap.add_argument("--version", default=None)
    ap.add_argument("--openvino", action="store_true", help="also the OpenVINO plugin execution provider")
    args = ap.parse_args()
    if args.openvino:
        print(fetch_openvino(args.out))
    name, version = VERSIONS[args.flavor]
    version = args.version or version
    lib = os.path.join(args.out, "libonnxruntime.so")
    stamp = os.path.join(args.out, f".{name}-{version}")
    if os.path.exists(lib) and os.path.exists(stamp):
        print(lib)
        return 0
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download(name, version, tmp)
        with zipfile.ZipFile(wheel) as z:
            # ONNX Runtime's libraries, and for the openvino flavour OpenVINO's and TBB's (the
            # provider finds them beside itself); never the Python module
            names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/lib")
                     and ".so" in os.path.basename(n)]
            main_lib = [n for n in names if os.path.basename(n).startswith(f"libonnxruntime.so.")]
            if not main_lib:
                print(f"no libonnxruntime.so.* in {wheel}", file=sys.stderr)
                return 1
            # a wheel stores a library's version links as copies: link them again (the openvino
            # flavour would take 215 MB instead of 125 MB)
            first = {}
            for n in names:
                base = os.path.basename(n)
                target = lib if n == main_lib[0] else os.path.join(args.out, base)
                info = z.getinfo(n)
                same = first.setdefault((info.CRC, info.file_size), target)
                if os.path.lexists(target):
                    os.remove(target)
                if same != target:
                    os.symlink(os.path.basename(same), target)
                    continue
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
