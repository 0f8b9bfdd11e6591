#!/usr/bin/env python3
"""Bring ONNX Runtime's CUDA provider and the paper-size package to a lent GPU machine in parts.

The GPU machines reach no package registry and take at most 64 MiB per command (the working tree
included), while the onnxruntime-gpu wheel is 255 MB and the paper-size package 513 MB. So:

    python3 bench/gpu/carry.py pack WHEEL PAPER_PKG EXAMPLES DIR    # here: writes DIR/part-*.xz
    python3 bench/gpu/carry.py unpack DIR DEST                       # there: rebuilds DEST/{ort,paper}, bench, segment, libsam3d.so
                                                                     # (and DEST/py: the onnxruntime module, packed with --python)
    python3 bench/gpu/carry.py ct FILE.nii                            # there: a 512 x 512 x 300 CT

What shrinks it, and why each step leaves the measurement intact:
  * the CUDA provider keeps only the sm_90 (Hopper) cubins of its fat binary: the payloads of the other
    architectures are zeroed (their headers stay, so the container still parses; the CUDA runtime
    picks the sm_90 entry on an H100/H200 and never reads the others);
  * the package's float initialisers are zeroed here and refilled there with seeded random values
    (the benchmark package has random weights anyway; integer tensors such as the window-order
    Gather indices are kept exactly); the manifest's hashes are recomputed after refilling.
Everything is xz-compressed and split into parts of at most --part-mb MB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import sys
import zipfile

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)


def keep_one_arch(data: bytearray, sm: int) -> tuple[int, int]:
    """Zero the payload of every fat-binary entry whose architecture is not `sm`; (kept, zeroed) bytes."""
    pos, kept, zeroed = 0, 0, 0
    while True:
        i = data.find(FATBIN_MAGIC, pos)
        if i < 0:
            return kept, zeroed
        _, header, size = struct.unpack_from("<HHQ", data, i + 4)
        if header != 16:                       # not a fat-binary header, only the same 4 bytes
            pos = i + 4
            continue
        e, end = i + header, i + header + size
        while e < end:
            _, _, ehdr, payload = struct.unpack_from("<HHIQ", data, e)
            arch = struct.unpack_from("<I", data, e + 28)[0]
            if arch == sm:
                kept += payload
            else:
                data[e + ehdr:e + ehdr + payload] = bytes(payload)
                zeroed += payload
            e += ehdr + payload
        pos = end


def float_ranges(onnx_path: str):
    """(file, offset, length) of every float32 initialiser stored as external data."""
    import onnx
    m = onnx.load(onnx_path, load_external_data=False)
    for t in m.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL or t.data_type != onnx.TensorProto.FLOAT:
            continue
        kv = {e.key: e.value for e in t.external_data}
        yield kv["location"], int(kv.get("offset", 0)), int(kv["length"])


def pack(args):
    stage = os.path.join(args.dir, "stage")
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(os.path.join(stage, "ort"))
    os.makedirs(os.path.join(stage, "paper"))
    with zipfile.ZipFile(args.wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith("onnxruntime/capi/lib") and ".so" in base and "tensorrt" not in base:
                data = bytearray(z.read(name))
                if "providers_cuda" in base:
                    kept, zeroed = keep_one_arch(data, args.sm)
                    print(f"{base}: kept {kept / 1e6:.1f} MB of sm_{args.sm} code, zeroed {zeroed / 1e6:.1f} MB")
                open(os.path.join(stage, "ort", base), "wb").write(data)
            elif args.python and (name == "onnxruntime/__init__.py" or (name.startswith("onnxruntime/capi/")
                                  and (base.endswith(".py") or "pybind11_state" in base))):
                # the Python module (for checks from Python); unpack links the provider libraries in
                dst = os.path.join(stage, "py", name)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                open(dst, "wb").write(z.read(name))
    for exe in ("bench", "segment"):          # target/release/examples/
        shutil.copy(os.path.join(args.examples, exe), os.path.join(stage, exe))
    # the library itself (for kernel_profile.py), without its debug information when `strip` is here
    lib = os.path.join(args.examples, "..", "libsam3d.so")
    if os.path.exists(lib):
        dst = os.path.join(stage, "libsam3d.so")
        if shutil.which("strip") is None or os.system(f"strip -o '{dst}' '{lib}'") != 0:
            shutil.copy(lib, dst)
    # external data files with their float weights zeroed; every other package file as it is. Further
    # packages (comma-separated: graph variants to compare) go to paper-<folder name>; zeroed, each
    # adds little to the parts.
    for k, package in enumerate(args.package.split(",")):
        dest = os.path.join(stage, "paper" if k == 0 else "paper-" + os.path.basename(package.rstrip("/")))
        os.makedirs(dest, exist_ok=True)
        zeroed_data = {}
        for g in ("encoder", "decoder"):
            for loc, off, n in float_ranges(os.path.join(package, g + ".onnx")):
                if loc not in zeroed_data:
                    zeroed_data[loc] = bytearray(open(os.path.join(package, loc), "rb").read())
                zeroed_data[loc][off:off + n] = bytes(n)
        for f in os.listdir(package):
            if f in zeroed_data:
                open(os.path.join(dest, f), "wb").write(zeroed_data[f])
            else:
                shutil.copy(os.path.join(package, f), os.path.join(dest, f))
    # one tar-like stream: name, size, bytes; xz; split
    blob = os.path.join(args.dir, "all.xz")
    with lzma.open(blob, "wb", preset=6) as out:
        for root, _, files in os.walk(stage):
            for f in sorted(files):
                p = os.path.join(root, f)
                rel = os.path.relpath(p, stage).encode()
                out.write(struct.pack("<IQ", len(rel), os.path.getsize(p)) + rel)
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, out)
    shutil.rmtree(stage)
    part, n = args.part_mb * 10 ** 6, 0
    with open(blob, "rb") as src:
        while chunk := src.read(part):
            open(os.path.join(args.dir, f"part-{n}.xz"), "wb").write(chunk)
            n += 1
    os.remove(blob)
    print(f"{n} parts in {args.dir}")


def unpack(args):
    parts = sorted((p for p in os.listdir(args.dir) if p.startswith("part-")), key=lambda p: int(p[5:-3]))
    blob = os.path.join(args.dest, "all.xz")
    os.makedirs(args.dest, exist_ok=True)
    with open(blob, "wb") as out:
        for p in parts:
            with open(os.path.join(args.dir, p), "rb") as src:
                shutil.copyfileobj(src, out)
    with lzma.open(blob, "rb") as src:
        while head := src.read(12):
            nlen, size = struct.unpack("<IQ", head)
            rel = src.read(nlen).decode()
            dst = os.path.join(args.dest, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as out:
                left = size
                while left:
                    b = src.read(min(left, 1 << 24))
                    out.write(b)
                    left -= len(b)
    os.remove(blob)
    for exe in ("bench", "segment"):
        os.chmod(os.path.join(args.dest, exe), 0o755)
    capi = os.path.join(args.dest, "py", "onnxruntime", "capi")
    if os.path.isdir(capi):                   # the Python module loads its providers from its own folder
        for lib in os.listdir(os.path.join(args.dest, "ort")):
            if "providers" in lib and not os.path.exists(os.path.join(capi, lib)):
                os.symlink(os.path.join("..", "..", "..", "ort", lib), os.path.join(capi, lib))
    # refill the float weights (seeded, N(0, 0.02)) and recompute the manifest's hashes
    for pkg in sorted(os.path.join(args.dest, d) for d in os.listdir(args.dest) if d.startswith("paper")):
        refill(pkg)
    print(f"unpacked {len(parts)} parts into {args.dest}")


def refill(pkg):
    import numpy as np
    rng = np.random.default_rng(0)
    for g in ("encoder", "decoder"):
        for loc, off, n in float_ranges(os.path.join(pkg, g + ".onnx")):
            mm = np.memmap(os.path.join(pkg, loc), dtype=np.uint8, mode="r+", offset=off, shape=(n,))
            mm[:] = (rng.standard_normal(n // 4, dtype=np.float32) * 0.02).view(np.uint8)
            mm.flush()
            del mm
    man_path = os.path.join(pkg, "sam3d-model.json")
    man = json.load(open(man_path))
    for g in man["graphs"].values():
        for f in g["sha256"]:
            g["sha256"][f] = hashlib.sha256(open(os.path.join(pkg, f), "rb").read()).hexdigest()
    json.dump(man, open(man_path, "w"), indent=2)


def synthetic_ct(args):
    """A 512 x 512 x 300 int16 NIfTI-1 (0.8 x 0.8 x 1 mm, RAS sform) of seeded noise around soft tissue:
    the benchmark volume's size where nibabel and the example CT are not at hand (the timings do not
    depend on the values)."""
    import numpy as np
    dims, spacing = (512, 512, 300), (0.8, 0.8, 1.0)
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)                     # datatype int16, bitpix
    struct.pack_into("<8f", hdr, 76, 1.0, *spacing, 0, 0, 0, 0)
    struct.pack_into("<f", hdr, 108, 352.0)                     # vox_offset
    struct.pack_into("<ff", hdr, 112, 1.0, 0.0)                 # scl_slope, scl_inter
    hdr[123] = 10                                               # xyzt_units: mm, s
    struct.pack_into("<hh", hdr, 252, 1, 1)                     # qform_code, sform_code
    for row, (i, v) in enumerate(zip(range(3), spacing)):
        r = [0.0, 0.0, 0.0, -100.0]
        r[i] = v
        struct.pack_into("<4f", hdr, 280 + 16 * row, *r)
    hdr[344:348] = b"n+1\0"
    vol = np.random.default_rng(0).normal(40, 30, size=dims[::-1]).astype(np.int16)   # z, y, x in memory
    with open(args.out + ".part", "wb") as f:
        f.write(hdr + bytes(4))
        f.write(vol.tobytes())
    os.replace(args.out + ".part", args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("wheel")
    p.add_argument("package", help="the paper-size package; more, comma-separated, go to paper-<name>")
    p.add_argument("examples", help="folder holding the bench and segment examples (target/release/examples)")
    p.add_argument("dir")
    p.add_argument("--sm", type=int, default=90)
    p.add_argument("--part-mb", type=int, default=30)
    p.add_argument("--python", action="store_true", help="also the wheel's Python module (DEST/py)")
    u = sub.add_parser("unpack")
    u.add_argument("dir")
    u.add_argument("dest")
    c = sub.add_parser("ct")
    c.add_argument("out")
    a = ap.parse_args(argv)
    {"pack": pack, "unpack": unpack, "ct": synthetic_ct}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
