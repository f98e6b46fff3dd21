"""Differentiable channel models between a transmitter and a receiver.

Conventions (used by every model in the SDK):

* A real tensor ``z`` of shape ``[B, 2k]`` carries ``k`` complex channel uses as
  interleaved pairs ``(re, im)``: complex symbol ``i`` is ``z[:, 2i] + 1j * z[:, 2i+1]``.
* :func:`normalize_power` scales each sample so that the mean power per *complex*
  symbol is 1, i.e. ``sum(z**2) == k``.
* SNR is ``10 log10(P / sigma^2)`` with ``P = 1`` per complex symbol, so the complex
  noise variance is ``sigma^2 = 10^(-SNR/10)`` and each real component gets
  ``sigma^2 / 2``. (Much public DeepJSCC code adds ``sigma^2`` per real component,
  which is 3 dB more noise than the stated SNR.)
* ``snr_db`` is a float (one SNR for the batch) or a tensor of shape ``[B]``
  (one SNR per sample).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdk.errors import ChannelError

SNR_RANGE_DB = (-30.0, 60.0)
"""SNRs outside this range are almost certainly a unit mistake (linear vs dB)."""


def bandwidth_symbols(source_dims: int, ratio: float) -> int:
    """Complex channel uses ``k`` for ``n`` source dimensions at bandwidth ratio ``R = k/n``."""
    if not 0 < ratio <= 1:
        raise ChannelError(f"bandwidth ratio R={ratio} must be in (0, 1]; e.g. 1/6 or 1/12")
    return max(1, round(source_dims * ratio))


def bandwidth_ratio(channel_uses: int, source_dims: int) -> float:
    """``R = k / n``: complex channel uses per source dimension."""
    return channel_uses / source_dims


def check_snr(snr_db: float | torch.Tensor) -> None:
    """Raise :class:`ChannelError` for SNRs outside :data:`SNR_RANGE_DB` or non-finite ones."""
    lo, hi = SNR_RANGE_DB
    values = snr_db.detach().float() if isinstance(snr_db, torch.Tensor) else torch.tensor(snr_db)
    if not bool(torch.isfinite(values).all()) or values.min() < lo or values.max() > hi:
        raise ChannelError(
            f"SNR {snr_db} dB is outside [{lo:g}, {hi:g}] dB; give the SNR in dB, not linear"
        )


def _per_sample(snr_db: float | torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SNR as a ``[B, 1]`` tensor broadcastable against ``z``."""
    snr = torch.as_tensor(snr_db, dtype=z.dtype, device=z.device)
    if snr.dim() == 0:
        snr = snr.expand(z.shape[0])
    if snr.shape != (z.shape[0],):
        raise ChannelError(f"per-sample SNR must have shape [{z.shape[0]}], got {list(snr.shape)}")
    return snr.reshape(-1, *([1] * (z.dim() - 1)))


def noise_variance(snr_db: float | torch.Tensor) -> float | torch.Tensor:
    """Complex noise variance ``sigma^2 = 10^(-SNR/10)`` for unit signal power."""
    if isinstance(snr_db, torch.Tensor):
        return torch.pow(10.0, -snr_db / 10.0)
    return 10.0 ** (-snr_db / 10.0)


def normalize_power(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each sample of ``z [B, 2k]`` to mean power 1 per complex symbol."""
    if z.shape[-1] % 2:
        raise ChannelError(f"channel tensor needs an even last dimension (re, im), got {z.shape}")
    flat = z.flatten(1)
    k = flat.shape[1] // 2
    power = flat.pow(2).sum(dim=1, keepdim=True) / k
    return (flat / torch.sqrt(power + eps)).reshape(z.shape)


class AWGN(nn.Module):
    """Additive white Gaussian noise at a given SNR (dB), correct complex variance."""

    def forward(self, z: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
        sigma2 = noise_variance(_per_sample(snr_db, z))
        return z + torch.randn_like(z) * torch.sqrt(torch.as_tensor(sigma2) / 2.0)


class Rayleigh(nn.Module):
    """Slow (block) Rayleigh fading: one ``h ~ CN(0, 1)`` per sample, then AWGN.

    ``equalizer`` chooses what the receiver does with perfect CSI:
    ``None`` (no equalisation: the decoder sees ``h z + n``), ``"zf"`` (``y / h``) or
    ``"mmse"`` (``conj(h) y / (|h|^2 + sigma^2)``, which does not blow up deep fades).
    """

    def __init__(self, equalizer: str | None = "mmse") -> None:
        super().__init__()
        if equalizer not in (None, "zf", "mmse"):
            raise ChannelError(f"unknown equalizer {equalizer!r}; use None, 'zf' or 'mmse'")
        self.equalizer = equalizer
        self.awgn = AWGN()
        self.last_h: torch.Tensor | None = None

    def forward(self, z: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        pairs = z.reshape(b, -1, 2)
        h = torch.randn(b, 1, 2, dtype=z.dtype, device=z.device) / math.sqrt(2.0)
        self.last_h = h
        hr, hi = h[..., 0], h[..., 1]
        xr, xi = pairs[..., 0], pairs[..., 1]
        faded = torch.stack((hr * xr - hi * xi, hr * xi + hi * xr), dim=-1)
        y = self.awgn(faded.reshape(z.shape), snr_db).reshape(b, -1, 2)
        if self.equalizer is None:
            return y.reshape(z.shape)
        h2 = hr * hr + hi * hi
        denom = h2 if self.equalizer == "zf" else h2 + noise_variance(_per_sample(snr_db, h2))
        yr, yi = y[..., 0], y[..., 1]
        # conj(h) * y / denom
        eq = torch.stack(((hr * yr + hi * yi) / denom, (hr * yi - hi * yr) / denom), dim=-1)
        return eq.reshape(z.shape)


class BSC(nn.Module):
    """Binary symmetric channel: each bit in ``{0, 1}`` flips with probability ``eps``.

    Written as ``y = b + f (1 - 2b)`` with a Bernoulli flip mask ``f``, so gradients
    flow to ``b`` (sign-inverted on flipped bits), which straight-through VQ training uses.
    """

    def __init__(self, flip_prob: float = 0.0) -> None:
        super().__init__()
        check_flip_prob(flip_prob)
        self.flip_prob = flip_prob

    def forward(self, bits: torch.Tensor, flip_prob: float | None = None) -> torch.Tensor:
        eps = self.flip_prob if flip_prob is None else flip_prob
        check_flip_prob(eps)
        flips = (torch.rand_like(bits) < eps).to(bits.dtype)
        return bits + flips * (1 - 2 * bits)


def check_flip_prob(eps: float) -> None:
    if not 0.0 <= eps <= 0.5:
        raise ChannelError(f"BSC flip probability {eps} must be in [0, 0.5]")


class NoiselessChannel(nn.Module):
    """Identity channel, for export and for measuring the source-coding ceiling."""

    def forward(self, z: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
        return z


CHANNELS: dict[str, type[nn.Module]] = {
    "awgn": AWGN,
    "rayleigh": Rayleigh,
    "none": NoiselessChannel,
}


def make_channel(name: str) -> nn.Module:
    """Analog channel by name: ``awgn``, ``rayleigh`` or ``none``."""
    if name not in CHANNELS:
        raise ChannelError(f"unknown channel {name!r}; choose one of {', '.join(CHANNELS)}")
    return CHANNELS[name]()
