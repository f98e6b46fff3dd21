"""INT8 post-training quantization to an explicit Q/DQ ONNX model.

``quantize_qdq`` runs ONNX Runtime's static quantization (``QuantFormat.QDQ``,
per-channel int8 weights, int8 activations, MinMax calibration) on the
:data:`QUANTIZED_OPS` over real images from
:mod:`sdk.data`. The result carries ``QuantizeLinear``/``DequantizeLinear`` pairs with
the scales in the graph, which ONNX Runtime runs directly and TensorRT builds with
the ``INT8`` flag (explicit quantization: no TensorRT calibrator needed on the device).

Calibration inputs are the model's own inputs: images for a transmitter or chain;
for a receiver, the symbols the checkpoint's transmitter produces for those images
(so a receiver needs the checkpoint, not only its ONNX file).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import SemedgeError

DATASET_FOR_SHAPE: dict[tuple[int, ...], str] = {
    (3, 32, 32): "patches",
    (1, 28, 28): "mnist",
    (1, 16, 16): "digits",
}
"""Default calibration dataset per model input shape (``--calib-data`` overrides)."""


QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""Ops that get Q/DQ pairs: the compute-heavy ones TensorRT runs as int8 kernels;
element-wise ops (PReLU, sigmoid, power normalisation) stay in float."""


class CalibrationError(SemedgeError):
    """Calibration data that does not fit the model, or a failed quantization."""


def calibration_images(shape: tuple[int, ...], dataset: str | None, count: int) -> np.ndarray:
    """``count`` real training images ``[N, C, H, W]`` float32 for a model input ``shape``."""
    from sdk.data import load_dataset

    name = dataset or DATASET_FOR_SHAPE.get(tuple(shape))
    if name is None:
        raise CalibrationError(
            f"no default calibration dataset for input shape {list(shape)}; pass --calib-data"
            f" (one of {sorted(set(DATASET_FOR_SHAPE.values()))})"
        )
    images = load_dataset(name, "train").images[:count].numpy().astype(np.float32)
    if tuple(images.shape[1:]) != tuple(shape):
        raise CalibrationError(
            f"dataset {name} has images {list(images.shape[1:])} but the model takes "
            f"{list(shape)}; choose a matching --calib-data"
        )
    return images


def _reader(input_name: str, samples: np.ndarray, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                samples[i : i + batch] for i in range(0, len(samples), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {input_name: np.ascontiguousarray(chunk)}

    return Reader()


def quantize_qdq(
    onnx_in: str | Path,
    onnx_out: str | Path,
    samples: np.ndarray,
    input_name: str,
    batch: int = 16,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write an explicit Q/DQ int8 version of ``onnx_in`` calibrated on ``samples``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_out = Path(onnx_out)
    work = Path(tempfile.mkdtemp(prefix="semedge-calib-"))
    try:
        pre = work / "pre.onnx"
        if progress:
            progress(f"calibrating on {len(samples)} samples")
        quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(onnx_out),
            _reader(input_name, samples, batch),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OPS),
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True},
        )
    except SemedgeError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CalibrationError(f"int8 quantization of {onnx_in} failed: {reason}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return onnx_out
