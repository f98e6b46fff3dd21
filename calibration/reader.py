"""Batches of calibration samples as ONNX Runtime's ``CalibrationDataReader``, with a bar."""

from __future__ import annotations

from typing import Any

import numpy as np


def batch_reader(input_name: str, samples: np.ndarray, batch: int = 16, show: bool = True) -> Any:
    """A reader yielding ``{input_name: samples[i:i+batch]}`` and advancing a tqdm bar."""
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    class BatchReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = 0
            self._bar = tqdm(
                total=len(samples), desc="calibrating", unit="sample", disable=not show
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(samples):
                self._bar.close()
                return None
            chunk = samples[self._next : self._next + batch]
            self._next += len(chunk)
            self._bar.update(len(chunk))
            return {input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

        def __len__(self) -> int:
            return len(samples)

    return BatchReader()
