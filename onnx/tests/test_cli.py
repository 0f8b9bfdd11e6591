"""The one command line (`python -m sam3d_onnx`): every command is listed, documents each of its
arguments, and the installed scripts point at it."""
import argparse
import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from sam3d_onnx import cli

ONNX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sam3d_onnx", *args], cwd=ONNX_DIR, capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_command():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m sam3d_onnx")
    words = " ".join(r.stdout.split())          # argparse wraps to the terminal's width
    for name, (_, text) in cli.COMMANDS.items():
        assert f" {name} {' '.join(text.split())}" in words, name


def test_no_command_or_an_unknown_one_is_an_error():
    for args in ((), ("no-such-command",), ("--threads", "2")):
        r = _run(*args)
        assert r.returncode == 2 and "usage:" in r.stderr, args


def test_a_command_help_runs_through_the_module():
    r = _run("convert", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m sam3d_onnx convert")
    assert "--dataset" in r.stdout and "--config-json" in r.stdout


def _command_parser(module, monkeypatch):
    """The ArgumentParser a command's main() builds (captured at parse_args, before it runs)."""
    got = {}

    def capture(self, args=None, namespace=None):
        got["parser"] = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        module.main([], prog="python -m sam3d_onnx x")
    return got["parser"]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_argument_of_every_command_is_documented(name, monkeypatch):
    module = importlib.import_module(cli.COMMANDS[name][0])
    parser = _command_parser(module, monkeypatch)
    assert parser.description, name
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_console_scripts_are_the_cli():
    with open(os.path.join(ONNX_DIR, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["scripts"] == {"sam3d-onnx": "sam3d_onnx.cli:main", "sam3d-convert": "sam3d_onnx.cli:main"}


def test_every_third_party_import_is_declared():
    """The package's own imports against pyproject.toml (core dependencies + extras)."""
    import ast

    with open(os.path.join(ONNX_DIR, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    declared = {d.lower() for d in project["dependencies"]}
    for deps in project["optional-dependencies"].values():
        declared |= {d.lower() for d in deps}
    stdlib = set(sys.stdlib_module_names)
    found = set()
    root = os.path.join(ONNX_DIR, "sam3d_onnx")
    for folder, _, files in os.walk(root):
        for fn in files:
            if not fn.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(folder, fn)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    third_party = {m for m in found - stdlib if m != "sam3d_onnx"}
    # the parity command imports the official generator from tests/parity (a source checkout); the
    # interactive evaluation and its latency bench import this repository's own binding (python/,
    # which make installs), not a package of the registry
    third_party -= {"check_parity", "make_weights", "sam3d"}
    assert third_party, found
    missing = {m for m in third_party if m.lower() not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_requirements_pin_every_declared_dependency():
    """requirements.txt (the pinned test environment) pins the core dependencies and every extra."""
    with open(os.path.join(ONNX_DIR, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    declared = {d.lower() for d in project["dependencies"]}
    for deps in project["optional-dependencies"].values():
        declared |= {d.lower() for d in deps}
    with open(os.path.join(ONNX_DIR, "requirements.txt")) as f:
        pins = {line.split("==")[0].strip().lower() for line in f if "==" in line and not line.startswith("#")}
    assert declared <= pins, sorted(declared - pins)
