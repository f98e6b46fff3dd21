"""VQ: a digital transceiver — vector-quantised latents sent as bits over a BSC.

``encoder -> VectorQuantizer -> indices -> bits -> BSC -> bits -> indices -> codebook -> decoder``.

* The transmitter outputs bits (float 0/1, ``[B, positions * bits_per_index]``, each index
  most significant bit first) instead of analog symbols; the receiver takes bits.
* SNR -> flip probability: BPSK with hard decisions over AWGN, ``eps = Q(sqrt(2 SNR))``
  with SNR linear per bit (:func:`bsc_flip_prob`). ``forward`` also takes an explicit
  ``flip_prob``, which overrides the SNR.
* One codebook, stored once (``transmitter.quantizer.codebook``); the receiver uses the
  same tensor without registering it, so checkpoints hold it once and adapting the
  decoder side alone can never make the two ends disagree on the codebook.
* Training: the gradient goes straight through the whole digital link — the decoder sees
  the codeword that was *received* (after bit flips), and its gradient is copied onto the
  encoder output (straight-through estimator). The codebook learns from the VQ loss on
  the *sent* codewords
  ``||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2`` (``beta`` = commitment weight, 0.25).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdk.models.base import Transceiver, start_sigmoid_at
from sdk.models.channels import check_flip_prob, check_snr
from sdk.models.registry import register
from sdk.models.tasks import quarter


def bsc_flip_prob(snr_db: float | torch.Tensor) -> float | torch.Tensor:
    """Bit error rate of hard-decision BPSK over AWGN: ``Q(sqrt(2 SNR)) = erfc(sqrt(SNR)) / 2``."""
    if isinstance(snr_db, torch.Tensor):
        return 0.5 * torch.erfc(torch.sqrt(torch.pow(10.0, snr_db / 10.0)))
    return 0.5 * math.erfc(math.sqrt(10.0 ** (snr_db / 10.0)))


def indices_to_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer indices ``[B, P]`` -> float bits ``[B, P * bits]`` (MSB first, standard ops)."""
    weights = 2.0 ** torch.arange(bits - 1, -1, -1, dtype=torch.float32, device=indices.device)
    scaled = indices.to(torch.float32)[..., None] / weights  # exact: powers of two
    return (torch.floor(scaled) - 2 * torch.floor(scaled / 2)).flatten(1)


def bits_to_indices(bits: torch.Tensor, per_index: int) -> torch.Tensor:
    """Float bits ``[B, P * bits]`` (values 0/1) -> int64 indices ``[B, P]``."""
    weights = 2.0 ** torch.arange(per_index - 1, -1, -1, dtype=bits.dtype, device=bits.device)
    return (bits.reshape(bits.shape[0], -1, per_index) * weights).sum(-1).round().long()


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantiser of ``z [B, D, h, w]`` with a straight-through gradient.

    After ``forward``, ``.loss`` holds the VQ loss (codebook + ``beta`` x commitment).
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim) / math.sqrt(dim))
        self.loss = torch.zeros(())

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codeword per position: ``[B, D, h, w] -> [B, h*w]`` (ONNX ArgMin)."""
        flat = z.flatten(2).transpose(1, 2)  # [B, P, D]
        dist = (
            (flat * flat).sum(-1, keepdim=True)
            - 2 * flat @ self.codebook.T
            + (self.codebook * self.codebook).sum(-1)
        )
        return torch.argmin(dist, dim=-1)

    def lookup(
        self, indices: torch.Tensor, shape: tuple[int, ...], detach: bool = False
    ) -> torch.Tensor:
        """Codewords of ``indices [B, P]`` as a map ``[B, D, h, w]``.

        ``detach=True`` (the receiver) reads the codebook as a constant: the receiver never
        trains it, and a standalone receiver export can then bake it into the graph.
        """
        # ``.data`` (not ``.detach()``): the tracer then sees a plain constant tensor
        book = self.codebook.data if detach else self.codebook
        return book[indices].transpose(1, 2).reshape(indices.shape[0], *shape)

    def commit(self, z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
        """Set ``.loss`` for ``z`` and its nearest ``codewords``; return ``.loss``."""
        self.loss = (z.detach() - codewords).pow(2).mean() + self.beta * (
            z - codewords.detach()
        ).pow(2).mean()
        return self.loss

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z -> (quantised z with straight-through gradient, indices)``; sets ``.loss``."""
        idx = self.indices(z)
        codewords = self.lookup(idx, z.shape[1:])
        self.commit(z, codewords)
        return straight_through(z, codewords), idx


def straight_through(z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """Forward value exactly ``codewords`` (``z - sg(z)`` is 0), gradient copied onto ``z``."""
    return codewords + (z - z.detach())


class VQEncoder(nn.Module):
    """Image -> bits ``[B, P * log2(codebook_size)]`` (float 0/1)."""

    def __init__(self, in_channels: int, hidden: int, quantizer: VectorQuantizer) -> None:
        super().__init__()
        dim = quantizer.codebook.shape[1]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 2, padding=1),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, 2, padding=1),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, dim, 3, 1, padding=1),
        )
        self.quantizer = quantizer
        self.bits = int(math.log2(quantizer.codebook.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return indices_to_bits(self.quantizer.indices(self.features(x)), self.bits)


class VQDecoder(nn.Module):
    """Bits -> codewords -> ``{"recon": [B, C, H, W]}`` (and ``"logits"`` with classes)."""

    def __init__(
        self,
        out_channels: int,
        hidden: int,
        latent_hw: tuple[int, int],
        quantizer: VectorQuantizer,
        num_classes: int,
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__()
        self._shared = (quantizer,)  # not a submodule: the transmitter owns the codebook
        dim = quantizer.codebook.shape[1]
        self.latent_shape = (dim, *latent_hw)
        self.bits = int(math.log2(quantizer.codebook.shape[0]))
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, padding=1), nn.PReLU(hidden))
        self.to_image = nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden, 4, 2, padding=1),
            nn.PReLU(hidden),
            nn.ConvTranspose2d(hidden, out_channels, 4, 2, padding=1),
        )
        start_sigmoid_at(self.to_image[-1], pixel_mean)
        self.classifier: nn.Module | None = None
        if num_classes:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes)
            )

    @property
    def quantizer(self) -> VectorQuantizer:
        return self._shared[0]

    def codewords(self, bits: torch.Tensor) -> torch.Tensor:
        indices = bits_to_indices(bits, self.bits)
        return self.quantizer.lookup(indices, self.latent_shape, detach=True)

    def decode(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(latent)
        out = {"recon": torch.sigmoid(self.to_image(h))}
        if self.classifier is not None:
            out["logits"] = self.classifier(h)
        return out

    def forward(self, bits: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.codewords(bits))


def flip_bits(bits: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """BSC with a flip probability per batch (float) or per sample (``[B]`` tensor)."""
    eps_t = torch.as_tensor(eps, dtype=bits.dtype, device=bits.device)
    eps_t = eps_t.reshape(-1, 1) if eps_t.dim() else eps_t
    flips = (torch.rand_like(bits) < eps_t).to(bits.dtype)
    return bits + flips * (1 - 2 * bits)


@register
class VQTransceiver(Transceiver):
    """Digital image transceiver: VQ-VAE style coder, indices sent as bits over a BSC.

    Args:
        in_channels, image_size: source ``C x S x S`` (S divisible by 4).
        codebook_size: codewords (a power of two; ``log2`` bits per latent position).
        latent_dim: codeword dimension. One index per ``S/4 x S/4`` position, so a
            32x32 image costs ``64 * log2(codebook_size)`` bits (384 at the default 64).
        hidden: conv width. beta: commitment weight.
        num_classes: >0 adds a ``"logits"`` head on the receiver.
        pixel_mean: where the ``recon`` output starts, as for :class:`DeepJSCC`.
    """

    transmitter: VQEncoder
    receiver: VQDecoder

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        codebook_size: int = 64,
        latent_dim: int = 16,
        hidden: int = 32,
        beta: float = 0.25,
        num_classes: int = 0,
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__("none")
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"codebook_size {codebook_size} must be a power of two >= 2")
        self.config = dict(
            in_channels=in_channels,
            image_size=image_size,
            codebook_size=codebook_size,
            latent_dim=latent_dim,
            hidden=hidden,
            beta=beta,
            num_classes=num_classes,
            pixel_mean=pixel_mean,
        )
        self.input_shape = (in_channels, image_size, image_size)
        self.tasks = ("recon", "logits") if num_classes else ("recon",)
        quantizer = VectorQuantizer(codebook_size, latent_dim, beta)
        hw = (quarter(image_size), quarter(image_size))
        self.transmitter = VQEncoder(in_channels, hidden, quantizer)
        self.receiver = VQDecoder(in_channels, hidden, hw, quantizer, num_classes, pixel_mean)

    @property
    def quantizer(self) -> VectorQuantizer:
        return self.transmitter.quantizer

    def aux_loss(self) -> torch.Tensor:
        """The VQ loss of the last forward pass (picked up by :func:`sdk.train.aux_loss`)."""
        return self.quantizer.loss

    def forward(
        self,
        x: torch.Tensor,
        snr_db: float | torch.Tensor = 10.0,
        flip_prob: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Bits over a BSC with ``flip_prob``, or ``bsc_flip_prob(snr_db)`` when it is None."""
        if flip_prob is None:
            check_snr(snr_db)
            eps = bsc_flip_prob(snr_db)
        else:
            check_flip_prob(flip_prob)
            eps = flip_prob
        z = self.transmitter.features(x)
        idx = self.quantizer.indices(z)
        self.quantizer.commit(z, self.quantizer.lookup(idx, z.shape[1:]))
        received = flip_bits(indices_to_bits(idx, self.transmitter.bits), eps)
        return self.receiver.decode(straight_through(z, self.receiver.codewords(received)))
