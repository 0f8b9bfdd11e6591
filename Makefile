# libsam3d — top-level tasks. Everything a fresh clone needs is fetched from the package registries.
#   make demo   the main job (see README)
#   make test   every test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum onnx/requirements.txt | cut -c1-12)

.PHONY: all venv test test-python test-python-fast fixtures demo clean

all: test

venv: $(STAMP)
$(STAMP): onnx/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r onnx/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The Python side: model, checkpoint import, export, official parity (paper size: several minutes).
test-python: venv
	cd onnx && ../$(PY) -m pytest -q

# Everything but the paper-size parity test (about two minutes).
test-python-fast: venv
	cd onnx && ../$(PY) -m pytest -q -m "not paper"

test: test-python

# Regenerate the committed fixture packages (tests/fixtures/models) after a change to the export.
fixtures: venv
	cd onnx && ../$(PY) -m sam3d_onnx.fixtures --out ../tests/fixtures/models

# Until the engine (issue 3) and the trained default model (issue 4) land, the demo converts a
# seeded paper-size checkpoint in the official layout and runs it through ONNX Runtime against the
# official goldens: the model side of the main job, end to end.
demo: venv
	cd onnx && ../$(PY) -m sam3d_onnx.demo

clean:
	rm -rf build target $(VENV)
