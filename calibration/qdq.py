"""Explicit, symmetric Q/DQ quantization of a float ONNX graph (ONNX Runtime's quantizer).

Only :data:`QUANTIZED_OPS` get Q/DQ pairs: the compute-heavy ops TensorRT and ONNX
Runtime run as int8 kernels. Element-wise ops (PReLU, sigmoid, power normalisation)
stay in float. Weights are per output channel, activations per tensor; both int8
and symmetric, so every zero point is 0 (:func:`zero_points`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.errors import CalibrationError, first_line
from calibration.methods import calibrator_settings
from sdk.errors import SemedgeError

QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that would get Q/DQ, in graph order."""
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]


def output_heads(model: onnx.ModelProto) -> list[str]:
    """Quantizable nodes nearest each graph output (only element-wise ops between them).

    These are the final projections (before sigmoid/softmax outputs and before power
    normalisation): one wrong step there is one wrong output value, so they stay float.
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    heads: list[str] = []
    stack = [o.name for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZED_OPS:
            heads.append(node.name)
        else:
            stack.extend(node.input)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    return sorted(heads, key=order.__getitem__)


def quantize(
    prepared: Path,
    out: Path,
    method: str,
    ranges: Path,
    reader: Any = None,
    exclude: Sequence[str] = (),
    only: Sequence[str] = (),
    percentile: float = 99.999,
) -> Path:
    """Write a Q/DQ model of ``prepared``; ranges come from ``reader`` (and are saved to
    ``ranges``) or, when ``reader`` is None, from the existing ``ranges`` file."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibrate_method, options = calibrator_settings(method, percentile)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print their progress
            quantize_static(
                str(prepared),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only),
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
                calibration_cache_path=str(ranges),
                extra_options={**options, "ActivationSymmetric": True, "WeightSymmetric": True},
            )
    except SemedgeError:
        raise
    except Exception as exc:  # onnxruntime raises untyped errors
        raise CalibrationError(
            f"int8 quantization of {prepared.name} failed: {first_line(exc)}"
        ) from None
    return out


NO_CPU_INT8_KERNEL = ("ConvTranspose",)
"""Quantized ops ONNX Runtime's CPU provider runs as DQ -> float op -> Q (no int8 kernel,
microsoft/onnxruntime#8988): correct, but slower than fp32. TensorRT has int8 kernels."""


def slow_on_cpu(model: onnx.ModelProto) -> list[str]:
    """Quantized nodes that ONNX Runtime's CPU provider cannot run in int8."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in NO_CPU_INT8_KERNEL and producer.get(n.input[1]) == "DequantizeLinear"
    ]


def zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every Q/DQ node's zero point (a missing one is 0 by the ONNX spec)."""
    inits = {i.name: i for i in model.graph.initializer}
    points = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            points[node.name] = (
                onnx.numpy_helper.to_array(inits[name]) if name else np.zeros(1, np.int8)
            )
    return points


def check_symmetric(model: onnx.ModelProto) -> None:
    """Raise unless every zero point is 0 (what TensorRT's explicit quantization needs)."""
    bad = [name for name, zp in zero_points(model).items() if np.any(zp != 0)]
    if bad:
        raise CalibrationError(f"Q/DQ node {bad[0]} has a non-zero zero point; report this bug")
