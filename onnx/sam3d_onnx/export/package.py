"""Writing a model package (the contract in docs/model-package.md, format_version 1): two ONNX graphs and the
manifest `sam3d-model.json` with configuration, frame, intensity constants, graph interface,
licence, provenance, the SHA-256 of every file and the graphs' layout (`export`, for `package_import`)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from typing import Optional

import torch

from ..model.network import Sam3D
from .graphs import DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, LABELS_INPUT, decoder_inputs, graph_layout, graphs

FORMAT = "sam3d-model"
FORMAT_VERSION = 1
OPSET = 20
MANIFEST = "sam3d-model.json"
FLIP_COUNTS = (1, 2, 4, 8)   # manifest `inference.test_time_flips` values (docs/model-package.md)
MAX_POINTS = 32
# graphs larger than this keep their weights in a side file (protobuf's 2 GB limit; faster load)
EXTERNAL_DATA_BYTES = 256 << 20


def session_options(threads: int):
    """ONNX Runtime session options as the engine sets them (src/engine/providers.rs `make_session`):
    `threads` intra-op threads, subnormal floats as zero (the shifted blocks' exp(-100) rescaling
    otherwise costs a microcode assist per operation on Intel cores) and no memory pattern (with it
    the paper encoder's peak RSS grew at its second run); figures in docs/performance.md."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    opts.enable_mem_pattern = False
    return opts


OPENVINO_EP = "OpenVINOExecutionProvider"
PROVIDER_NAMES = ("cpu", "openvino-fp32", "openvino-bf16")


def execution_providers(name: str, threads: int):
    """ONNX Runtime's `providers` list for `name` (one of PROVIDER_NAMES), with the OpenVINO settings
    the engine uses (src/engine/providers.rs `openvino`): OpenVINO's CPU device computing in exact
    fp32 or in bf16 (its own choice would be bf16 on a CPU with AMX), one stream for the lowest
    latency, `threads` threads. The `precision` key is not used: on the CPU device it takes only
    FP32 or ACCURACY. OpenVINO needs an ONNX Runtime built with it (the onnxruntime-openvino wheel)."""
    if name == "cpu":
        return ["CPUExecutionProvider"]
    hint = {"openvino-fp32": "f32", "openvino-bf16": "bf16"}.get(name)
    if hint is None:
        raise ValueError(f"provider must be one of {PROVIDER_NAMES}, not {name!r}")
    cpu = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "CPU_DENORMALS_OPTIMIZATION": "YES"}
    opts = {"device_type": "CPU"}
    if threads > 0:
        cpu["INFERENCE_NUM_THREADS"] = str(threads)
        opts["num_of_threads"] = str(threads)
    opts["load_config"] = json.dumps({"CPU": cpu})
    return [(OPENVINO_EP, opts)]


def require_openvino():
    """Raise RuntimeError unless the imported onnxruntime offers the OpenVINO provider."""
    import onnxruntime as ort
    if OPENVINO_EP not in ort.get_available_providers():
        raise RuntimeError(
            f"the imported onnxruntime ({ort.__version__}, {os.path.dirname(ort.__file__)}) has no {OPENVINO_EP}: "
            "run with an ONNX Runtime built with OpenVINO first on PYTHONPATH, e.g. "
            "`pip install --no-deps --target .cache/onnxruntime-openvino-py onnxruntime-openvino` and "
            "PYTHONPATH=.cache/onnxruntime-openvino-py (as `make test-python` sets it through "
            "SAM3D_ORT_OPENVINO_PYTHONPATH)")


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16, as the engine checks): without
    either, the engine runs OpenVINO in fp32 when bf16 is asked for."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"amx_bf16", "avx512_bf16"} & set(line.split()))
    except OSError:
        pass
    return False


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _export(module, args, path, inputs, outputs, dynamic_shapes=None, external=False):
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, input_names=list(inputs), output_names=list(outputs),
                                 opset_version=OPSET, dynamo=True, dynamic_shapes=dynamic_shapes,
                                 verbose=False, external_data=external, optimize=True)
    prog.save(path, external_data=external)
    _strip_build_metadata(path)


def _strip_build_metadata(path):
    """Drop the exporter's per-node metadata (stack traces with this machine's source paths, FX
    node dumps): packages must not depend on where they were built, and must be byte-reproducible."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    graphs = [m.graph] + [f for f in m.functions]
    for g in graphs:
        for n in g.node:
            del n.metadata_props[:]
            n.doc_string = ""
    m.graph.doc_string = ""
    onnx.save_model(m, path)


def _io(session_like):
    return [{"name": n, "shape": s} for n, s in session_like]


def export_package(model: Sam3D, out_dir: str, *, name: str, description: str, licence: str,
                   provenance: str, frame: dict, intensity: dict, spacing_mm=(1.0, 1.0, 1.0),
                   threshold: float = 0.5, pad_value_normalised: float = 0.0,
                   extra: Optional[dict] = None) -> dict:
    """Export `model` to a package directory; returns the manifest. The directory is written in a
    temporary sibling and renamed into place, so a failed export leaves no half-written package."""
    cfg = model.cfg
    enc, dec = graphs(model)
    c, g = cfg.crop, cfg.grid
    crop = torch.zeros(1, 1, c, c, c)
    with torch.no_grad():
        f3, cls_partial = enc(crop)
    points = torch.full((1, 2, 3), c / 2.0)
    n_params = sum(p.numel() for p in model.parameters())
    external = n_params * 4 > EXTERNAL_DATA_BYTES

    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sam3d-pkg-", dir=parent)
    try:
        _export(enc, (crop,), os.path.join(tmp, "encoder.onnx"), ENCODER_INPUTS, ENCODER_OUTPUTS,
                external=external)
        n = torch.export.Dim("n_points", min=1, max=4096)
        args, dyn = (f3, cls_partial, points), ({}, {}, {1: n})
        if cfg.point_labels:
            args, dyn = args + (torch.tensor([[1.0, 0.0]]),), dyn + ({1: n},)
        _export(dec, args, os.path.join(tmp, "decoder.onnx"), decoder_inputs(cfg),
                DECODER_OUTPUTS, dynamic_shapes=dyn, external=external)

        def graph_entry(file):
            data = sorted(f for f in os.listdir(tmp) if f.startswith(file + ".") and f != file)
            files = [file] + data
            return {"file": file, "data_files": data,
                    "sha256": {f: sha256_file(os.path.join(tmp, f)) for f in files}}

        shapes = {"f3": [1, cfg.neck_dim, g, g, g],
                  "cls_partial": [1, cfg.decoder_dim, 2 * g, 2 * g, 2 * g]}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "description": description,
            "licence": licence,
            "provenance": provenance,
            "architecture": cfg.to_dict(),
            "frame": frame,
            "spacing_mm": [float(s) for s in spacing_mm],
            "intensity": intensity,
            "pad_value_normalised": float(pad_value_normalised),
            "threshold": float(threshold),
            "prompts": {"positive_points": True, "negative_points": bool(cfg.point_labels), "boxes": False,
                        "max_points": MAX_POINTS},
            "opset": OPSET,
            "graphs": {
                "encoder": {**graph_entry("encoder.onnx"),
                            "inputs": _io([("crop", [1, 1, c, c, c])]),
                            "outputs": _io([(k, shapes[k]) for k in ENCODER_OUTPUTS])},
                "decoder": {**graph_entry("decoder.onnx"),
                            "inputs": _io([(k, shapes[k]) for k in ENCODER_OUTPUTS]
                                          + [("points", [1, "N", 3])]
                                          + ([(LABELS_INPUT, [1, "N"])] if cfg.point_labels else [])),
                            "outputs": _io([("prob", [1, c, c, c])])},
            },
            # not read by the engine: how the graphs hold the folded parameters, for `package_import`
            "export": {"graph_layout": graph_layout(cfg)},
        }
        if extra:
            manifest.update(extra)
        publish(tmp, manifest, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def publish(tmp: str, manifest: dict, out_dir: str):
    """Write the manifest into the finished temporary package folder and move it to `out_dir`
    (replacing an older one), so `out_dir` is never half-written."""
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        _dump_manifest(manifest, f)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a package is an ordinary directory
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def _dump_manifest(manifest: dict, f):
    json.dump(manifest, f, indent=2)
    f.write("\n")


def set_inference(pkg_dir: str, *, threshold: float, test_time_flips: int, keep_clicked_components: bool,
                  chosen_by: str) -> dict:
    """Rewrite a package's `threshold` and `inference` block (the graphs are untouched); the manifest is
    replaced in one rename, so a failure leaves the old one. Returns the new manifest."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold} must lie in (0, 1)")
    if test_time_flips not in FLIP_COUNTS:
        raise ValueError(f"test_time_flips {test_time_flips} must be one of {FLIP_COUNTS}")
    m = read_manifest(pkg_dir, verify=False)
    m["threshold"] = float(threshold)
    m["inference"] = {"test_time_flips": int(test_time_flips),
                      "keep_clicked_components": bool(keep_clicked_components), "chosen_by": chosen_by}
    fd, tmp = tempfile.mkstemp(prefix=".sam3d-model-", suffix=".json", dir=pkg_dir)
    try:
        with os.fdopen(fd, "w") as f:
            _dump_manifest(m, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(pkg_dir, MANIFEST))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return m


def read_manifest(pkg_dir: str, verify: bool = True) -> dict:
    with open(os.path.join(pkg_dir, MANIFEST)) as f:
        m = json.load(f)
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{pkg_dir}: not a {FORMAT} package of format_version {FORMAT_VERSION}")
    if verify:
        for gname, g in m["graphs"].items():
            for fname, digest in g["sha256"].items():
                got = sha256_file(os.path.join(pkg_dir, fname))
                if got != digest:
                    raise ValueError(f"{pkg_dir}/{fname}: sha256 {got} does not match the manifest")
    return m
