"""The model side's one command line: `python -m sam3d_onnx COMMAND [ARGS]`.

Installed (`pip install ./onnx`), the same program is `sam3d-onnx`, and `sam3d-convert` under its older
name. Each command's arguments are defined next to its code (the module's `main(argv, prog)`) and the
module is imported only when its command runs, so a command needs only its own dependencies (nibabel
and SimpleITK only where a command reads volumes: the extras in pyproject.toml).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module with `main(argv, prog)`, one line of help); in the order `--help` lists them
COMMANDS = {
    "convert": ("sam3d_onnx.export.convert",
                "a released 3DSAM-adapter checkpoint (+ dataset preset) -> model package"),
    "quantize": ("sam3d_onnx.export.quantize",
                 "int8 or fp16 variant of a package, or its accuracy against the fp32 package"),
    "import-package": ("sam3d_onnx.export.package_import",
                       "an fp32 package back to a PyTorch model (a train-demo --resume folder)"),
    "fixtures": ("sam3d_onnx.export.fixtures",
                 "regenerate the tiny fixture packages the Rust engine's tests run on"),
    "train-demo": ("sam3d_onnx.training.demo",
                   "train the shipped demo model on a CPU and export it as a package"),
    "finetune": ("sam3d_onnx.training.finetune",
                 "the paper's recipe from a SAM ViT-B checkpoint on a labelled dataset folder"),
    "evaluate": ("sam3d_onnx.evaluation.evaluate",
                 "a package on held-out synthetic lesions and real tumours; tune its threshold"),
    "bench-interaction": ("sam3d_onnx.bench.interaction",
                          "click latency of negative clicks, boxes and zoom-out through the engine"),
    "interactive": ("sam3d_onnx.evaluation.interactive",
                    "the interactive protocol (clicks in error regions, boxes, zoom-out) through the engine"),
    "precision": ("sam3d_onnx.evaluation.precision",
                  "a package on the CPU provider, OpenVINO fp32 and bf16: masks and probabilities compared"),
    "reference": ("sam3d_onnx.evaluation.reference_pipeline",
                  "segment a NIfTI volume with the reference pipeline (nibabel + PyTorch + ONNX Runtime)"),
    "sample": ("sam3d_onnx.evaluation.sample",
               "write the demo's sample volume (examples/data)"),
    "demo-parity": ("sam3d_onnx.evaluation.parity",
                    "seeded paper-size checkpoint -> package -> ONNX Runtime -> the official answer"),
    "bench": ("sam3d_onnx.bench.run",
              "`make bench`: the engine against the PyTorch model and the fp32 floor"),
}


def _prog() -> str:
    """How the user called us: `python -m sam3d_onnx`, or the console script's name."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m sam3d_onnx" if name in ("", "__main__.py", "-c") else name


def parser(prog: str) -> argparse.ArgumentParser:
    """The top level: the list of commands (each command parses its own arguments)."""
    ap = argparse.ArgumentParser(
        prog=prog, description="3DSAM-adapter in PyTorch: checkpoint import, export to libsam3d model "
                               "packages, training of the demo model, evaluation, benchmarks.",
        epilog=f"'{prog} COMMAND --help' documents a command's arguments.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    ap = parser(prog)
    if not argv or argv[0].startswith("-"):
        ap.parse_args(argv)               # `--help` or no command: the list, or the error (exits)
        ap.error("the command comes first")
    ap.parse_args(argv[:1])               # an unknown command: the error with the list (exits)
    name, rest = argv[0], argv[1:]
    rc = importlib.import_module(COMMANDS[name][0]).main(rest, prog=f"{prog} {name}")
    return rc if isinstance(rc, int) else 0
