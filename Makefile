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
FUZZ_SEEDS := fuzz/seeds/.stamp
export SAM3D_ORT_LIBRARY := $(abspath $(ORT_LIB))

.PHONY: all venv ort data build header lint test test-rust test-c test-integration test-python \
        test-python-fast fixtures demo demo-parity train-demo evaluate eval-data sample clean fuzz fuzz-seeds \
        install uninstall test-install test-binding test-slicer test-docs bench bench-gpu \
        train-interactive bench-interaction serve test-serve bench-serve triton-venv ort-openvino \
        ort-openvino-python precision

all: build

venv: $(STAMP)
$(STAMP): onnx/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r onnx/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# ONNX Runtime's shared library from its PyPI wheel (ORT_FLAVOR=gpu: the onnxruntime-gpu wheel;
# ORT_FLAVOR=openvino: the build with Intel's OpenVINO provider, for --device openvino on any x86-64
# CPU; ORT_OPENVINO=1: Intel's OpenVINO plugin beside a stock ONNX Runtime, Intel CPUs only).
ORT_OPENVINO ?= 0
ort: $(ORT_LIB)
	$(if $(filter 1,$(ORT_OPENVINO)),$(PYTHON) tools/fetch_ort.py --out $(ORT_DIR) --flavor $(ORT_FLAVOR) --openvino)
$(ORT_LIB): tools/fetch_ort.py
	$(PYTHON) tools/fetch_ort.py --out $(ORT_DIR) --flavor $(ORT_FLAVOR)
	touch $@

# The OpenVINO build of ONNX Runtime for the tests beside the main one (ONNX Runtime loads once per
# process: tests/openvino.rs runs on it), and its Python module for the parity and precision checks
# (onnx/tests; on PYTHONPATH it shadows the venv's onnxruntime in a subprocess).
ORT_OV_DIR := .cache/onnxruntime-openvino
ORT_OV_PY := .cache/onnxruntime-openvino-py
ORT_OV_VERSION := 1.24.1
ORT_OV_PY_STAMP := $(ORT_OV_PY)/.onnxruntime-openvino-$(ORT_OV_VERSION)
export SAM3D_ORT_OPENVINO_LIBRARY := $(abspath $(ORT_OV_DIR)/libonnxruntime.so)
export SAM3D_ORT_OPENVINO_PYTHONPATH := $(abspath $(ORT_OV_PY))
ort-openvino: $(ORT_OV_DIR)/libonnxruntime.so
ifneq ($(ORT_FLAVOR),openvino)
$(ORT_OV_DIR)/libonnxruntime.so: tools/fetch_ort.py
	$(PYTHON) tools/fetch_ort.py --out $(ORT_OV_DIR) --flavor openvino --version $(ORT_OV_VERSION)
	touch $@
endif
ort-openvino-python: $(ORT_OV_PY_STAMP)
$(ORT_OV_PY_STAMP): $(STAMP)
	rm -rf $(ORT_OV_PY)
	$(PY) -m pip install --quiet --no-deps --target $(ORT_OV_PY) onnxruntime-openvino==$(ORT_OV_VERSION)
	touch $@

# Real volumes from the packages that ship them (see tools/fetch_data.py for provenance).
SAMPLE_CT := $(DATA)/totalsegmentator/example_ct.nii.gz
ITK_MR := $(DATA)/itk_examples/KmeansTest_T1UCharRaw.nii.gz
HELDOUT_CT := $(DATA)/totalsegmentator_dicom/example_ct_dicom.nii.gz
data: $(SAMPLE_CT) $(ITK_MR) $(HELDOUT_CT)
$(HELDOUT_CT): tools/fetch_data.py | venv
	$(PY) tools/fetch_data.py --out $(DATA) totalsegmentator_dicom
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

# Regenerate the checked-in C header from src/ffi/ (tests/header.rs fails when it is stale).
header:
	SAM3D_WRITE_HEADER=1 cargo build --release --lib

# The C API from C and C++: strict warnings, then again under AddressSanitizer + UBSan.
test-c: ort ort-openvino $(SAMPLE_CT) build
	rm -rf $(CBUILD)/work && mkdir -p $(CBUILD)/work
	cp -r tests/fixtures/models/tiny-orient $(CBUILD)/work/badhash
	printf '\x55\xaa' | dd of=$(CBUILD)/work/badhash/decoder.onnx bs=1 seek=1000 conv=notrunc status=none
	cp -r tests/fixtures/models/tiny-orient $(CBUILD)/work/nograph && rm $(CBUILD)/work/nograph/encoder.onnx
	cp -r tests/fixtures/models/tiny-orient $(CBUILD)/work/empty
	sed -i 's/"threshold": 0.5,/"threshold": 0.99999999,/' $(CBUILD)/work/empty/sam3d-model.json
	cc -std=c11 $(CFLAGS_STRICT) tests/c/test_c_api.c -o $(CBUILD)/test_c_api $(LINK)
	cc -std=c11 $(CFLAGS_STRICT) examples/c/segment.c -o $(CBUILD)/segment_c $(LINK)
	c++ -std=c++17 $(CFLAGS_STRICT) examples/cpp/segment.cpp -o $(CBUILD)/segment_cpp $(LINK)
	c++ -std=c++17 $(CFLAGS_STRICT) tests/cpp/test_progress_exceptions.cpp -o $(CBUILD)/test_progress_exceptions $(LINK)
	cc -std=c11 $(SAN) $(CFLAGS_STRICT) tests/c/test_c_api.c -o $(CBUILD)/test_c_api_asan $(LINK)
	cc -std=c11 $(SAN) $(CFLAGS_STRICT) examples/c/segment.c -o $(CBUILD)/segment_c_asan $(LINK)
	c++ -std=c++17 $(SAN) $(CFLAGS_STRICT) examples/cpp/segment.cpp -o $(CBUILD)/segment_cpp_asan $(LINK)
	c++ -std=c++17 $(SAN) $(CFLAGS_STRICT) tests/cpp/test_progress_exceptions.cpp -o $(CBUILD)/test_progress_exceptions_asan $(LINK)
	c++ -std=c++17 $(CFLAGS_STRICT) tests/cpp/test_openvino.cpp -o $(CBUILD)/test_openvino $(LINK)
	c++ -std=c++17 $(SAN) $(CFLAGS_STRICT) tests/cpp/test_openvino.cpp -o $(CBUILD)/test_openvino_asan $(LINK)
	$(CBUILD)/test_c_api tests/fixtures/models/tiny-orient $(CBUILD)/work
	$(CBUILD)/test_c_api_asan tests/fixtures/models/tiny-orient $(CBUILD)/work
	$(CBUILD)/test_progress_exceptions tests/fixtures/models/tiny-orient
	$(CBUILD)/test_progress_exceptions_asan tests/fixtures/models/tiny-orient
	$(CBUILD)/test_openvino tests/fixtures/models/tiny-orient
	$(CBUILD)/test_openvino_asan tests/fixtures/models/tiny-orient
	@# OpenVINO's own build of ONNX Runtime, without the sanitizers: TBB loads a library with
	@# RTLD_DEEPBIND, which AddressSanitizer refuses
	SAM3D_ORT_LIBRARY=$(SAM3D_ORT_OPENVINO_LIBRARY) $(CBUILD)/test_openvino tests/fixtures/models/tiny-orient
	$(EXAMPLES)/segment --model tests/fixtures/models/tiny-orient --input $(SAMPLE_CT) \
	    --click 60,50,56 --out $(CBUILD)/work/rust.nii.gz > /dev/null 2>&1
	$(EXAMPLES)/segment --model $(CBUILD)/work/empty --input $(SAMPLE_CT) --click 60,50,56 \
	    --out $(CBUILD)/work/rust-empty.nii.gz > /dev/null 2> $(CBUILD)/work/rust-empty.err
	grep -q 'the click found nothing' $(CBUILD)/work/rust-empty.err
	for prog in segment_c segment_cpp segment_c_asan segment_cpp_asan; do \
	    $(CBUILD)/$$prog tests/fixtures/models/tiny-orient $(SAMPLE_CT) 60,50,56 \
	        $(CBUILD)/work/$$prog.nii.gz > /dev/null 2>&1 || exit 1; \
	    cmp $(CBUILD)/work/rust.nii.gz $(CBUILD)/work/$$prog.nii.gz || exit 1; \
	    $(CBUILD)/$$prog $(CBUILD)/work/empty $(SAMPLE_CT) 60,50,56 $(CBUILD)/work/$$prog-empty.nii.gz \
	        > /dev/null 2> $(CBUILD)/work/$$prog-empty.err || exit 1; \
	    grep -q 'the click found nothing' $(CBUILD)/work/$$prog-empty.err || exit 1; \
	done
	@echo "C and C++ examples: same mask as the Rust example, with and without sanitizers"

# The Rust tests, with the fuzz seed corpora and reproducers replayed (tests/fuzz_replay.rs).
test-rust: ort ort-openvino lint $(FUZZ_SEEDS)
	cargo test --release

# Formatting and clippy's lints (warnings are errors) on the library, examples and tests.
lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

# Fuzzing (fuzz/README.md): the seed corpora, made from the repository's files, then each target
# for FUZZ_SECONDS with cargo-fuzz on the nightly toolchain (`cargo install cargo-fuzz`), debug
# assertions on. Findings: fuzz/artifacts/<target>/; keep a reproducer in fuzz/regressions/<target>/.
# One allocation over 512 MB (the harnesses set the library's memory budget to 256 MB), an RSS over
# 4 GB and an input running over 10 s count as findings. NIfTI inputs stop at 256 KB (mutating
# megabyte files is slow; the replay still reads the whole sample CT).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= nifti manifest buffer
FUZZ_FLAGS := -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -malloc_limit_mb=512 -timeout=10
fuzz-seeds:
	$(PYTHON) tools/fuzz_seeds.py
$(FUZZ_SEEDS): tools/fuzz_seeds.py fuzz/harness/mod.rs $(wildcard examples/data/*.nii.gz tests/fixtures/models/*/sam3d-model.json)
	$(PYTHON) tools/fuzz_seeds.py
fuzz: ort fuzz-seeds
	cd fuzz && fail=0; for t in $(FUZZ_TARGETS); do \
	    mkdir -p corpus/$$t; len=; [ $$t = nifti ] && len=-max_len=262144; \
	    cargo +nightly fuzz run --debug-assertions $$t corpus/$$t seeds/$$t regressions/$$t \
	        -- $(FUZZ_FLAGS) $$len || { echo "fuzz target $$t: finding (fuzz/artifacts/$$t/)"; fail=1; }; \
	done; exit $$fail

# The Rust engine against nibabel and the PyTorch reference pipeline.
test-integration: venv ort data build
	SAM3D_DATA=$(abspath $(DATA)) $(PY) -m pytest -q tests/integration --ignore=tests/integration/test_itk.py

# The Python side: model, checkpoint import, export, official parity (paper size: several minutes).
test-python: venv ort-openvino-python
	cd onnx && ../$(PY) -m pytest -q

# Everything in onnx/ but the paper-size parity test (about two minutes).
test-python-fast: venv ort-openvino-python
	cd onnx && ../$(PY) -m pytest -q -m "not paper"

test: test-rust test-c test-integration test-install test-binding test-slicer test-serve test-python test-docs

# The docs: README quick start and C example compiled and run; links, paths, make targets exist.
test-docs: venv ort build
	$(PY) -m pytest -q tests/docs

# Install under PREFIX (default /usr/local): library with SONAME and version links, headers,
# pkg-config file, CMake package, and ONNX Runtime next to the library (INSTALL_ORT=0: leave it out).
PREFIX ?= /usr/local
INSTALL_ORT ?= 1
install: build $(if $(filter 1,$(INSTALL_ORT)),ort)
	tools/install.sh install $(PREFIX) $(if $(filter 1,$(INSTALL_ORT)),$(ORT_DIR))
uninstall:
	tools/install.sh uninstall $(PREFIX)

# Install into a temporary prefix; build the C++ example there with CMake and pkg-config; the ITK
# example (Debian ITK) on NIfTI and a DICOM series. Needs cmake and libinsighttoolkit5-dev.
test-install: ort ort-openvino build data
	tests/install/test_install.sh $(ORT_DIR) $(ORT_OV_DIR)
	SAM3D_DATA=$(abspath $(DATA)) $(PY) -m pytest -q tests/integration/test_itk.py

# The 3D Slicer module's logic, headless on a real MRML scene: slicer-core (3D Slicer's core
# libraries, about 1 GB) in its own environment, with the binding installed from python/ and
# tritonclient for the module's server setting; the tests start a Triton server from .venv-triton.
SLICER_VENV := .venv-slicer
SLICER_STAMP := $(SLICER_VENV)/.installed-slicer-core-5.13.31053.0-tritonclient-2.73.0
$(SLICER_STAMP):
	test -x $(SLICER_VENV)/bin/python || $(PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_VENV)/bin/python -m pip install --quiet slicer-core==5.13.31053.0 numpy==2.4.6 pytest==9.2.0 \
	    "tritonclient[http]==2.73.0"
	rm -f $(SLICER_VENV)/.installed-*
	touch $@
test-slicer: $(SLICER_STAMP) triton-venv ort build
	$(SLICER_VENV)/bin/python -m pip install --quiet ./python
	$(TRITON_PY) -m pip install --quiet ./python
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so $(SLICER_VENV)/bin/python -m pytest -q examples/slicer/SAM3DSegment/Testing

# The Python binding (python/), pip-installed into the venv from its local path.
test-binding: venv ort ort-openvino build
	$(PY) -m pip install --quiet ./python
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so $(PY) -m pytest -q python/tests
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so SAM3D_ORT_LIBRARY=$(SAM3D_ORT_OPENVINO_LIBRARY) \
	    $(PY) -m pytest -q python/tests -k openvino

# Serving on Triton Inference Server (serve/triton, docs/serving.md): the server binary and Python
# backend from the nvidia-pytriton wheel in their own environment, with tritonclient and the binding.
TRITON_VENV := .venv-triton
TRITON_PY := $(TRITON_VENV)/bin/python
TRITON_STAMP := $(TRITON_VENV)/.installed-$(shell sha256sum serve/triton/requirements.txt | cut -c1-12)
SERVE_MODEL ?= sam3d=$(DEMO_MODEL)
SERVE_ARGS ?=
triton-venv: $(TRITON_STAMP)
$(TRITON_STAMP): serve/triton/requirements.txt
	test -x $(TRITON_PY) || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_PY) -m pip install --quiet --upgrade pip
	$(TRITON_PY) -m pip install --quiet -r serve/triton/requirements.txt
	rm -f $(TRITON_VENV)/.installed-*
	touch $@

# Start the server on 127.0.0.1 (HTTP 8000, gRPC 8001) with the demo model; Ctrl-C stops it.
serve: $(TRITON_STAMP) ort build
	$(TRITON_PY) -m pip install --quiet ./python
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so $(TRITON_PY) serve/triton/launch.py --model $(SERVE_MODEL) $(SERVE_ARGS)

# The server started by the tests on free ports: remote sessions against local ones, errors over
# the wire, limits, idle timeout, memory; the C++ client; the batch client.
test-serve: $(TRITON_STAMP) ort build
	$(TRITON_PY) -m pip install --quiet ./python
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so $(TRITON_PY) -m pytest -q tests/serve

# Load figures: 1, 2, 4 and 8 concurrent remote clients against the local binding, one run.
bench-serve: $(TRITON_STAMP) ort build
	$(TRITON_PY) -m pip install --quiet ./python
	SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so $(TRITON_PY) serve/triton/bench_serve.py --model $(DEMO_MODEL)

# Regenerate the committed fixture packages (tests/fixtures/models) after a change to the export.
fixtures: venv
	cd onnx && ../$(PY) -m sam3d_onnx fixtures --out ../tests/fixtures/models

# The main job: segment a liver lesion in a real CT (examples/data: a crop of a CT the model never saw
# in training, with one synthetic lesion and its ground truth) from one click with the trained demo
# model (models/demo-lesion), write the mask and print its Dice against the truth.
DEMO_MODEL ?= models/demo-lesion
INTERACTIVE_MODEL ?= models/demo-lesion-interactive
SAMPLE := examples/data/sample_ct_lesion
SAMPLE_CLICK := $(shell sed -n 's/.*"click": "\([0-9,]*\)".*/\1/p' $(SAMPLE).json)
demo: ort build
	mkdir -p build
	$(EXAMPLES)/segment --model $(DEMO_MODEL) --input $(SAMPLE).nii.gz --click $(SAMPLE_CLICK) \
	    --truth $(SAMPLE)_truth.nii.gz --out build/demo_mask.nii.gz

# The evaluation's data: the training CT, the held-out CT (DICOM, converted with SimpleITK) and the real tumours.
eval-data: venv
	$(PY) tools/fetch_data.py --out $(DATA) totalsegmentator totalsegmentator_dicom pyradiomics

# Train the demo model from scratch (hours on a CPU; CI does not run it) and install it:
# 2D pretraining + 7000 steps of the recipe, then 3500 steps with the scanner augmentation, then 4000
# + 3000 with the scanner and contrast-phase augmentations, then 7000 on a 1.5 mm grid with lesions
# drawn on grids finer than the training CT's, then 6000 with the CT in simulated contrast phases;
# last the package's threshold, test-time flips and component rule, chosen on training-CT lesions.
train-demo: venv eval-data
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --pretrain-steps 1500 --steps 7000
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --resume ../build/demo-train/model.pt --steps 3500 --lr 2e-4
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --resume ../build/demo-train/model.pt --steps 4000 --lr 2e-4 --phase-aug
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --resume ../build/demo-train/model.pt --steps 3000 --lr 1e-4 --phase-aug
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --resume ../build/demo-train/model.pt --steps 7000 --lr 2e-4 --phase-aug --fine-lesions --spacing 1.5
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/demo-train \
	    --resume ../build/demo-train/model.pt --steps 6000 --lr 2e-4 --phase-aug --fine-lesions --contrast-phases
	rm -rf $(DEMO_MODEL) && cp -r build/demo-train/demo-lesion $(DEMO_MODEL)
	cd onnx && ../$(PY) -m sam3d_onnx evaluate ../$(DEMO_MODEL) --data ../$(DATA) --tune-threshold --write

# The second demo package: the demo model continued with click labels in the iterative protocol
# (negative clicks), from the committed package (import-package gives the resume folder).
train-interactive: venv eval-data
	rm -rf build/interactive-train
	cd onnx && ../$(PY) -m sam3d_onnx import-package ../$(DEMO_MODEL) --out ../build/interactive-train
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/interactive-train \
	    --resume ../build/interactive-train/model.pt --steps 2500 --lr 2e-4 --phase-aug --fine-lesions \
	    --contrast-phases --negative-clicks --name demo-lesion-interactive
	cd onnx && ../$(PY) -m sam3d_onnx train-demo --data ../$(DATA) --out ../build/interactive-train \
	    --resume ../build/interactive-train/model.pt --steps 4000 --lr 2e-4 --phase-aug --fine-lesions \
	    --contrast-phases --negative-clicks --name demo-lesion-interactive
	rm -rf $(INTERACTIVE_MODEL) && cp -r build/interactive-train/demo-lesion-interactive $(INTERACTIVE_MODEL)
	cd onnx && ../$(PY) -m sam3d_onnx evaluate ../$(INTERACTIVE_MODEL) --data ../$(DATA) --tune-threshold --write

# The evaluation tables: held-out synthetic lesions and real tumours, model vs region growing; then
# the interactive protocol (clicks in error regions, negative clicks, boxes, zoom-out) through the
# engine, for both demo packages.
evaluate: venv eval-data build
	cd onnx && ../$(PY) -m sam3d_onnx evaluate ../$(DEMO_MODEL) --data ../$(DATA) --json ../build/evaluation.json
	$(PY) -m pip install --quiet ./python
	cd onnx && SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so ../$(PY) -m sam3d_onnx interactive ../$(DEMO_MODEL) \
	    --data ../$(DATA) --quiet --json ../build/interactive-demo.json
	cd onnx && SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so ../$(PY) -m sam3d_onnx interactive \
	    ../$(INTERACTIVE_MODEL) --data ../$(DATA) --quiet --json ../build/interactive-labels.json

# Click latency of the interactive prompts (zoom-out off as the reference, on, a box, a negative click).
bench-interaction: venv build eval-data $(SAMPLE_CT)
	$(PY) -m pip install --quiet ./python
	cd onnx && SAM3D_LIBRARY=$(abspath $(LIBDIR))/libsam3d.so ../$(PY) -m sam3d_onnx bench-interaction \
	    --data ../$(DATA) --labelled ../$(INTERACTIVE_MODEL)

# bf16 against fp32 on OpenVINO, and OpenVINO fp32 against the CPU provider, with the demo model on the
# held-out lesions, the real tumours and the sample (masks, probabilities, Dice against the truth).
precision: venv ort-openvino-python eval-data
	cd onnx && PYTHONPATH=$(abspath $(ORT_OV_PY)) ../$(PY) -m sam3d_onnx precision ../$(DEMO_MODEL) \
	    --data $(abspath $(DATA)) --split --json ../build/precision.json

# The benchmark: engine vs the straightforward PyTorch model and the fp32 floor, one run
# (BENCH_CONFIGS=tiny,demo for a quick one; the paper size exports a random-weight package first;
# <config>-openvino and <config>-openvino-bf16 run the fp32 package on OpenVINO's build of ONNX Runtime).
BENCH_CONFIGS ?= tiny,demo,paper,paper-int8,paper-openvino,paper-openvino-bf16
bench: venv ort ort-openvino build $(SAMPLE_CT)
	cd onnx && ../$(PY) -m sam3d_onnx bench --out ../build/bench --configs $(BENCH_CONFIGS) \
	    --data ../$(DATA) --ort $(abspath $(ORT_LIB)) --ort-openvino $(SAM3D_ORT_OPENVINO_LIBRARY)

# The GPU measurements (bench/gpu/README.md: PyTorch and the engine on the GPU), for a machine with a GPU.
bench-gpu:
	bench/gpu/check.sh

# Regenerate the demo's sample volume (examples/data) from the held-out CT.
sample: venv eval-data
	cd onnx && ../$(PY) -m sam3d_onnx sample --data ../$(DATA) --out ../examples/data

# The model side end to end: seeded paper-size checkpoint -> package -> ONNX Runtime -> official answer.
demo-parity: venv
	cd onnx && ../$(PY) -m sam3d_onnx demo-parity

clean:
	rm -rf build target $(VENV) $(SLICER_VENV) $(TRITON_VENV) .cache
