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
sends the last block only (no graph, no weights; the baseline).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sdk.models.base import Transceiver
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

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        b, n = nodes.shape[:2]
        wh = self.proj(nodes.flatten(0, 1)).reshape(b, n, -1)
        scores = (wh @ self.a_dst)[:, :, None] + (wh @ self.a_src)[:, None, :]
        alpha = torch.softmax(F.leaky_relu(scores, 0.2), dim=-1)  # [B, N(dst), N(src)]
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
    ) -> None:
        super().__init__()
        self.mode = mode
        self.hw = (quarter(image_size), quarter(image_size))
        widths = [hidden if i < blocks / 2 else 2 * hidden for i in range(blocks)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, 1, padding=1), nn.PReLU(hidden))
        self.blocks = nn.ModuleList(
            residual_block([hidden, *widths][i], widths[i], 2 if i < 2 else 1)
            for i in range(blocks)
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
        self.to_symbols = nn.ModuleList(ToSymbols(hidden, self.hw, reals) for _ in range(n_tasks))
        self.symbol_shape = symbol_grid(self.hw, reals)
        self.last_task_weights: torch.Tensor | None = None

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
        for layer in self.attention:
            nodes = layer(nodes)
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
        return task_symbols([proj(f) for proj, f in zip(self.to_symbols, fused, strict=True)])


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
    ) -> None:
        super().__init__(channel)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {MODES}")
        if blocks < 2:
            raise ValueError(f"GAI needs at least 2 blocks, got {blocks}")
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
        )
        symbol_shape = self.transmitter.symbol_shape
        self.receiver = task_receiver(
            self.tasks, reals, symbol_shape, hidden, in_channels, num_classes, pixel_mean
        )
