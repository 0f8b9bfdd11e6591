#!/usr/bin/env python3
"""Seed corpora and reproducers for the fuzz targets (fuzz/README.md), made from the repository's
own files (examples/data, tests/fixtures/models); python3's standard library only, no network.

Writes:
  fuzz/seeds/<target>/        the seed corpora (generated, git-ignored; rewritten on every run)
  fuzz/regressions/<target>/  reproducers of known bugs under 200 KB (committed; a file that is
                              already there is left as it is, so regenerating causes no churn)
Reproducers of 200 KB or more go to fuzz/seeds/<target>/ as big-*.

Targets and the byte formats they read: fuzz/harness/mod.rs.
"""

import argparse
import gzip
import hashlib
import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
REGRESSION_LIMIT = 200_000

# ------------------------------------------------------------------------------------------------
# output


class Out:
    def __init__(self, force):
        self.force = force
        self.seeds = {}  # target -> {name: bytes}
        self.regressions = {}  # target -> {name: bytes}

    def seed(self, target, name, data):
        self.seeds.setdefault(target, {})[name] = bytes(data)

    def regression(self, target, name, data):
        """A reproducer: committed when small, else a big-* seed."""
        data = bytes(data)
        if len(data) < REGRESSION_LIMIT:
            self.regressions.setdefault(target, {})[name] = data
        else:
            self.seed(target, "big-" + name, data)

    def write(self):
        for target, files in sorted(self.seeds.items()):
            d = FUZZ / "seeds" / target
            d.mkdir(parents=True, exist_ok=True)
            for old in d.iterdir():
                if old.is_file() and old.name not in files:
                    old.unlink()
            for name, data in files.items():
                p = d / name
                if not (p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data):
                    p.write_bytes(data)
        written = 0
        for target, files in sorted(self.regressions.items()):
            d = FUZZ / "regressions" / target
            d.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                p = d / name
                if self.force or not p.exists():
                    p.write_bytes(data)
                    written += 1
        (FUZZ / "seeds").mkdir(parents=True, exist_ok=True)
        (FUZZ / "seeds" / ".stamp").write_text("made by tools/fuzz_seeds.py\n")
        for target in sorted(self.seeds):
            files = self.seeds[target]
            size = sum(map(len, files.values()))
            print(f"fuzz/seeds/{target}: {len(files)} files, {size} bytes; "
                  f"fuzz/regressions/{target}: {len(self.regressions.get(target, {}))} reproducers")
        if written:
            print(f"{written} reproducers written to fuzz/regressions")


def gz(data, level=9):
    """gzip with a fixed header (mtime 0, no name): the same bytes on every run."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def gz_zeros(prefix, zeros, level=6):
    """gzip of `prefix` followed by `zeros` zero bytes, compressed in pieces."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", c.compress(prefix)]
    crc = zlib.crc32(prefix)
    block = bytes(16 << 20)
    left = zeros
    while left:
        piece = block[: min(left, len(block))]
        out.append(c.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    out.append(c.flush())
    out.append(struct.pack("<II", crc & 0xFFFFFFFF, (len(prefix) + zeros) & 0xFFFFFFFF))
    return b"".join(out)


# ------------------------------------------------------------------------------------------------
# nifti

# NIfTI-1 header fields in file order (348 bytes)
HDR = ("i10s18sihcc8h3fhhhh8ffffhcc4f2i80s24shh6f12f16s4s")
FIELDS = ["sizeof_hdr", "data_type", "db_name", "extents", "session_error", "regular", "dim_info",
          "dim", "intent_p", "intent_code", "datatype", "bitpix", "slice_start", "pixdim",
          "vox_offset", "scl_slope", "scl_inter", "slice_end", "slice_code", "xyzt_units",
          "cal", "glmax", "glmin", "descrip", "aux_file", "qform_code", "sform_code", "quatern",
          "srow", "intent_name", "magic"]
GROUPS = {"dim": 8, "intent_p": 3, "pixdim": 8, "cal": 4, "quatern": 6, "srow": 12}


def parse_header(b):
    vals = list(struct.unpack("<" + HDR, b[:348]))
    h = {}
    for f in FIELDS:
        n = GROUPS.get(f)
        if n:
            h[f], vals = list(vals[:n]), vals[n:]
        else:
            h[f], vals = vals[0], vals[1:]
    return h


def pack_header(h, endian="<"):
    vals = []
    for f in FIELDS:
        v = h[f]
        vals.extend(v if f in GROUPS else [v])
    return struct.pack(endian + HDR, *vals)


# NIfTI datatype code -> (struct code, bytes per voxel)
DTYPES = {2: ("B", 1), 256: ("b", 1), 512: ("H", 2), 4: ("h", 2), 768: ("I", 4), 8: ("i", 4),
          1280: ("Q", 8), 1024: ("q", 8), 16: ("f", 4), 64: ("d", 8)}
NAMES = {2: "u8", 256: "i8", 512: "u16", 4: "i16", 768: "u32", 8: "i32", 1280: "u64", 1024: "i64",
         16: "f32", 64: "f64"}


def encode(values, code, endian="<"):
    fmt, _ = DTYPES[code]
    if fmt in "BbHIQ":
        lo, hi = {"B": (0, 255), "b": (-128, 127), "H": (0, 65535), "I": (0, 2**32 - 1),
                  "Q": (0, 2**64 - 1)}[fmt]
        values = [min(max(int(v), lo), hi) for v in values]
    elif fmt in "hiq":
        values = [int(v) for v in values]
    return struct.pack(f"{endian}{len(values)}{fmt}", *values)


class Nifti:
    """The sample CT's header and a small block of its voxels, to derive variants from."""

    def __init__(self):
        raw = gzip.decompress((ROOT / "examples/data/sample_ct_lesion.nii.gz").read_bytes())
        self.base = parse_header(raw)
        nx, ny, nz = self.base["dim"][1:4]
        off = int(self.base["vox_offset"])
        vox = struct.unpack(f"<{nx * ny * nz}h", raw[off: off + 2 * nx * ny * nz])
        self.dims = (8, 7, 4)
        x0, y0, z0 = 88, 90, 8
        self.values = [vox[(x0 + i) + nx * ((y0 + j) + ny * (z0 + k))]
                       for k in range(4) for j in range(7) for i in range(8)]

    def header(self, dims=None, code=4, endian="<", **fields):
        h = dict(self.base)
        h = {k: (list(v) if isinstance(v, list) else v) for k, v in h.items()}
        d = dims or self.dims
        h["dim"] = [len(d)] + list(d) + [1] * (7 - len(d))
        h["datatype"] = code
        h["bitpix"] = 8 * DTYPES.get(code, ("", 1))[1]
        h["vox_offset"] = 352.0
        h.update(fields)
        return pack_header(h, endian)

    def image(self, code=4, endian="<", values=None, ext=b"\0\0\0\0", dims=None, **fields):
        values = self.values if values is None else values
        if "vox_offset" not in fields:
            fields["vox_offset"] = float(348 + len(ext))
        return self.header(dims, code, endian, **fields) + ext + encode(values, code, endian)


def extension(esize, ecode=6, body=b"", endian="<"):
    return struct.pack(endian + "ii", esize, ecode) + body


def flip_bit(data, at, bit=3):
    b = bytearray(data)
    b[at] ^= 1 << bit
    return bytes(b)


def nifti_seeds(out):
    n = Nifti()
    for f in sorted((ROOT / "examples/data").glob("*.nii.gz")):
        out.seed("nifti", f.name, f.read_bytes())
    base = n.image()
    out.seed("nifti", "small-i16.nii", base)
    out.seed("nifti", "small-i16.nii.gz", gz(base))
    for code, name in NAMES.items():
        vals = [v / 7.0 for v in n.values] if name.startswith("f") else n.values
        out.seed("nifti", f"small-{name}.nii", n.image(code, values=vals))
        out.seed("nifti", f"small-{name}-be.nii", n.image(code, ">", values=vals))
    out.seed("nifti", "small-i16-be.nii.gz", gz(n.image(4, ">")))
    for code, name in [(32, "complex64"), (128, "rgb24"), (1, "binary"), (2304, "rgba32"),
                       (1536, "float128"), (0, "unknown"), (-1, "negative")]:
        out.seed("nifti", f"unsupported-{name}.nii",
                 n.header(code=code) + b"\0" * 4 + bytes(224 * 16))
    # extensions
    comment = b"libsam3d fuzz seed comment\0\0\0\0\0\0"
    ext1 = b"\1\0\0\0" + extension(8 + len(comment), 6, comment)
    out.seed("nifti", "extension.nii", n.image(ext=ext1))
    out.seed("nifti", "extension.nii.gz", gz(n.image(ext=ext1)))
    ext2 = ext1 + extension(24, 4, bytes(16))
    out.seed("nifti", "two-extensions.nii", n.image(ext=ext2))
    out.seed("nifti", "extension-be.nii", n.image(4, ">", ext=b"\1\0\0\0" + extension(
        8 + len(comment), 6, comment, ">")))
    # magic and layout
    out.seed("nifti", "pair-ni1.hdr", n.image(magic=b"ni1\0", vox_offset=0.0))
    out.seed("nifti", "analyze-no-magic.hdr", n.image(magic=b"\0\0\0\0", vox_offset=0.0))
    nifti2 = bytearray(544)
    struct.pack_into("<i8s", nifti2, 0, 540, b"n+2\0\r\n\x1a\n")
    out.seed("nifti", "nifti2-header.nii", bytes(nifti2))
    # truncations
    out.seed("nifti", "header-only.nii", base[:348])
    out.seed("nifti", "half-data.nii", base[: 352 + 224])
    out.seed("nifti", "100-bytes.nii", base[:100])
    out.seed("nifti", "empty.nii", b"")
    out.seed("nifti", "gzip-magic-only.nii.gz", b"\x1f\x8b")
    g = gz(base)
    out.seed("nifti", "gzip-cut.nii.gz", g[: len(g) // 2])
    out.seed("nifti", "gzip-no-trailer.nii.gz", g[:-8])
    # gzip forms
    out.seed("nifti", "gzip-two-members.nii.gz", gz(base[:352]) + gz(base[352:]))
    out.seed("nifti", "gzip-trailing-garbage.nii.gz", g + b"garbage after the gzip stream")
    out.seed("nifti", "gzip-level1.nii.gz", gz(base, 1))
    named = io.BytesIO()
    with gzip.GzipFile(filename="named.nii", mode="wb", fileobj=named, mtime=0) as f:
        f.write(base)
    out.seed("nifti", "gzip-fname.nii.gz", named.getvalue())
    out.seed("nifti", "gzip-declared-plus-1KiB.nii.gz", gz(base + bytes(1024)))
    # scaling
    for name, slope, inter in [("slope0", 0.0, 5.0), ("slope-nan", float("nan"), 0.0),
                               ("slope-inf", float("inf"), 0.0), ("inter-nan", 1.0, float("nan")),
                               ("slope2-inter-1024", 2.0, -1024.0), ("slope-huge", 3e38, 3e38)]:
        out.seed("nifti", f"scale-{name}.nii", n.image(scl_slope=slope, scl_inter=inter))
    # transforms
    out.seed("nifti", "qform-only.nii", n.image(qform_code=1, sform_code=0,
                                                 quatern=[0.1, 0.2, 0.3, -10.0, 20.0, 30.0]))
    out.seed("nifti", "qform-qfac-negative.nii", n.image(
        qform_code=1, sform_code=0, pixdim=[-1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]))
    out.seed("nifti", "sform-only-code2.nii", n.image(qform_code=0, sform_code=2))
    out.seed("nifti", "no-transform.nii", n.image(qform_code=0, sform_code=0))
    out.seed("nifti", "sform-oblique.nii", n.image(sform_code=1, srow=[
        0.9, -0.3, 0.0, 10.0, 0.3, 0.9, 0.0, -20.0, 0.0, 0.0, 2.0, 5.0]))
    out.seed("nifti", "sform-zero-column.nii", n.image(sform_code=1, srow=[
        0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    out.seed("nifti", "qform-quaternion-nan.nii", n.image(qform_code=1, sform_code=0, quatern=[
        float("nan"), 0.0, 0.0, 0.0, 0.0, 0.0]))
    out.seed("nifti", "sform-singular.nii", n.image(sform_code=1, srow=[
        1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1e-30, 0.0]))
    # dimensions
    out.seed("nifti", "2d.nii", n.image(dims=(8, 28), values=n.values))
    out.seed("nifti", "4d-one-volume.nii", n.image(dims=(8, 7, 4, 1)))
    out.seed("nifti", "4d-two-volumes.nii", n.image(dims=(8, 7, 2, 2)))
    out.seed("nifti", "7d-ones.nii", n.image(dims=(8, 7, 4, 1, 1, 1, 1)))
    out.seed("nifti", "single-slice-pixdim0.nii", n.image(
        dims=(8, 7, 1), values=n.values[:56], pixdim=[1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    out.seed("nifti", "pixdim-nan.nii", n.image(pixdim=[1.0, float("nan"), 1.0, 1.0, 1, 1, 1, 1]))
    out.seed("nifti", "one-voxel.nii", n.image(dims=(1, 1, 1), values=[100]))
    # values
    special = [float("nan"), float("inf"), float("-inf"), -0.0, 1e-45, 3.4e38] * 40
    out.seed("nifti", "f32-nonfinite.nii", n.image(16, values=special[:224]))
    out.seed("nifti", "f64-nonfinite.nii", n.image(64, values=special[:224]))


def nifti_regressions(out):
    n = Nifti()
    # (b) decompression bombs: 1024^3 uint8 zeros
    big = n.header(dims=(1024, 1024, 1024), code=2) + b"\0" * 4
    out.regression("nifti", "bomb-1024cubed-u8-128MiB-of-zeros.nii.gz", gz_zeros(big, 128 << 20))
    out.regression("nifti", "bomb-1024cubed-u8-full.nii.gz", gz_zeros(big, 1 << 30))
    out.regression("nifti", "bomb-small-header-128MiB-trailing-zeros.nii.gz",
                   gz_zeros(n.image(), 128 << 20))
    # (c) extensions with esize 0 and other impossible sizes
    for esize in [0, 8, -16, 7, 0x7FFFFFF0]:
        ext = b"\1\0\0\0" + extension(esize, 6, bytes(16))
        name = f"extension-esize-{'minus' if esize < 0 else ''}{abs(esize)}"
        out.regression("nifti", f"{name}.nii", n.image(ext=ext, vox_offset=368.0))
        out.regression("nifti", f"{name}.nii.gz", gz(n.image(ext=ext, vox_offset=368.0)))
    # (d) one flipped bit in the deflate stream (a gzip header is 10 bytes, the trailer 8)
    g = gz(n.image())
    body = len(g) - 18
    for name, at in [("start", 10 + 2), ("middle", 10 + body // 2), ("end", 10 + body - 2),
                     ("crc", len(g) - 6), ("isize", len(g) - 2)]:
        out.regression("nifti", f"gzip-bitflip-{name}.nii.gz", flip_bit(g, at))
    ct = (ROOT / "examples/data/sample_ct_lesion.nii.gz").read_bytes()
    out.regression("nifti", "ct-gzip-bitflip-middle.nii.gz", flip_bit(ct, len(ct) // 2))
    # (e) vox_offset beyond the end and other impossible offsets
    for name, off in [("beyond-end", 100000.0), ("1e30", 1e30), ("nan", float("nan")),
                      ("negative", -352.0), ("inside-header", 100.0), ("fraction", 352.5),
                      ("2pow31", 2.0**31), ("inf", float("inf"))]:
        out.regression("nifti", f"vox-offset-{name}.nii", n.image(vox_offset=off))
        out.regression("nifti", f"vox-offset-{name}.nii.gz", gz(n.image(vox_offset=off)))
    # (f) dim[0] out of range, negative and zero dims, and the largest int16 dims
    for name, dim in [("dim0-8", [8, 8, 7, 4, 1, 1, 1, 1]), ("dim0-0", [0, 8, 7, 4, 1, 1, 1, 1]),
                      ("dim0-minus1", [-1, 8, 7, 4, 1, 1, 1, 1]),
                      ("dim0-32767", [32767, 8, 7, 4, 1, 1, 1, 1]),
                      ("dim1-minus1", [3, -1, 7, 4, 1, 1, 1, 1]),
                      ("dim3-minus32768", [3, 8, 7, -32768, 1, 1, 1, 1]),
                      ("dim2-0", [3, 8, 0, 4, 1, 1, 1, 1]),
                      ("dims-32767-cubed", [3, 32767, 32767, 32767, 1, 1, 1, 1]),
                      ("dim5-minus1", [5, 8, 7, 4, 1, -1, 1, 1])]:
        h = parse_header(n.image())
        h["dim"] = dim
        out.regression("nifti", f"{name}.nii", pack_header(h) + n.image()[348:])


# ------------------------------------------------------------------------------------------------
# manifest


def dummy_sha(name):
    """SHA-256 of the harness's dummy file `name` (harness::dummy_content)."""
    return hashlib.sha256(f"sam3d fuzz dummy file: {name}\n".encode()).hexdigest()


def with_files(m, enc="encoder.onnx", dec="decoder.onnx", enc_data=(), hashes=None):
    m = json.loads(json.dumps(m))
    for key, file, data in [("encoder", enc, list(enc_data)), ("decoder", dec, [])]:
        g = m["graphs"][key]
        g["file"] = file
        g["data_files"] = data
        g["sha256"] = {f: dummy_sha(f) for f in [file] + data}
        if hashes is not None:
            g["sha256"] = hashes(file, data)
    return m


def dumps(m, indent=2):
    return json.dumps(m, indent=indent, ensure_ascii=False).encode()


def manifest_seeds(out):
    fixtures = sorted((ROOT / "tests/fixtures/models").glob("*/sam3d-model.json"))
    base = None
    for f in fixtures:
        text = f.read_bytes()
        name = f.parent.name
        out.seed("manifest", f"{name}-verbatim.json", text)
        m = json.loads(text)
        out.seed("manifest", f"{name}-dummy-hashes.json", dumps(with_files(m)))
        if name == "tiny-orient":
            base = with_files(m)
    assert base is not None, "tests/fixtures/models/tiny-orient is missing"

    def variant(name, edit, m=None):
        m = json.loads(json.dumps(base if m is None else m))
        edit(m)
        out.seed("manifest", name + ".json", dumps(m))

    def arch(key, value):
        return lambda m: m["architecture"].__setitem__(key, value)

    def top(key, value):
        return lambda m: m.__setitem__(key, value)

    def delete(key):
        return lambda m: m.pop(key)

    out.seed("manifest", "compact.json", dumps(base, None))
    out.seed("manifest", "data-file-in-subfolder.json",
             dumps(with_files(base, enc_data=["sub/encoder.onnx"])))
    for f in ["dir.onnx", "link-inside.onnx", "link-outside.onnx", "link-abs.onnx",
              "link-loop.onnx", "link-dangling.onnx", "fifo.onnx", "missing.onnx", "", ".",
              "./encoder.onnx", "sub/../encoder.onnx", "sub", "encoder.onnx/", "sam3d-model.json",
              "ENCODER.ONNX", "encoder.onnx\u0000.txt", "\u00e9ncoder.onnx"]:
        safe = "".join(c if c.isalnum() else "_" for c in f) or "empty"
        out.seed("manifest", f"file-{safe}.json", dumps(with_files(base, enc=f)))
    out.seed("manifest", "file-link-inside-right-hash.json", dumps(with_files(
        base, enc="link-inside.onnx",
        hashes=lambda f, d: {f: dummy_sha("encoder.onnx")})))
    variant("sha256-uppercase", lambda m: m["graphs"]["encoder"]["sha256"].update(
        {"encoder.onnx": dummy_sha("encoder.onnx").upper()}))
    variant("sha256-short", lambda m: m["graphs"]["encoder"]["sha256"].update(
        {"encoder.onnx": dummy_sha("encoder.onnx")[:10]}))
    variant("sha256-extra-key", lambda m: m["graphs"]["encoder"]["sha256"].update(
        {"sub/encoder.onnx": dummy_sha("sub/encoder.onnx")}))
    variant("sha256-missing", lambda m: m["graphs"]["encoder"]["sha256"].clear())
    variant("frame-array", lambda m: m.__setitem__(
        "frame", {"mode": "array", "orientation": None, "array_transpose": [2, 1, 0]}))
    for t in [[0, 0, 1], [0, 1, 3], [0, 1], [-1, 1, 2]]:
        variant(f"frame-array-{'_'.join(map(str, t))}", lambda m, t=t: m.__setitem__(
            "frame", {"mode": "array", "array_transpose": t}))
    for o in ["LPI", "RRS", "RA", "RASX", "R A", "ras", "RA\u015c", "\u00c4AS", ""]:
        safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in o) or "empty"
        variant(f"orientation-{safe}", lambda m, o=o: m["frame"].__setitem__("orientation", o))
    variant("frame-unknown", lambda m: m["frame"].__setitem__("mode", "world"))
    for c in [0, -1, 1.5, "32", 1e300, 2**64, 255, 256, 257, 2**31, None]:
        variant(f"crop-{c}", arch("crop", c))
    variant("crop-missing", lambda m: m["architecture"].pop("crop"))
    for s in [[0, 1, 1], [-1, 1, 1], [1e308, 1, 1], [5e-324, 1, 1], [1, 1]]:
        variant(f"spacing-{'_'.join(map(str, s))}", top("spacing_mm", s))
    variant("intensity-clip-reversed", lambda m: m["intensity"].__setitem__("clip", [240, -160]))
    variant("intensity-std-0", lambda m: m["intensity"].__setitem__("std", 0))
    variant("intensity-nonfinite-zero", lambda m: m["intensity"].__setitem__("nonfinite", "zero"))
    variant("intensity-nonfinite-ignore", lambda m: m["intensity"].__setitem__("nonfinite", "x"))
    for t in [0, 1, 0.35, -0.5, 1e-300]:
        variant(f"threshold-{t}", top("threshold", t))
    for flips, keep in [(8, True), (3, False), (0, False), (2**32, False)]:
        variant(f"inference-{flips}-{keep}", top(
            "inference", {"test_time_flips": flips, "keep_clicked_components": keep}))
    for p in [0, 1, 1024, 1025, 2**64 - 1, -1]:
        variant(f"max-points-{p}", lambda m, p=p: m["prompts"].__setitem__("max_points", p))
    variant("positive-points-false", lambda m: m["prompts"].__setitem__("positive_points", False))
    variant("format-version-2", top("format_version", 2))
    variant("format-other", top("format", "onnx-model"))
    variant("no-graphs", delete("graphs"))
    variant("encoder-two-inputs", lambda m: m["graphs"]["encoder"]["inputs"].append(
        {"name": "x", "shape": [1]}))
    variant("decoder-no-points", lambda m: m["graphs"]["decoder"]["inputs"].pop())
    variant("unknown-field", top("zzz", {"a": [1, 2, 3]}))
    out.seed("manifest", "outside-absolute-token-in-description.json",
             dumps(dict(base, description="@OUTSIDE_ABS@")))
    # not JSON, or JSON of the wrong shape
    out.seed("manifest", "empty.json", b"")
    out.seed("manifest", "null.json", b"null")
    out.seed("manifest", "array.json", b"[1, 2, 3]")
    out.seed("manifest", "bom.json", b"\xef\xbb\xbf" + dumps(base))
    out.seed("manifest", "latin1.json", dumps(base).replace(b"Apache", b"Apach\xe9"))
    out.seed("manifest", "nested-300.json", b"[" * 300 + b"]" * 300)
    text = dumps(base).decode()
    out.seed("manifest", "duplicate-key.json", text.replace(
        '"name": "tiny-orient"', '"name": "tiny-orient", "name": "again"', 1).encode())
    out.seed("manifest", "truncated.json", dumps(base)[:1000])


def manifest_regressions(out):
    fixture = json.loads((ROOT / "tests/fixtures/models/tiny-orient/sam3d-model.json").read_text())
    base = with_files(fixture)
    # (g) graph files outside the package, with the right hashes (only the path rule stops them)
    outside = "sam3d fuzz dummy file: outside.onnx\n"
    outside_sha = hashlib.sha256(outside.encode()).hexdigest()

    def outside_file(name):
        return lambda file, data: {file: outside_sha, **{d: dummy_sha(d) for d in data}}

    for tag, f in [("dotdot", "../outside.onnx"), ("absolute", "@OUTSIDE_ABS@"),
                   ("sub-dotdot-dotdot", "sub/../../outside.onnx"),
                   ("dot-dotdot", "./../outside.onnx")]:
        out.regression("manifest", f"graph-file-{tag}.json",
                       dumps(with_files(base, enc=f, hashes=outside_file(f))))
    m = with_files(base, enc_data=["../outside.onnx"])
    m["graphs"]["encoder"]["sha256"]["../outside.onnx"] = outside_sha
    out.regression("manifest", "data-file-dotdot.json", dumps(m))
    m = with_files(base)
    m["graphs"]["decoder"]["sha256"]["../outside.onnx"] = outside_sha
    out.regression("manifest", "sha256-key-dotdot.json", dumps(m))
    out.regression("manifest", "graph-file-etc-passwd.json", dumps(with_files(
        base, enc="/etc/passwd", hashes=lambda f, d: {f: "0" * 64})))
    out.regression("manifest", "graph-file-dev-zero.json", dumps(with_files(
        base, enc="/dev/zero", hashes=lambda f, d: {f: "0" * 64})))
    # (h) crops the engine cannot afford
    for c in [1024, 1025, 4096]:
        m = json.loads(json.dumps(base))
        m["architecture"]["crop"] = c
        out.regression("manifest", f"crop-{c}.json", dumps(m))


# ------------------------------------------------------------------------------------------------
# buffer: the byte format of harness::buffer

U8, I8, U16, I16, U32, I32, F32, F64 = range(1, 9)
ESIZE = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, F64: 8}

ORIENT, ARRAY, NULL_DATA, WRONG_ABI, PROGRESS, EARLY_FREE = 0, 1, 2, 0x20, 0x40, 0x80


def misalign(k):
    return (k & 7) << 2


def d_small(n):
    assert 1 <= n <= 48
    return bytes([n - 1])


def d_u16(n):
    return b"\xc0" + struct.pack("<H", n)


def d_raw(n):
    return bytes([0xE0 + 15]) + struct.pack("<Q", n)


S_DENSE = b"\x00"


def s_raw(v):
    return b"\x02" + struct.pack("<q", v)


def s_esize_times(k):
    return b"\x01" + struct.pack("<b", k)


def buffer_desc(setup=0, dtype=I16, dims=(d_small(16), d_small(16), d_small(8)),
                strides=(S_DENSE, S_DENSE, S_DENSE), buf=b"\x00", size=b"\x00", fill=b"\x04",
                spacing=b"\x00", origin=b"\x00", direction=b"\x00"):
    dt = bytes([dtype]) if 0 <= dtype < 0xF0 else b"\xf0" + struct.pack("<i", dtype)
    return (bytes([setup]) + dt + b"".join(dims) + b"".join(strides) + buf + size + fill
            + spacing + origin + direction)


def op_add():
    return b"\x04\x00"


def op_click(obj=0, coord=0, point=(b"\x60", b"\x60", b"\x60")):
    c = bytes([coord]) if 0 <= coord < 3 else bytes([0xF0 + {3: 0, -1: 1}.get(coord, 2)])
    return b"\x00" + bytes([obj]) + c + b"".join(point)


def op(code, obj=0, *args):
    return bytes([code, obj]) + bytes(args)


def value_raw(v):
    return b"\xff" + struct.pack("<d", v)


def point_raw(v):
    # click_point: >= 0xe0 takes a `value`, whose >= 0xe0 form is raw f64 bits
    return b"\xe0" + value_raw(v)


def buffer_seeds(out):
    session = op_add() + op_click() + op(3, 0, 0) + op(1) + op(2) + op(7) + op(6)
    out.seed("buffer", "i16-dense-click-undo-redo", buffer_desc() + session)
    out.seed("buffer", "i16-dense-array-model", buffer_desc(setup=ARRAY) + session)
    out.seed("buffer", "f32-progress-cancel", buffer_desc(setup=PROGRESS, dtype=F32)
             + op_add() + op(9, 0, 3) + op_click() + op_click(point=(b"\x40", b"\x50", b"\x60"))
             + op(3, 0, 0))
    out.seed("buffer", "u8-lps-ras-rotated", buffer_desc(dtype=U8, direction=b"\x02\x02\x20")
             + op_add() + op_click(coord=1) + op_click(coord=2, point=(b"\x30", b"\x80", b"\x50"))
             + op(3, 0, 0))
    out.seed("buffer", "u16-permuted-flipped", buffer_desc(dtype=U16, direction=b"\x01\x1d")
             + op_add() + op_click() + op(3, 0, 0))
    out.seed("buffer", "i32-oblique-spacing", buffer_desc(
        dtype=I32, spacing=b"\x02\x08\x10\x20",
        origin=b"\x01\x10\x90\xff" + struct.pack("<d", -123.5),
        direction=b"\x02\x00\x10") + op_add() + op_click(coord=1) + op(3, 0, 0))
    out.seed("buffer", "negative-k-stride", buffer_desc(strides=(S_DENSE, S_DENSE, b"\x80"))
             + op_add() + op_click())
    out.seed("buffer", "padded-rows", buffer_desc(
        strides=(S_DENSE, s_esize_times(20), b"\x06" + struct.pack("<H", 20 * 16)),
        buf=b"\x03") + op_add() + op_click() + op(3, 0, 0))
    out.seed("buffer", "f64-misaligned", buffer_desc(setup=misalign(3), dtype=F64)
             + op_add() + op_click() + op(3, 0, 0))
    out.seed("buffer", "null-data", buffer_desc(setup=NULL_DATA))
    for dt in [0, 9, 0x7FFFFFFF, -1]:
        out.seed("buffer", f"dtype-{dt}", buffer_desc(dtype=dt))
    for name, dims in [("u64-max", d_raw(2**64 - 1)), ("2pow32", b"\xe1"), ("zero", b"\xe0"),
                       ("i64-max", b"\xe8"), ("65535", d_u16(65535))]:
        out.seed("buffer", f"dims-{name}", buffer_desc(dims=(dims, d_small(4), d_small(4)))
                 + op_add() + op_click())
    out.seed("buffer", "size-one-short", buffer_desc(size=b"\x01\x01") + op_add() + op_click())
    out.seed("buffer", "size-zero", buffer_desc(size=b"\x02"))
    out.seed("buffer", "f32-nan-voxel", buffer_desc(dtype=F32, fill=b"\x05\x07\x00")
             + op_add() + op_click())
    out.seed("buffer", "flips8-keep", buffer_desc() + op_add() + op(5, 0, 3, 1) + op(6)
             + op_click() + op(3, 0, 0) + op(5, 0, 4, 2) + op(5, 0, 7, 3))
    out.seed("buffer", "objects", buffer_desc() + op_add() + op_add() + op_add()
             + op_click(obj=2) + op_click(obj=7) + op_click(obj=0xF0) + op(3, 2, 0) + op(3, 1, 1)
             + op(7, 2) + op(1, 2) + op(11, 2) + op(2, 2))
    out.seed("buffer", "clicks-outside", buffer_desc() + op_add()
             + op_click(point=(b"\xc4", b"\x60", b"\x60"))
             + op_click(point=(b"\xc2", b"\xc3", b"\x60"))
             + op_click(point=(point_raw(float("nan")), b"\x60", b"\x60"))
             + op_click(point=(point_raw(float("inf")), b"\x60", b"\x60"))
             + op_click(point=(b"\xe0\x86", b"\xe0\x88", b"\x60"))
             + op_click(coord=3) + op_click(coord=-1) + op_click(point=(b"\xc0", b"\xc1", b"\xc0")))
    out.seed("buffer", "wrong-abi", buffer_desc(setup=WRONG_ABI) + op_add() + op_click())
    out.seed("buffer", "early-volume-free", buffer_desc(setup=EARLY_FREE) + session)
    out.seed("buffer", "null-pointers", buffer_desc() + op_add() + op(10) + op(8) + op_click())
    out.seed("buffer", "one-voxel", buffer_desc(dims=(d_small(1),) * 3)
             + op_add() + op_click(point=(b"\x00", b"\x00", b"\x00")) + op(3, 0, 0))
    out.seed("buffer", "thin-slab", buffer_desc(dims=(d_small(48), d_small(40), d_small(1)),
                                                spacing=b"\x02\x00\x00\x40")
             + op_add() + op_click() + op(3, 0, 0))
    out.seed("buffer", "singular-direction", buffer_desc(direction=b"\x04"))
    out.seed("buffer", "near-singular-direction", buffer_desc(direction=b"\x05\x2c"))
    out.seed("buffer", "raw-geometry", buffer_desc(
        spacing=b"\x01\x80\x81\x85", origin=b"\x01\x89\x8a\x8b", direction=b"\x03" + b"\x8c" * 9))
    # the prompts added later (op bytes 0xf4..): a labelled click (negative: refused by the
    # fixtures), a box, a starting segment, zoom-out set/get and the zoom that answered
    pt = b"\x60\x60\x60"
    out.seed("buffer", "prompts", buffer_desc() + op_add()
             + op(0xF4, 0, 0, 1) + pt                               # click_ex, IJK, negative
             + op(0xF4, 0, 0, 0) + pt                               # click_ex, positive
             + op(0xF5, 0, 0) + b"\x20\x20\x20" + b"\xa0\xa0\xa0"  # box from corner to corner
             + op(0xF6, 0, 0, 0, 2)                                 # set_mask, every 3rd voxel
             + op(0xF7, 0, 1) + op(0xF8) + op(0xF9) + op(1) + op(0xF9) + op(0xF7, 0, 4)
             + op(0xF6, 0, 0, 2, 0) + op(3, 0, 0))


def buffer_regressions(out):
    # (a) strides whose per-axis spans fit in i64 but whose sum wraps (to a few bytes), every sign
    # combination: the overflow in the bounds check, and a volume reaching outside its buffer
    for dims in [(2, 2, 2), (3, 3, 3), (4, 4, 4), (2, 3, 4)]:
        for dtype in [U8, F64] if dims == (3, 3, 3) else [U8]:
            es = ESIZE[dtype]
            mags = []
            for d in dims:
                total = 3 * (d - 1)
                s = -(-(2**64) // total)  # ceil(2^64 / total)
                s += (-s) % es  # a multiple of the element size
                mags.append(s)
            for signs in range(8):
                strides = [(-m if signs & (1 << a) else m) for a, m in enumerate(mags)]
                sign_tag = "".join("-" if signs & (1 << a) else "+" for a in range(3))
                desc = buffer_desc(dtype=dtype, dims=tuple(d_small(d) for d in dims),
                                   strides=tuple(s_raw(s) for s in strides),
                                   buf=b"\x01" + struct.pack("<I", 64), fill=b"\x01")
                kind = "u8" if dtype == U8 else "f64"
                signs_name = sign_tag.replace("+", "p").replace("-", "m")
                name = f"stride-sum-wraps-{'x'.join(map(str, dims))}-{kind}-{signs_name}"
                out.regression("buffer", name, desc + op_add() + op_click() + op(3, 0, 0))
    # strides near i64::MAX / 3 on tiny dims (the spans themselves near the edge)
    third = (2**63 - 1) // 3
    for k in [-1, 0, 1]:
        desc = buffer_desc(dtype=U8, dims=(d_small(3), d_small(3), d_small(3)),
                           strides=tuple(s_raw(third + k) for _ in range(3)),
                           buf=b"\x01" + struct.pack("<I", 64))
        out.regression("buffer", f"stride-i64max-third{k:+d}-3x3x3", desc + op_add() + op_click())
    desc = buffer_desc(dtype=U8, dims=(d_small(2), d_small(2), d_small(2)),
                       strides=(s_raw(2**63 - 1), s_raw(-(2**63)), s_raw(1)),
                       buf=b"\x01" + struct.pack("<I", 64))
    out.regression("buffer", "stride-i64-max-and-min", desc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true",
                    help="rewrite the reproducers in fuzz/regressions that exist already")
    args = ap.parse_args()
    out = Out(args.force)
    nifti_seeds(out)
    nifti_regressions(out)
    manifest_seeds(out)
    manifest_regressions(out)
    buffer_seeds(out)
    buffer_regressions(out)
    out.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
