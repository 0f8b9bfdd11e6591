"""3DSAM-adapter in PyTorch and its export to libsam3d model packages (onnx/README.md; the package contract: docs/model-package.md).

  model/       the network, its configuration, dataset presets, checkpoint import
  export/      the exported graphs, package writing, int8 / fp16 variants, fixtures, package import
  training/    the paper's recipe, 2D pretraining, synthetic lesions and contrast phases, demo training
  evaluation/  the reference pipeline, evaluation tables, the demo sample, official parity
  bench/       `make bench`: the engine against the PyTorch model and the fp32 floor

One command line: `python -m sam3d_onnx --help` (cli.py).
"""
