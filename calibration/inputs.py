"""What a part of a transceiver sees, and how its outputs become task metrics.

Calibration and the sensitivity metric use the model's own inputs:

* a chain or transmitter takes images;
* a receiver takes the symbols the checkpoint's transmitter makes of those images,
  sent through an AWGN channel at ``snrs`` (cycled over the samples with a fixed
  seed), so its ranges cover the noise it will see on the device.

Task metrics (:func:`sdk.evaluate` metrics: PSNR for ``recon``, accuracy for ``logits``,
IoU for ``mask_logits``) need task outputs: a transmitter's symbols are sent through the
same channel and decoded by the checkpoint's float receiver. A part other than the
chain therefore needs the checkpoint it was exported from (its ONNX metadata names it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibration.errors import CalibrationError

DEFAULT_SNRS = (0.0, 10.0, 20.0)
NOISE_SEED = 0


@dataclass
class ModelData:
    """Inputs for one model input name, the ground truth, and outputs -> task outputs."""

    name: str
    inputs: np.ndarray
    truth: dict[str, torch.Tensor]
    to_tasks: Callable[[dict[str, np.ndarray]], dict[str, torch.Tensor]]


def _channel(symbols: torch.Tensor, snrs: Sequence[float]) -> torch.Tensor:
    """AWGN at ``snrs[i % len(snrs)]`` for sample ``i``, seeded (same noise every run)."""
    from sdk.models.channels import noise_variance

    gen = torch.Generator().manual_seed(NOISE_SEED)
    snr = torch.tensor([snrs[i % len(snrs)] for i in range(len(symbols))], dtype=torch.float32)
    sigma = torch.sqrt(torch.as_tensor(noise_variance(snr)) / 2.0).unsqueeze(1)
    return symbols + torch.randn(symbols.shape, generator=gen) * sigma


def _checkpoint(meta: dict[str, Any], part: str) -> Any:
    from sdk.checkpoint import load_checkpoint

    source = meta.get("source")
    if not source or not Path(source).is_dir():
        raise CalibrationError(
            f"calibrating a {part} needs the checkpoint it was exported from ({source or 'unknown'}"
            " is missing); export from the checkpoint again or calibrate the chain"
        )
    return load_checkpoint(source).eval()


def model_data(
    meta: dict[str, Any],
    input_name: str,
    shape: tuple[int, ...],
    data: str | None,
    count: int,
    split: str,
    snrs: Sequence[float] = DEFAULT_SNRS,
) -> ModelData:
    """``count`` samples of ``split`` shaped for the model described by ONNX ``meta``."""
    from sdk.data import sample_set

    part = meta.get("part", "chain")
    image_shape = tuple(meta.get("input_shape") or shape)
    dataset = sample_set(image_shape, data, split)
    if len(dataset) == 0:
        raise CalibrationError(f"{data} gives no samples; add images to it")
    dataset = dataset.spread(min(count, len(dataset)))
    truth = {"image": dataset.images}
    if dataset.labels is not None:
        truth["label"] = dataset.labels
    if dataset.masks is not None:
        truth["mask"] = dataset.masks
    names = list(meta.get("tasks") or [])

    def identity(outputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in outputs.items()}

    if part == "chain":
        return ModelData(input_name, dataset.images.numpy(), truth, identity)
    model = _checkpoint(meta, part)
    if part == "receiver":
        with torch.no_grad():
            symbols = _channel(model.transmitter(dataset.images), snrs)
        return ModelData(input_name, symbols.numpy(), truth, identity)

    def decode(outputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = model.receiver(_channel(torch.from_numpy(outputs["symbols"]), snrs))
        return {k: out[k] for k in names or out}

    return ModelData(input_name, dataset.images.numpy(), truth, decode)


def task_metrics(data: ModelData, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean PSNR (dB), accuracy and IoU (percent) of ``outputs`` over ``data``."""
    from sdk.evaluate import _batch_metrics

    sums = _batch_metrics(data.to_tasks(outputs), data.truth)
    n = len(data.inputs)
    scale = {"psnr": 1.0, "accuracy": 100.0, "iou": 100.0}
    return {k: v / n * scale[k] for k, v in sums.items() if k in scale}
