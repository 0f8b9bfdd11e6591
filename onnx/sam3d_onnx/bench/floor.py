"""The fp32 floor of the benchmark: this machine's rate on large matrix products (PyTorch and ONNX
Runtime), sustained rather than burst, and the FLOPs of the exported graphs."""
from __future__ import annotations

import time

import numpy as np
import torch


def matmul_gflops(threads: int, seconds: float = 10.0, shape=(4096, 4096, 4096)) -> float:
    """This machine's fp32 rate on a large matrix product, sustained for `seconds` (not a burst: on a
    shared 2-core machine the rate drifts by 10-25 % over minutes, and a few products timed once
    before a 90 s encoder pass made its floor ratio a matter of luck)."""
    torch.set_num_threads(threads)
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    return _sustained(lambda: a @ b, 2.0 * m * k * n, seconds)


# (rows, inner, columns) of the paper ViT's MLP product: 32^3 tokens of width 768 into the 3072 hidden
VIT_MLP_PRODUCT = (32768, 768, 3072)


def _sustained(fn, flop: float, seconds: float) -> float:
    fn()
    k, t = 0, time.perf_counter()
    while k == 0 or time.perf_counter() - t < seconds:
        fn()
        k += 1
    return flop * k / (time.perf_counter() - t) / 1e9


def ort_matmul(m: int, k: int, n: int, threads: int):
    """A one-node ONNX Runtime MatMul (m x k input, constant k x n weight, as the encoder's products):
    returns the callable that runs it once."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["c"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    return lambda: sess.run(None, {"a": a})


def product_rates(threads: int, seconds: float = 6.0) -> dict:
    """GFLOP/s of the 4096^2 product and of the ViT's MLP product, in PyTorch and in ONNX Runtime."""
    out = {}
    for name, shape in (("4096", (4096, 4096, 4096)), ("vit_mlp", VIT_MLP_PRODUCT)):
        out[f"torch_{name}"] = matmul_gflops(threads, seconds, shape)
        out[f"ort_{name}"] = _sustained(ort_matmul(*shape, threads), 2.0 * shape[0] * shape[1] * shape[2], seconds)
    return out


def graph_gflop(cfg) -> dict:
    """FLOPs (GFLOP) of the exported encoder graph and of one click of the decoder graph."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..export.graphs import graphs
    from ..model.network import Sam3D

    model = Sam3D(cfg).eval()
    enc, dec = graphs(model)
    c = cfg.crop
    with torch.no_grad():
        with FlopCounterMode(display=False) as fe:
            f3, cls_partial = enc(torch.zeros(1, 1, c, c, c))
        with FlopCounterMode(display=False) as fd:
            dec(f3, cls_partial, torch.full((1, 1, 3), c / 2.0))
    return {"encoder_gflop": fe.get_total_flops() / 1e9, "click_gflop": fd.get_total_flops() / 1e9}
