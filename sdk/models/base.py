"""The transceiver contract every model family implements.

A transceiver is ``transmitter -> channel -> receiver``:

* ``transmitter(x)`` maps a source batch to power-normalised channel symbols
  ``z [B, 2k]`` (interleaved re/im, see :mod:`sdk.models.channels`);
* the channel corrupts ``z`` at ``snr_db``;
* ``receiver(z_hat)`` returns a ``dict`` of named task outputs (``"recon"``,
  ``"logits"``, ``"mask"``, ...).

The two halves are separate modules because they run on different devices and are
exported separately (:mod:`sdk.export`); adaptation (ZFDA, SLF) picks a side by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sdk.models.channels import check_snr, make_channel


class Transceiver(nn.Module):
    """Base class: subclasses set ``transmitter``, ``receiver`` and ``input_shape``."""

    transmitter: nn.Module
    receiver: nn.Module
    input_shape: tuple[int, ...]
    tasks: tuple[str, ...]
    config: dict[str, Any]

    def __init__(self, channel: str = "awgn") -> None:
        super().__init__()
        self.channel_name = channel
        self.channel = make_channel(channel)

    def forward(
        self, x: torch.Tensor, snr_db: float | torch.Tensor = 10.0
    ) -> dict[str, torch.Tensor]:
        check_snr(snr_db)
        z = self.transmitter(x)
        return self.receiver(self.channel(z, snr_db))

    def sides(self) -> dict[str, nn.Module]:
        """The adaptable halves by name: ``encoder`` (transmitter) and ``decoder`` (receiver)."""
        return {"encoder": self.transmitter, "decoder": self.receiver}

    @property
    def channel_uses(self) -> int:
        """Complex channel uses ``k`` per sample."""
        with torch.no_grad():
            z = self.transmitter(torch.zeros(1, *self.input_shape))
        return z.shape[1] // 2


def start_sigmoid_at(layer: nn.Module, pixel_mean: float) -> None:
    """Set the bias of a sigmoid image head to ``logit(pixel_mean)``: it starts at the data mean.

    From bias 0 the head starts at 0.5 everywhere. On mostly-black images (MNIST) every
    pixel's gradient then points the same way, Adam grows all decoder layers together, the
    pre-sigmoid activations reach about -100 within ~20 steps and the sigmoid stays
    saturated at black (test PSNR stuck at 9.6 dB). Starting at the data mean avoids it.
    """
    if not 0.0 < pixel_mean < 1.0:
        raise ValueError(f"pixel_mean {pixel_mean} must lie strictly between 0 and 1")
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no bias to initialise")
    with torch.no_grad():
        bias.fill_(math.log(pixel_mean / (1.0 - pixel_mean)))
