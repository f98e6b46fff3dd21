"""What the on-device examples make for themselves with ``--tiny``: a small trained
transceiver, its receiver built for ONNX Runtime, and camera frames written as PNG files.

Real runs pass their own checkpoint, device root and frames instead; nothing here is
needed on a real device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINT = (1.0, 0.75, 0.45)
"""Per-channel gain of the "new camera": a warm colour cast the base never saw."""


def tiny_checkpoint(out: Path, seed: int = 0, epochs: int = 2, images: int = 512) -> Path:
    """A DeepJSCC (hidden 8, 3x32x32) trained briefly on real photo patches."""
    import torch

    from sdk.data import load_dataset
    from sdk.train import TrainConfig, build_for_data, train

    data = load_dataset("patches", "train").spread(images)
    torch.manual_seed(seed)
    model = build_for_data("DeepJSCC", {"hidden": 8}, data)
    config = TrainConfig(epochs=epochs, batch_size=32, seed=seed, data="patches", progress=False)
    train(model, data, config, out)
    return out / "checkpoint"


def receiver_build(checkpoint: Path, out: Path, name: str) -> Path:
    """The receiver of ``checkpoint`` as an ONNX Runtime artifact whose decoder weights
    deltas and updates can switch."""
    from sdk.build import build

    return build(checkpoint, out, backend="onnxrt", part="receiver", delta_targets="decoder",
                 name=name)  # fmt: skip


def camera_frames(folder: Path, count: int, start: int = 0, tint=TINT) -> Path:
    """``count`` PNG frames of a real photo (skimage's coffee) at mixed sizes, tinted."""
    from PIL import Image
    from skimage import data

    photo = np.asarray(data.coffee(), dtype=np.float32) * np.asarray(tint, np.float32)
    photo = photo.clip(0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        h, w = ((48, 64), (40, 40), (64, 48))[i % 3]
        top, left = (37 * i) % (photo.shape[0] - h), (53 * i) % (photo.shape[1] - w)
        Image.fromarray(photo[top : top + h, left : left + w]).save(folder / f"{i:04d}.png")
    return folder


def psnr_db(got: np.ndarray, want: np.ndarray) -> float:
    """Mean PSNR in dB of reconstructions ``got`` against ``want`` (``[N, C, H, W]``)."""
    import torch

    from sdk.evaluate import psnr

    return float(psnr(torch.from_numpy(got), torch.from_numpy(want)))
