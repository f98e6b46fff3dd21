"""KEM: a small bank of memory slots that reads the image tokens with top-K attention.

* :func:`topk_attention` is the pure op the CUDA kernel and the TensorRT ``TopKMemory``
  plugin implement (see ``kernels/``); :mod:`sdk.export` swaps it for a plugin node by
  rebinding this module's global, so callers must look it up at call time.
* :class:`KEMModule`: Write (the KEM seed's Retrieve + Write) — ``L`` learnable slots
  attend over the ``n`` tokens keeping each slot's top-K scores; Broadcast — every token
  attends densely over the ``L`` slots. Pre-LayerNorm, residual connections, a token MLP.
* sKEM (``etf=True``): the tokens are projected by a fixed simplex ETF before KEM
  (:class:`ETFProjection`).
"""

from __future__ import annotations

import functools
import math
import struct

import torch
from torch import nn
from torch.nn import functional as F

from kernels.cpu import TopKSelect, topk_select
from sdk.models.base import Transceiver
from sdk.models.registry import register
from sdk.models.tasks import (
    ToSymbols,
    check_tasks,
    quarter,
    symbol_grid,
    task_reals,
    task_receiver,
    task_symbols,
)

_CONV_MIN_KEYS = 8192  # see _key_major_dots


def topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int) -> torch.Tensor:
    """``q[B,L,d], k[B,n,d], v[B,n,e] -> [B,L,e]``: softmax attention over each row's top-K keys.

    Scores ``q k^T / sqrt(d)``; each query keeps its ``min(topk, n)`` largest scores, ties
    broken towards the lower key index (NaN ranks first); softmax over the kept scores;
    weighted sum of the kept ``v`` rows. Under ONNX export it emits ``MatMul`` and ``TopK``,
    which the ONNX spec defines to return the lower index first on ties; eager mode selects
    with :func:`_top_keys`, so both keep the same keys (where the K-th score is NaN, which
    NaNs are kept may differ; the row's output is NaN either way).
    """
    kk = min(int(topk), k.shape[1])
    scale = _score_scale(q.shape[-1])
    if torch.onnx.is_in_onnx_export():
        kept, index = torch.topk((k @ q.transpose(1, 2) * scale).transpose(1, 2), kk, dim=-1)
    else:
        _check_inputs(q, k, v, topk)
        kept, index = _top_keys(_key_major_dots(q, k), kk, scale)
    weights = torch.softmax(kept, dim=-1)  # [B, L, K]
    b, n, d = v.shape
    # Gather the K kept rows of v by flat row index (ONNX: one Gather on axis 0).
    flat = (index + torch.arange(b, device=v.device)[:, None, None] * n).reshape(-1)
    rows_v = v.reshape(b * n, d).index_select(0, flat).reshape(b, index.shape[1], kk, d)
    return (weights[:, :, None, :] @ rows_v).squeeze(2)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int) -> None:
    shapes = f"q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}"
    if (
        not q.dim() == k.dim() == v.dim() == 3
        or not q.shape[0] == k.shape[0] == v.shape[0]
        or k.shape[1] != v.shape[1]
        or q.shape[2] != k.shape[2]
    ):
        raise ValueError(f"topk_attention takes q[B,L,d], k[B,n,d], v[B,n,e]; got {shapes}")
    if topk < 1 or k.shape[1] < 1:
        raise ValueError(f"topk_attention needs topk >= 1 and a key; got topk={topk}, {shapes}")


@functools.cache
def _score_scale(d: int) -> float:
    """``1/sqrt(d)`` rounded as the kernels compute it: fp32 ``1.0f / sqrtf(d)``.

    Rounding the double results to fp32 step by step gives exactly the fp32 operations
    (sqrt and division are safe under double rounding); ``1.0 / math.sqrt(d)`` differs by
    one ulp for some d (24, 96, ...), enough to flip a tie.
    """
    return _fp32(1.0 / _fp32(math.sqrt(_fp32(d))))


def _fp32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _key_major_dots(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``k q^T`` as ``[B, n, L]`` (unscaled): each key's L dot products side by side.

    ``[n, d] @ [d, L]`` is the shape CPU GEMMs handle well (1.6-2.4x faster than ``q k^T``
    in torch 2.13 at n=16k, L=16, d=128). On CPU, a single batch element with many keys
    runs it as a 1x1 convolution over ``k`` viewed channels-last, which torch hands to
    oneDNN: level with MKL's sgemm at ~4k keys and 1.3x faster at 16k on the benchmark CPU,
    so it is used from :data:`_CONV_MIN_KEYS` keys on.
    """
    b, n, d = k.shape
    if b > 1 or n < _CONV_MIN_KEYS or k.device.type != "cpu":
        return torch.bmm(k, q.transpose(1, 2))
    pixels = k.reshape(1, n, 1, d).permute(0, 3, 1, 2)  # [1, d, n, 1], channels-last
    return F.conv2d(pixels, q.reshape(-1, d, 1, 1)).permute(0, 2, 3, 1).view(1, n, -1)


def _top_keys(dots: torch.Tensor, kk: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kk`` best keys of ``scale * dots[B, n, L]`` → ``(scores, index)``, each ``[B, L, kk]``.

    On the CPU the C++ selection of :mod:`kernels.cpu` picks the keys (exact, ties to the
    lower index); the kept scores are gathered from ``dots`` so gradients flow as usual.
    Elsewhere (or without a C++ compiler) see :func:`_top_keys_torch`.
    """
    select = _native_select(dots)
    if select is None:
        return _top_keys_torch(dots, kk, scale)
    dots = dots.contiguous()
    b, n, rows = dots.shape
    index = torch.empty(b, rows, kk, dtype=torch.int64, device=dots.device)
    select(dots.data_ptr(), b, n, rows, scale, kk, index.data_ptr())
    return dots.gather(1, index.transpose(1, 2)).transpose(1, 2) * scale, index


def _native_select(dots: torch.Tensor) -> TopKSelect | None:
    """The C++ selection where it can read the scores: fp32 CPU tensors with storage, not
    under ``torch.jit.trace`` (which would record the indices as constants)."""
    if dots.device.type != "cpu" or dots.dtype != torch.float32 or torch.jit.is_tracing():
        return None
    try:
        dots.data_ptr()
    except RuntimeError:  # a torch.func transform's wrapper (jvp, grad): no storage to read
        return None
    return topk_select()


def _top_keys_torch(dots: torch.Tensor, kk: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_top_keys` with ``torch.topk``: any device and dtype.

    One ``torch.topk`` of ``kk + 1`` on the unscaled dots: scaling by a positive float keeps
    their order, so the kept set is right unless the K-th and (K+1)-th *scaled* scores are
    equal — a tie at the cut (torch.topk promises no order among equal values) or two dots
    that round together once scaled. Only then (rare) is :func:`_lower_index_first` run on
    the scaled scores, and only the tied rows take its answer. Scaling K+1 values instead
    of all n and checking one pair instead of the whole row made the op 1.3x faster at
    n=16k, L=16.
    """
    n = dots.shape[1]
    values, index = torch.topk(dots, min(kk + 1, n), dim=1)
    values, index = values.transpose(1, 2) * scale, index.transpose(1, 2)
    kept, index = values[..., :kk], index[..., :kk]
    if kk == n:
        return kept, index
    kth = values[..., kk - 1 : kk]
    tied = kth == values[..., kk:]  # NaN never ties: a NaN K-th keeps torch.topk's choice
    if bool(tied.any()):
        exact_kept, exact_index = _lower_index_first(dots.transpose(1, 2) * scale, kth, kk)
        kept, index = torch.where(tied, exact_kept, kept), torch.where(tied, exact_index, index)
    return kept, index


def _lower_index_first(
    scores: torch.Tensor, kth: torch.Tensor, kk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep every score above the K-th value ``kth`` plus the lowest-index ones equal to it.

    ``scores[B, L, n]``; NaN counts as above, as torch.topk and ONNX TopK rank it first. A
    stable sort does the same but measured ~14x slower at n=16k, L=16.
    """
    above = ~(scores <= kth)
    tie = scores == kth
    take = above | (tie & (tie.cumsum(-1) <= kk - above.sum(-1, keepdim=True)))
    rank = torch.arange(scores.shape[-1], 0, -1, device=scores.device)  # distinct, lower first
    index = torch.topk(take * rank, kk, dim=-1).indices
    return scores.gather(-1, index), index


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention ``softmax(q k^T / sqrt(d)) v`` (the Broadcast step)."""
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v


def simplex_etf(dim: int, k: int) -> torch.Tensor:
    """A simplex equiangular tight frame: ``[dim, k]``, unit columns, Gram off-diagonal -1/(k-1).

    Construction: ``M = sqrt(k/(k-1)) U V^T`` where ``V [k, k-1]`` is an orthonormal basis
    of the vectors orthogonal to ``1`` in ``R^k`` (so ``V V^T = I - 11^T/k``) and
    ``U [dim, k-1]`` has orthonormal columns (QR of a Gaussian seeded with 0, so the frame
    is fixed and reproducible). Then ``M^T M = k/(k-1) (I - 11^T/k)``: diagonal 1,
    off-diagonal ``-1/(k-1)``. Needs ``k >= 2`` and ``dim >= k - 1``.
    """
    if k < 2 or dim < k - 1:
        raise ValueError(f"a simplex ETF of {k} vectors needs k >= 2 and dim >= k-1, got dim={dim}")
    centre = torch.eye(k, dtype=torch.float64) - 1.0 / k
    v, _ = torch.linalg.qr(centre[:, : k - 1])
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(dim, k - 1, generator=gen, dtype=torch.float64))
    return (math.sqrt(k / (k - 1)) * u @ v.T).float()


class ETFProjection(nn.Module):
    """sKEM input projection: tokens ``x [B, n, d] -> x @ E [B, n, k]``, ``E = simplex_etf(d, k)``.

    Each output coordinate is the token's inner product with one of ``k`` maximally
    separated unit directions. ``E`` is a buffer (saved in checkpoints, never trained).
    """

    etf: torch.Tensor

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.register_buffer("etf", simplex_etf(dim, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.etf


class KEMModule(nn.Module):
    """Write (slots <- top-K tokens) then Broadcast (tokens <- all slots), pre-norm residuals."""

    def __init__(self, dim: int, slots: int, topk: int) -> None:
        super().__init__()
        self.topk = topk
        self.memory = nn.Parameter(torch.randn(slots, dim) / math.sqrt(dim))
        self.norm_mem, self.norm_tok, self.norm_read, self.norm_mlp = (
            nn.LayerNorm(dim) for _ in range(4)
        )
        self.write_q, self.write_k, self.write_v, self.write_out = (
            nn.Linear(dim, dim) for _ in range(4)
        )
        self.read_q, self.read_k, self.read_v, self.read_out = (
            nn.Linear(dim, dim) for _ in range(4)
        )
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def _write_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory = self.memory.expand(x.shape[0], -1, -1)
        tokens = self.norm_tok(x)
        return memory, self.write_q(self.norm_mem(memory)), self.write_k(tokens)

    def write(self, x: torch.Tensor) -> torch.Tensor:
        """Slots ``[B, L, d]`` after reading the top-K tokens each."""
        memory, q, k = self._write_inputs(x)
        v = self.write_v(self.norm_tok(x))
        return memory + self.write_out(topk_attention(q, k, v, self.topk))

    def write_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The Write step's attention matrix ``[B, L, n]`` (through the same op, one-hot values)."""
        _, q, k = self._write_inputs(x)
        eye = torch.eye(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1, -1)
        return topk_attention(q, k, eye.contiguous(), self.topk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.norm_read(self.write(x))
        tokens = self.norm_tok(x)
        read = dense_attention(self.read_q(tokens), self.read_k(memory), self.read_v(memory))
        x = x + self.read_out(read)
        return x + self.mlp(self.norm_mlp(x))


class KEMEncoder(nn.Module):
    """Conv stem -> ``(S/4)^2`` tokens (+ learned positions) -> (s)KEM -> per-task symbols."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        hidden: int,
        slots: int,
        topk: int,
        etf: bool,
        n_tasks: int,
        reals: int,
    ) -> None:
        super().__init__()
        self.hw = (quarter(image_size), quarter(image_size))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 2, padding=1),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, 2, padding=1),
            nn.PReLU(hidden),
        )
        self.position = nn.Parameter(torch.zeros(self.hw[0] * self.hw[1], hidden))
        self.project: nn.Module = ETFProjection(hidden, hidden) if etf else nn.Identity()
        self.kem = KEMModule(hidden, slots, topk)
        self.to_symbols = nn.ModuleList(ToSymbols(hidden, self.hw, reals) for _ in range(n_tasks))
        self.symbol_shape = symbol_grid(self.hw, reals)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Stem tokens ``[B, n, hidden]``, ETF-projected for sKEM (the KEM input)."""
        return self.project(self.stem(x).flatten(2).transpose(1, 2) + self.position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.kem(self.tokens(x))
        grid = tokens.transpose(1, 2).reshape(-1, tokens.shape[2], *self.hw)
        return task_symbols([proj(grid) for proj in self.to_symbols])


@register
class KEMTransceiver(Transceiver):
    """Multi-task transceiver whose transmitter mixes its tokens through a KEM memory.

    Args:
        in_channels, image_size: source ``C x S x S`` (S divisible by 4).
        bandwidth_ratio: ``R = k/n`` for the whole image, split equally between tasks.
        tasks, num_classes: output keys and classes, as for :class:`GAITransceiver`.
        hidden: token width ``d`` (and conv width).
        slots: ``L`` memory slots. topk: ``K`` tokens each slot keeps (clamped to ``n``).
        etf: sKEM — project the tokens by a fixed ``simplex_etf(hidden, hidden)`` first.
        channel: ``awgn``, ``rayleigh`` or ``none``.
        pixel_mean: where the ``recon`` output starts, as for :class:`DeepJSCC`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        bandwidth_ratio: float = 1 / 6,
        tasks: tuple[str, ...] | list[str] = ("recon", "logits"),
        num_classes: int = 10,
        hidden: int = 32,
        slots: int = 8,
        topk: int = 16,
        etf: bool = False,
        channel: str = "awgn",
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__(channel)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        if topk < 1 or slots < 1:
            raise ValueError(f"slots ({slots}) and topk ({topk}) must be >= 1")
        self.tasks = check_tasks(tasks, num_classes)
        self.config = dict(
            in_channels=in_channels,
            image_size=image_size,
            bandwidth_ratio=bandwidth_ratio,
            tasks=list(self.tasks),
            num_classes=num_classes,
            hidden=hidden,
            slots=slots,
            topk=topk,
            etf=etf,
            channel=channel,
            pixel_mean=pixel_mean,
        )
        self.input_shape = (in_channels, image_size, image_size)
        reals = task_reals(self.input_shape, bandwidth_ratio, len(self.tasks))
        self.transmitter = KEMEncoder(
            in_channels, image_size, hidden, slots, topk, etf, len(self.tasks), reals
        )
        symbol_shape = self.transmitter.symbol_shape
        self.receiver = task_receiver(
            self.tasks, reals, symbol_shape, hidden, in_channels, num_classes, pixel_mean
        )
