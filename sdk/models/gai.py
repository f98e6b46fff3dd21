"""GAI: multi-task transmitter that fuses all encoder blocks with graph attention.

Transmitter (per the GAI seed, arXiv 2501.02006, scaled down for CPU training):

1. stem 3x3 conv, then ``blocks`` residual blocks; blocks 0 and 1 downsample by 2, the
   second half of the blocks is twice as wide. Each block output is a graph node.
2. feature transformation: bilinear resize to the common ``H/4 x W/4`` grid and a 1x1
   conv to ``hidden`` channels, so every node is a ``[hidden, H/4, W/4]`` map.
3. graph attention (single head, GAT-style) over the fully connected block graph with self
   loops, ``iterations`` times: ``W`` is a shared 1x1 conv; the score of edge ``i <- j`` is
   ``LeakyReLU(a_dst . vec(W h_i) + a_src . vec(W h_j))`` (slope 0.2), softmax over ``j``;
   ``h_i <- h_i + ELU(sum_j alpha_ij W h_j)``. The residual keeps each block's own content
   so M > 1 does not over-smooth.
4. relation mapping: per task an MLP (``pooled node -> 256 -> 1``) on each node's
   global-average-pooled features, softmax over the nodes -> task-node weights (sum to 1).
5. task feature = weighted sum of the nodes; channel downscaling
   (:class:`~sdk.models.tasks.ToSymbols`) to the task's share of the budget; the
   segment of every task is power-normalised (budget split: :mod:`sdk.models.tasks`).

Variants: ``graph_update=False`` skips step 3 (ablation "GAI-w"); ``mode="sequential"``
sends the last block only (no graph, no weights; the baseline). ``kem_slots > 0`` adds a
KEM memory (:class:`~sdk.models.kem.KEMModule`) between the fused task features and the
channel: the ``T * (S/4)^2`` task tokens share information through ``kem_slots`` slots
that each read their ``kem_topk`` best tokens (``kem_etf``: sKEM, ETF-projected tokens).
``encoder_hidden`` sets the stem/block width apart from the node width, so variants can be
given the same parameter count (``tools/reproduce_multitask.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sdk.models.base import Transceiver
from sdk.models.kem import ETFProjection, KEMModule
from sdk.models.registry import register
from sdk.models.tasks import (
    ToSymbols,
    check_tasks,
    quarter,
    residual_block,
    symbol_grid,
    task_reals,
    task_receiver,
    task_symbols,
)

MODES = ("gai", "sequential")


class GraphAttention(nn.Module):
    """One single-head GAT layer over ``N`` node maps ``[B, N, c, h, w]`` (fully connected)."""

    def __init__(self, channels: int, hw: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        size = channels * hw[0] * hw[1]
        self.a_dst = nn.Parameter(torch.randn(size) / size**0.5)
        self.a_src = nn.Parameter(torch.randn(size) / size**0.5)
        self.last_alpha = torch.empty(0)  # attention of the last forward pass, [B, N, N]

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        b, n = nodes.shape[:2]
        wh = self.proj(nodes.flatten(0, 1)).reshape(b, n, -1)
        scores = (wh @ self.a_dst)[:, :, None] + (wh @ self.a_src)[:, None, :]
        alpha = torch.softmax(F.leaky_relu(scores, 0.2), dim=-1)  # [B, N(dst), N(src)]
        self.last_alpha = alpha.detach()
        return nodes + F.elu(alpha @ wh).reshape(nodes.shape)


class GAIEncoder(nn.Module):
    """Image -> power-normalised symbols ``[B, T * reals]``; task-node weights on the side."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        hidden: int,
        blocks: int,
        iterations: int,
        graph_update: bool,
        mode: str,
        n_tasks: int,
        reals: int,
        relation_hidden: int,
        encoder_hidden: int,
        kem: tuple[int, int, bool] | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.hw = (quarter(image_size), quarter(image_size))
        e = encoder_hidden
        widths = [e if i < blocks / 2 else 2 * e for i in range(blocks)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, e, 3, 1, padding=1), nn.PReLU(e))
        self.blocks = nn.ModuleList(
            residual_block([e, *widths][i], widths[i], 2 if i < 2 else 1) for i in range(blocks)
        )
        used = widths if mode == "gai" else widths[-1:]
        self.transform = nn.ModuleList(nn.Conv2d(w, hidden, 1) for w in used)
        graph = graph_update and mode == "gai"
        self.attention = nn.ModuleList(
            GraphAttention(hidden, self.hw) for _ in range(iterations if graph else 0)
        )
        self.relation = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden, relation_hidden), nn.ReLU(), nn.Linear(relation_hidden, 1)
            )
            for _ in range(n_tasks if mode == "gai" else 0)
        )
        self.kem: nn.Module | None = None
        if kem is not None:
            slots, topk, etf = kem
            project: nn.Module = ETFProjection(hidden, hidden) if etf else nn.Identity()
            self.kem = nn.Sequential(project, KEMModule(hidden, slots, topk))
        self.to_symbols = nn.ModuleList(ToSymbols(hidden, self.hw, reals) for _ in range(n_tasks))
        self.symbol_shape = symbol_grid(self.hw, reals)
        self.last_task_weights: torch.Tensor | None = None
        self.last_attention: list[torch.Tensor] = []

    def nodes(self, x: torch.Tensor) -> torch.Tensor:
        """Transformed (and graph-updated) block outputs ``[B, N, hidden, H/4, W/4]``."""
        h = self.stem(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        if self.mode == "sequential":
            outs = outs[-1:]
        common = [
            conv(F.interpolate(o, size=self.hw, mode="bilinear", align_corners=False))
            for conv, o in zip(self.transform, outs, strict=True)
        ]
        nodes = torch.stack(common, dim=1)
        self.last_attention = []
        for layer in self.attention:
            assert isinstance(layer, GraphAttention)
            nodes = layer(nodes)
            self.last_attention.append(layer.last_alpha)
        return nodes

    def task_weights(self, nodes: torch.Tensor) -> torch.Tensor:
        """Softmax task-node weights ``[B, T, N]`` (each task's weights sum to 1)."""
        pooled = nodes.mean(dim=(3, 4))  # [B, N, hidden]
        scores = torch.stack([mlp(pooled).squeeze(-1) for mlp in self.relation], dim=1)
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = self.nodes(x)
        if self.mode == "sequential":
            fused = [nodes[:, 0] for _ in self.to_symbols]
        else:
            weights = self.task_weights(nodes)
            self.last_task_weights = weights.detach()
            fused = [
                (weights[:, t, :, None, None, None] * nodes).sum(dim=1)
                for t in range(len(self.to_symbols))
            ]
        if self.kem is not None:
            fused = self.share(fused)
        return task_symbols([proj(f) for proj, f in zip(self.to_symbols, fused, strict=True)])

    def share(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """(s)KEM over the tokens of all tasks: ``T`` maps ``[B, c, h, w]`` in and out."""
        assert self.kem is not None
        b, c, h, w = features[0].shape
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)
        shared = self.kem(tokens).transpose(1, 2).reshape(b, c, len(features), h, w)
        return list(shared.unbind(2))


@register
class GAITransceiver(Transceiver):
    """Multi-task transceiver with the graph attention inter-block (GAI) transmitter.

    Args:
        in_channels, image_size: source ``C x S x S`` (S divisible by 4; 28 for MNIST).
        bandwidth_ratio: ``R = k/n`` for the whole image, split equally between tasks.
        tasks: output keys from ``("recon", "logits", "mask_logits")``.
        num_classes: classes of the ``logits`` task.
        hidden: conv width (nodes have ``hidden`` channels at ``S/4 x S/4``).
        blocks: N residual blocks = N graph nodes.
        iterations: M graph attention iterations.
        graph_update: False = ablation "GAI-w" (weights computed on untouched nodes).
        mode: ``"gai"`` or ``"sequential"`` (last block only, the baseline).
        relation_hidden: hidden width of each task's relation MLP (256 in the seed).
        encoder_hidden: stem/block width (``None``: ``hidden``); nodes stay ``hidden`` wide.
        kem_slots: ``L`` > 0 adds a KEM memory over all task tokens before the channel.
        kem_topk: ``K`` tokens each slot reads. kem_etf: sKEM (fixed ETF projection first).
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
        blocks: int = 4,
        iterations: int = 1,
        graph_update: bool = True,
        mode: str = "gai",
        relation_hidden: int = 256,
        channel: str = "awgn",
        pixel_mean: float = 0.5,
        encoder_hidden: int | None = None,
        kem_slots: int = 0,
        kem_topk: int = 16,
        kem_etf: bool = False,
    ) -> None:
        super().__init__(channel)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {MODES}")
        if blocks < 2:
            raise ValueError(f"GAI needs at least 2 blocks, got {blocks}")
        if kem_slots < 0 or kem_topk < 1:
            raise ValueError(f"kem_slots ({kem_slots}) must be >= 0 and kem_topk ({kem_topk}) >= 1")
        self.tasks = check_tasks(tasks, num_classes)
        self.config = dict(
            in_channels=in_channels,
            image_size=image_size,
            bandwidth_ratio=bandwidth_ratio,
            tasks=list(self.tasks),
            num_classes=num_classes,
            hidden=hidden,
            blocks=blocks,
            iterations=iterations,
            graph_update=graph_update,
            mode=mode,
            relation_hidden=relation_hidden,
            channel=channel,
            pixel_mean=pixel_mean,
            encoder_hidden=encoder_hidden,
            kem_slots=kem_slots,
            kem_topk=kem_topk,
            kem_etf=kem_etf,
        )
        self.input_shape = (in_channels, image_size, image_size)
        reals = task_reals(self.input_shape, bandwidth_ratio, len(self.tasks))
        self.transmitter = GAIEncoder(
            in_channels,
            image_size,
            hidden,
            blocks,
            iterations,
            graph_update,
            mode,
            len(self.tasks),
            reals,
            relation_hidden,
            encoder_hidden or hidden,
            (kem_slots, kem_topk, kem_etf) if kem_slots else None,
        )
        symbol_shape = self.transmitter.symbol_shape
        self.receiver = task_receiver(
            self.tasks, reals, symbol_shape, hidden, in_channels, num_classes, pixel_mean
        )
