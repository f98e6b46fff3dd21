"""DeepJSCC: a convolutional joint source-channel coder for images.

Encoder: four 5x5 convolutions (two with stride 2) with PReLU (and optional GDN),
then a convolution to ``c`` channels at ``H/4 x W/4``. The channel-symbol count
follows the bandwidth ratio ``R = k / n`` (``n = C*H*W`` source dims, ``k`` complex
uses): ``c = ceil(2k / (H/4 * W/4))`` and the flattened output is cut to exactly
``2k`` reals, which the decoder zero-pads back. With ``R`` chosen so that ``2k``
divides evenly (e.g. 1/6 on 32x32x3) nothing is cut.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sdk.models.base import Transceiver, start_sigmoid_at
from sdk.models.channels import bandwidth_symbols, normalize_power
from sdk.models.registry import register


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al.), or its inverse for decoders.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``. ``beta`` and ``gamma`` are kept
    non-negative by squaring a free parameter (plus a floor on beta) so training is stable.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_raw = nn.Parameter(torch.ones(channels))
        self.gamma_raw = nn.Parameter((0.1 * torch.eye(channels)).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_raw.pow(2) + 1e-6
        gamma = self.gamma_raw.pow(2)[:, :, None, None]
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def _block(c_in: int, c_out: int, stride: int, gdn: bool, transpose: bool = False) -> nn.Sequential:
    if transpose:
        conv: nn.Module = nn.ConvTranspose2d(
            c_in, c_out, 5, stride, padding=2, output_padding=stride - 1
        )
    else:
        conv = nn.Conv2d(c_in, c_out, 5, stride, padding=2)
    layers = [conv]
    if gdn:
        layers.append(GDN(c_out, inverse=transpose))
    layers.append(nn.PReLU(c_out))
    return nn.Sequential(*layers)


class JSCCEncoder(nn.Module):
    """Image ``[B, C, H, W]`` -> power-normalised channel symbols ``[B, 2k]``."""

    def __init__(self, in_channels: int, hidden: int, symbol_channels: int, reals: int, gdn: bool):
        super().__init__()
        self.reals = reals
        self.features = nn.Sequential(
            _block(in_channels, hidden, 2, gdn),
            _block(hidden, hidden, 2, gdn),
            _block(hidden, hidden, 1, gdn),
            _block(hidden, hidden, 1, gdn),
        )
        self.to_symbols = nn.Conv2d(hidden, symbol_channels, 5, 1, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_symbols(self.features(x)).flatten(1)[:, : self.reals]
        return normalize_power(z)


class JSCCDecoder(nn.Module):
    """Noisy symbols ``[B, 2k]`` -> ``{"recon": [B, C, H, W] in [0, 1], "logits": ...}``."""

    def __init__(
        self,
        out_channels: int,
        hidden: int,
        symbol_channels: int,
        latent_hw: tuple[int, int],
        gdn: bool,
        num_classes: int,
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__()
        self.symbol_shape = (symbol_channels, *latent_hw)
        self.padded = math.prod(self.symbol_shape)
        self.from_symbols = _block(symbol_channels, hidden, 1, gdn, transpose=True)
        self.features = nn.Sequential(
            _block(hidden, hidden, 1, gdn, transpose=True),
            _block(hidden, hidden, 1, gdn, transpose=True),
            _block(hidden, hidden, 2, gdn, transpose=True),
        )
        self.to_image = nn.ConvTranspose2d(hidden, out_channels, 5, 2, padding=2, output_padding=1)
        start_sigmoid_at(self.to_image, pixel_mean)
        self.classifier: nn.Module | None = None
        if num_classes:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes)
            )

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        z = F.pad(z, (0, self.padded - z.shape[1])).reshape(-1, *self.symbol_shape)
        h = self.from_symbols(z)
        out = {"recon": torch.sigmoid(self.to_image(self.features(h)))}
        if self.classifier is not None:
            out["logits"] = self.classifier(h)
        return out


@register
class DeepJSCC(Transceiver):
    """Single-task DeepJSCC image transceiver (optionally with a classification head).

    Args:
        in_channels, image_size: source shape ``C x S x S`` (S divisible by 4).
        bandwidth_ratio: ``R = k/n``; e.g. 1/6 gives 512 complex uses on 32x32x3.
        hidden: conv width; 64 trains in minutes on a CPU, 256 gives ~10 M parameters.
        gdn: use GDN/IGDN after each conv (slower, usually +0.3-0.5 dB).
        num_classes: >0 adds a ``"logits"`` output head on the receiver.
        channel: ``awgn``, ``rayleigh`` or ``none``.
        pixel_mean: mean pixel value of the training data; the output starts there
            (``semedge train`` fills it in; see :func:`start_sigmoid_at`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        bandwidth_ratio: float = 1 / 6,
        hidden: int = 64,
        gdn: bool = False,
        num_classes: int = 0,
        channel: str = "awgn",
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__(channel)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        self.config = dict(
            in_channels=in_channels,
            image_size=image_size,
            bandwidth_ratio=bandwidth_ratio,
            hidden=hidden,
            gdn=gdn,
            num_classes=num_classes,
            channel=channel,
            pixel_mean=pixel_mean,
        )
        self.input_shape = (in_channels, image_size, image_size)
        self.tasks = ("recon", "logits") if num_classes else ("recon",)
        k = bandwidth_symbols(in_channels * image_size * image_size, bandwidth_ratio)
        latent_hw = (image_size // 4, image_size // 4)
        symbol_channels = math.ceil(2 * k / math.prod(latent_hw))
        self.transmitter = JSCCEncoder(in_channels, hidden, symbol_channels, 2 * k, gdn)
        self.receiver = JSCCDecoder(
            in_channels, hidden, symbol_channels, latent_hw, gdn, num_classes, pixel_mean
        )
