"""The documentation is kept true: its code runs, and what it names exists.

1. The README's C++ quick start (its first ```cpp block) and the C example of docs/c-api.md (its first
   ```c block) compile with strict warnings against include/ and target/release, run from the
   repository root on the demo model, write a non-empty mask and print its voxel count; the README's
   shell commands for the quick start work as written.
2. Every relative Markdown link (and its #anchor) and every backticked repository path in README.md,
   CONTRIBUTING.md, CHANGELOG.md and docs/**/*.md exists.
3. Every `make <target>` in their code names a target of the Makefile.
4. Every `sam3d_onnx.<module>` they name exists under onnx/.

Run by `make test-docs` (after `make ort build`; the Makefile exports SAM3D_ORT_LIBRARY).
"""

import gzip
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md"] + sorted(
    (REPO / "docs").rglob("*.md")
)
LIBDIR = REPO / "target" / "release"

# Paths the docs may name that a checkout does not hold: build outputs, fetched files, the layout of
# an install prefix, a package's folder once installed.
GENERATED = (
    "target/", "build/", ".cache/", ".venv/", ".venv-slicer/", ".venv-triton/",
    "fuzz/seeds/", "fuzz/corpus/", "fuzz/artifacts/", "fuzz/target/",
    "lib/", "share/", "sam3d/_lib/", "python/sam3d/_lib/",
)
# top-level folders whose paths are checked even without an extension (models/demo-lesion)
TOP = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".git", ".pytest"))} - {
    "target", "build", ".cache", ".venv", ".venv-slicer", ".venv-triton"
}


def rel(p: Path) -> str:
    return str(p.relative_to(REPO))


# ---- Markdown parsing -------------------------------------------------------------------------

FENCE = re.compile(r"^(```+|~~~+)([^\n]*)\n(.*?)^\1[ \t]*$", re.M | re.S)


def fenced_blocks(text: str):
    """(language, code) of every fenced block, in order."""
    return [(m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without its fenced blocks (their lines kept blank, so line numbers stay)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


INLINE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)


def inline_code(text: str):
    """Inline code spans of the prose, whitespace normalised."""
    return [" ".join(m.group(2).split()) for m in INLINE.finditer(prose(text))]


def without_code(text: str) -> str:
    return INLINE.sub(" ", prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    h = h.replace("`", "").strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(md: Path):
    seen, out = {}, set()
    for line in prose(md.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


# ---- 1. the code in the docs runs -------------------------------------------------------------


def ort_library() -> str:
    lib = os.environ.get("SAM3D_ORT_LIBRARY") or str(REPO / ".cache/onnxruntime-cpu/libonnxruntime.so")
    if not Path(lib).is_file():
        pytest.fail(f"ONNX Runtime not found at {lib}: run `make ort` (or make test-docs, which exports "
                    "SAM3D_ORT_LIBRARY)")
    return lib


def need_library():
    if not (LIBDIR / "libsam3d.so").is_file():
        pytest.fail("target/release/libsam3d.so is missing: run `make build`")


def mask_voxels(path: Path) -> int:
    """Non-zero voxels of a uint8 NIfTI-1 mask (.nii or .nii.gz), read without third-party code."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    datatype = struct.unpack(endian + "h", data[70:72])[0]
    assert datatype == 2, f"{path}: datatype {datatype}, a uint8 mask expected"
    offset = int(struct.unpack(endian + "f", data[108:112])[0])
    dims = struct.unpack(endian + "8h", data[40:56])
    n = dims[1] * dims[2] * dims[3]
    voxels = data[offset:offset + n]
    assert len(voxels) == n, f"{path}: {len(voxels)} voxel bytes, {n} expected"
    return n - voxels.count(0)


def run_example(source: str, suffix: str, compiler: list, tmp_path: Path):
    """Compile `source` strictly against the library, run it from the repository root; return
    (stdout, the voxel count it printed, the mask file it wrote)."""
    need_library()
    src = tmp_path / f"example{suffix}"
    src.write_text(source)
    exe = tmp_path / "example"
    cmd = compiler + ["-Wall", "-Wextra", "-Werror", f"-I{REPO / 'include'}", str(src), "-o", str(exe),
                      f"-L{LIBDIR}", "-lsam3d", f"-Wl,-rpath,{LIBDIR}"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stderr}"
    written = re.findall(r'"(build/[^"]+\.nii(?:\.gz)?)"', source)
    assert len(written) == 1, f"the example should write one mask under build/, names {written}"
    mask = REPO / written[0]
    mask.parent.mkdir(parents=True, exist_ok=True)
    mask.unlink(missing_ok=True)
    env = dict(os.environ, SAM3D_ORT_LIBRARY=ort_library())
    run = subprocess.run([str(exe)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stdout}\n{run.stderr}"
    m = re.search(r"mask voxels (\d+)", run.stdout)
    assert m, f"no 'mask voxels N' in its output:\n{run.stdout}"
    printed = int(m.group(1))
    assert mask.is_file(), f"{written[0]} was not written"
    assert printed > 0, "the click found nothing"
    assert mask_voxels(mask) == printed, f"{written[0]} holds {mask_voxels(mask)} voxels, it printed {printed}"
    return run.stdout, printed, mask


def first_block(md: Path, lang: str) -> str:
    blocks = [code for l, code in fenced_blocks(md.read_text()) if l == lang]
    assert blocks, f"{rel(md)} has no ```{lang} block"
    return blocks[0]


def claimed_voxels(text: str) -> int:
    m = re.search(r"#\s*mask voxels (\d+)", text)
    assert m, "the README should say what the quick start prints (# mask voxels N)"
    return int(m.group(1))


def close_to(printed: int, claimed: int) -> bool:
    # the same mask on every machine measured; a few voxels at the threshold may differ with another
    # CPU's ONNX Runtime kernels
    return abs(printed - claimed) <= max(5, claimed // 50)


def test_readme_cpp_quick_start_compiles_and_runs(tmp_path):
    readme = REPO / "README.md"
    head = "\n".join(readme.read_text().splitlines()[:45])
    assert "make demo" in head and "make test" in head and "```cpp" in head, \
        "the README's first screen shows the two commands and the start of the C++ quick start"
    cxx = os.environ.get("CXX", "c++")
    _, printed, _ = run_example(first_block(readme, "cpp"), ".cpp", [cxx, "-std=c++17"], tmp_path)
    claimed = claimed_voxels(readme.read_text())
    assert close_to(printed, claimed), f"the quick start printed {printed} voxels, the README says {claimed}"


def test_readme_quick_start_commands_work_as_written():
    """The README's shell lines after the quick start, run literally (they name the CPU build of ONNX
    Runtime that `make ort` fetches)."""
    need_library()
    if not (REPO / ".cache/onnxruntime-cpu/libonnxruntime.so").is_file():
        pytest.skip("the commands name .cache/onnxruntime-cpu, which this checkout has not fetched")
    text = (REPO / "README.md").read_text()
    blocks = fenced_blocks(text)
    i = next(k for k, (lang, _) in enumerate(blocks) if lang == "cpp")
    source = blocks[i][1]
    lang, commands = blocks[i + 1]
    assert lang == "sh", "a ```sh block with the build and run commands follows the quick start"
    m = re.search(r"save this as `(build/[^`]+\.cpp)`", text)
    assert m, "the README says where to save the quick start (save this as `build/....cpp`)"
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / m.group(1)).write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("SAM3D_ORT_LIBRARY", "ORT_DYLIB_PATH")}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{commands}\n{run.stdout}\n{run.stderr}"
    printed = int(re.search(r"mask voxels (\d+)", run.stdout).group(1))
    assert close_to(printed, claimed_voxels(text)), run.stdout


def test_c_api_example_compiles_and_runs(tmp_path):
    cc = os.environ.get("CC", "cc")
    run_example(first_block(REPO / "docs/c-api.md", "c"), ".c", [cc, "-std=c11"], tmp_path)


# ---- 2. links and paths exist -----------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_relative_links_exist(md):
    bad = []
    for target in LINK.findall(without_code(md.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):      # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {rel(dest)}")
    assert not bad, f"{rel(md)}:\n" + "\n".join(bad)


def repository_path(token: str):
    """The repository path a backticked token names, or None when it is not one."""
    t = re.sub(r":\d+(-\d+)?$", "", token)                  # file:line
    if "/" not in t or re.search(r"\s|://|[<>*{}$|,;=()\[\]]|\.\.\.", t):
        return None
    if t.startswith(("/", "~", "-", "../", "./")):
        return None
    parts = [p for p in t.split("/") if p]
    if any(re.fullmatch(r"[A-Z][A-Z0-9_]*", p) for p in parts):   # placeholders: PKG/, CT_DICOM_DIR/
        return None
    has_ext = re.search(r"[^./]\.[A-Za-z0-9]+$", parts[-1]) is not None
    if not (has_ext or t.endswith("/") or parts[0] in TOP):
        return None
    return t


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_backticked_paths_exist(md):
    text = md.read_text()
    tokens = set(inline_code(text))
    for _lang, code in fenced_blocks(text):                  # paths in comments of code blocks
        tokens.update(re.findall(r"`([^`\n]+)`", code))
    bad = []
    for token in sorted(tokens):
        p = repository_path(token)
        if p is None or p.startswith(GENERATED):
            continue
        if not (REPO / p).exists():
            bad.append(p)
    assert not bad, f"{rel(md)} names paths that do not exist:\n" + "\n".join(bad)


# ---- 3. make targets exist --------------------------------------------------------------------


def makefile_targets():
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith(("\t", "#")) or not line.strip():
            continue
        m = re.match(r"^([^:=#]+?):(?!=)", line)
        if m:
            targets.update(t for t in m.group(1).split() if "$" not in t)
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", (REPO / "Makefile").read_text(), re.M)
    if phony:
        targets.update(phony.group(1).replace("\\\n", " ").split())
    return targets


def make_invocations(text: str):
    """Targets of every `make ...` in the doc's code (fenced blocks and inline code)."""
    code = [c for _lang, c in fenced_blocks(text)] + inline_code(text)
    for chunk in code:
        for line in chunk.splitlines() or [chunk]:
            line = line.split("#", 1)[0]
            for m in re.finditer(r"(?:^|[\s;&|(])make((?:\s+[^\s;&|)`]+)+)", line):
                for word in m.group(1).split():
                    if "=" in word or word.startswith("-"):
                        continue
                    if not re.fullmatch(r"[a-z][a-z0-9_.-]*", word):
                        break
                    yield word


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_make_targets_exist(md):
    targets = makefile_targets()
    missing = sorted({t for t in make_invocations(md.read_text()) if t not in targets})
    assert not missing, f"{rel(md)} names make targets the Makefile lacks: {missing}"


# ---- 4. exporter modules exist ----------------------------------------------------------------


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_exporter_modules_exist(md):
    pkg = REPO / "onnx" / "sam3d_onnx"
    missing = []
    for dotted in sorted(set(re.findall(r"\bsam3d_onnx((?:\.[A-Za-z_]\w*)+)", md.read_text()))):
        first = dotted.split(".")[1]
        if not ((pkg / f"{first}.py").is_file() or (pkg / first / "__init__.py").is_file()):
            missing.append("sam3d_onnx" + dotted)
    assert not missing, f"{rel(md)} names modules that do not exist: {missing}"


def test_the_checks_see_something():
    """Guards against a parser that silently finds nothing."""
    readme = (REPO / "README.md").read_text()
    assert "docs/c-api.md" in LINK.findall(readme)
    assert any(repository_path(t) == "include/sam3d.h" for t in inline_code(readme))
    assert {"demo", "test"} <= set(make_invocations(readme))
    assert {"demo", "test", "bench", "install"} <= makefile_targets()
    assert shutil.which(os.environ.get("CXX", "c++")), "a C++ compiler is needed"
