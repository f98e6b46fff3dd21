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

import math

import torch
from torch import nn

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


def topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int) -> torch.Tensor:
    """``q[B,L,d], k[B,n,d], v[B,n,d] -> [B,L,d]``: softmax attention over each row's top-K keys.

    Scores ``q k^T / sqrt(d)`` (computed as ``(k q^T)^T``); each query keeps its
    ``min(topk, n)`` largest scores, ties broken towards the lower key index; softmax over
    the kept scores; weighted sum of the kept ``v`` rows. Under ONNX export it emits
    ``TopK``, which the ONNX spec defines to return the lower index first on ties; eager
    mode uses :func:`_topk_lower_index_first`, so both select the same keys.
    """
    kk = min(int(topk), k.shape[1])
    # k q^T rather than q k^T: the same dot products, but [n, d] @ [d, L] is the shape CPU
    # GEMMs handle well (measured 2.5x faster at n=16k, L=16, d=128 in torch 2.13).
    scores = (k @ q.transpose(1, 2) / math.sqrt(q.shape[-1])).transpose(1, 2).contiguous()
    if torch.onnx.is_in_onnx_export():
        kept, index = torch.topk(scores, kk, dim=-1)
    else:
        kept, index = _topk_lower_index_first(scores, kk)
    weights = torch.softmax(kept, dim=-1)  # [B, L, K]
    b, n, d = v.shape
    # Gather the K kept rows of v by flat row index (ONNX: one Gather on axis 0).
    flat = (index + torch.arange(b, device=v.device)[:, None, None] * n).reshape(-1)
    rows_v = v.reshape(b * n, d).index_select(0, flat).reshape(b, index.shape[1], kk, d)
    return (weights[:, :, None, :] @ rows_v).squeeze(2)


def _topk_lower_index_first(scores: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` whose kept *set* breaks ties at the cut towards lower indices.

    torch.topk promises no order among equal values. The kept set is only ambiguous when the
    K-th value also occurs outside the kept entries; then (eager only, rare) every entry
    above the K-th value is kept plus the lowest-index entries equal to it. A stable sort
    does the same but measured ~14x slower at n=16k, L=16 (the kernel benchmark size).
    """
    kept, index = torch.topk(scores, kk, dim=-1)
    kth = kept[..., -1:]
    # No excluded entry equals the K-th value. (Not `(scores >= kth).sum() == K`: torch.topk
    # ranks NaN first, NaN >= kth is False, and such rows would take the tie path wrongly.)
    if bool(((scores == kth).sum(-1) == (kept == kth).sum(-1)).all()):
        return kept, index
    above = scores > kth
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
