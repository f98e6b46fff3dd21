"""Activation-range methods: names users type -> ONNX Runtime calibrator settings.

* ``minmax`` — the largest ``|x|`` seen; no clipping, coarse steps when outliers exist.
* ``percentile`` — the ``percentile`` (default 99.999) of ``|x|`` over a 2048-bin
  histogram; clips rare outliers.
* ``entropy`` — the threshold that minimises the KL divergence between the float and
  the quantised histogram (TensorRT's classic calibrator) over ONNX Runtime's default
  128-bin histogram (its ``quantize_static`` does not pass a bin count through).

Ranges are symmetric for every method (``CalibTensorRangeSymmetric``), so every zero
point is 0, as TensorRT's explicit quantization requires.
"""

from __future__ import annotations

from typing import Any

from calibration.errors import CalibrationError

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_METHOD = "entropy"
PERCENTILE = 99.999


def calibrator_settings(method: str, percentile: float = PERCENTILE) -> tuple[Any, dict[str, Any]]:
    """(``CalibrationMethod``, extra options for ``quantize_static``) for ``method``."""
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    if not 0 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    options: dict[str, Any] = {"CalibTensorRangeSymmetric": True}
    if method == "minmax":
        return CalibrationMethod.MinMax, options
    if method == "percentile":
        options["CalibPercentile"] = percentile
        return CalibrationMethod.Percentile, options
    return CalibrationMethod.Entropy, options
