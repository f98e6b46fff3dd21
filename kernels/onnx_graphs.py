"""Tiny ONNX graphs of the top-K memory op: standard ops (ONNX Runtime) and the plugin node.

Used by ``tools/bench_topk.py`` (standard ops on the CPU) and ``tools/validate_on_device.py``
(the ``TopKMemory`` node TensorRT runs through the plugin, checked against both).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

PLUGIN_OP, PLUGIN_DOMAIN, PLUGIN_VERSION = "TopKMemory", "semedge", "1"
_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}


def _inputs(batch: int, L: int, n: int, d: int, dtype: int) -> list[onnx.ValueInfoProto]:
    shapes = {"q": [batch, L, d], "k": [batch, n, d], "v": [batch, n, d]}
    return [helper.make_tensor_value_info(name, dtype, s) for name, s in shapes.items()]


def standard_graph(L: int, n: int, d: int, topk: int) -> onnx.ModelProto:
    """Batch-1 fp32 top-K memory from standard ops (opset 17): Gemm, TopK, Softmax, Gather.

    Gemm reads k as stored (``transB``) and folds in 1/√d; ONNX TopK keeps the lower index on
    ties, like the kernel.
    """
    axis0 = helper.make_tensor("axis0", TensorProto.INT64, [1], [0])
    nodes = [
        *(helper.make_node("Squeeze", [x, "axis0"], [f"{x}2"]) for x in "qkv"),
        helper.make_node("Gemm", ["q2", "k2"], ["scores"], transB=1, alpha=1.0 / np.sqrt(d)),
        helper.make_node("TopK", ["scores", "K"], ["kept", "index"], axis=-1, largest=1),
        helper.make_node("Softmax", ["kept"], ["weights"], axis=-1),
        helper.make_node("Gather", ["v2", "index"], ["rows"], axis=0),  # [L, K, d]
        helper.make_node("Unsqueeze", ["weights", "axis1"], ["w3"]),  # [L, 1, K]
        helper.make_node("MatMul", ["w3", "rows"], ["o3"]),  # [L, 1, d]
        helper.make_node("Reshape", ["o3", "shape"], ["out"]),
    ]
    inits = [
        axis0,
        helper.make_tensor("K", TensorProto.INT64, [1], [topk]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("shape", TensorProto.INT64, [3], [1, L, d]),
    ]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, L, d])
    graph = helper.make_graph(
        nodes, "topk_memory", _inputs(1, L, n, d, TensorProto.FLOAT), [out], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def plugin_graph(
    batch: int, L: int, n: int, d: int, topk: int, dtype: type = np.float32
) -> onnx.ModelProto:
    """One ``TopKMemory`` node, as ``semedge export --topk-plugin`` emits it."""
    elem = _TYPES[np.dtype(dtype)]
    node = helper.make_node(
        PLUGIN_OP,
        ["q", "k", "v"],
        ["out"],
        domain=PLUGIN_DOMAIN,
        topk=topk,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_DOMAIN,
    )
    out = helper.make_tensor_value_info("out", elem, [batch, L, d])
    graph = helper.make_graph([node], "topk_memory_plugin", _inputs(batch, L, n, d, elem), [out])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)]
    )
