"""Pieces shared by the multi-task families (GAI, KEM): symbol budgets, projections, decoders.

Bandwidth budget: the image has ``n = C*H*W`` source dims; ``R = k/n`` gives ``k``
complex channel uses per image. They are split **equally** between the tasks: task
``t`` gets ``k // T`` complex uses (``2 * (k // T)`` reals); the ``k mod T`` leftover
uses are not sent, so the total never exceeds the budget. Each task's segment is
power-normalised on its own (:func:`task_symbols`), so every task gets the same power
per channel use and the whole vector has mean power 1. Normalising the concatenation
jointly (learned power allocation) was tried first: trained on MNIST with recon, logits
and mask tasks, GAI starved the recon segment (PSNR 9.86 dB at both 0 and 10 dB SNR,
i.e. an input-independent output) while classification and masks trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sdk.models.base import start_sigmoid_at
from sdk.models.channels import bandwidth_symbols, normalize_power

TASKS = ("recon", "logits", "mask_logits")


def check_tasks(tasks: tuple[str, ...] | list[str], num_classes: int) -> tuple[str, ...]:
    """Validate the requested task outputs (contract keys) and return them as a tuple."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks {tasks} must be distinct names from {TASKS}")
    if "logits" in tasks and num_classes < 1:
        raise ValueError("task 'logits' needs num_classes >= 1")
    return tasks


def task_reals(input_shape: tuple[int, int, int], ratio: float, n_tasks: int) -> int:
    """Real channel values per task: ``2 * (k // T)`` with ``k = round(R * C*H*W)``."""
    k = bandwidth_symbols(math.prod(input_shape), ratio)
    if k < n_tasks:
        raise ValueError(f"bandwidth ratio {ratio} gives {k} channel uses for {n_tasks} tasks")
    return 2 * (k // n_tasks)


def task_symbols(segments: list[torch.Tensor]) -> torch.Tensor:
    """Per-task segments ``[B, reals]`` -> ``[B, T * reals]``, each at mean power 1."""
    return torch.cat([normalize_power(s) for s in segments], dim=1)


def residual_block(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Two 3x3 convolutions with PReLU and a (1x1 when shapes change) skip connection."""
    return _Residual(c_in, c_out, stride)


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, padding=1),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, 1, padding=1),
        )
        self.skip: nn.Module = (
            nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride)
        )
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def symbol_grid(hw: tuple[int, int], reals: int) -> tuple[int, int, int]:
    """The smallest ``[c, h, w]`` grid holding ``reals`` values (what :class:`ToSymbols` emits)."""
    return (math.ceil(reals / math.prod(hw)), *hw)


class ToSymbols(nn.Module):
    """Channel downscaling: feature map ``[B, c, h, w]`` -> exactly ``reals`` values per sample.

    A 3x3 conv to the fewest channels whose ``h*w`` grid holds ``reals`` values, flattened
    and cut to ``reals`` (the decoder zero-pads the cut part back, as in DeepJSCC).
    """

    def __init__(self, c_in: int, hw: tuple[int, int], reals: int) -> None:
        super().__init__()
        self.reals = reals
        self.shape = symbol_grid(hw, reals)
        self.conv = nn.Conv2d(c_in, self.shape[0], 3, 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)[:, : self.reals]


class TaskDecoder(nn.Module):
    """Noisy symbols of one task ``[B, reals]`` -> that task's output (contract shapes).

    ``recon``/``mask_logits``: zero-pad to the :class:`ToSymbols` grid, conv + residual block
    at ``H/4``, two stride-2 transposed convs back to ``H x W`` (sigmoid for ``recon``).
    ``logits``: a two-layer MLP on the symbols.
    """

    def __init__(
        self,
        task: str,
        reals: int,
        symbol_shape: tuple[int, int, int],
        hidden: int,
        out_channels: int,
        num_classes: int,
        pixel_mean: float = 0.5,
    ) -> None:
        super().__init__()
        self.task = task
        self.symbol_shape = symbol_shape
        self.padded = math.prod(symbol_shape)
        if task == "logits":
            self.net: nn.Module = nn.Sequential(
                nn.Linear(reals, 4 * hidden), nn.PReLU(), nn.Linear(4 * hidden, num_classes)
            )
        else:
            channels = out_channels if task == "recon" else 1
            self.net = nn.Sequential(
                nn.Conv2d(symbol_shape[0], hidden, 3, 1, padding=1),
                nn.PReLU(hidden),
                residual_block(hidden, hidden, 1),
                nn.ConvTranspose2d(hidden, hidden, 4, 2, padding=1),
                nn.PReLU(hidden),
                nn.ConvTranspose2d(hidden, channels, 4, 2, padding=1),
            )
            if task == "recon":
                start_sigmoid_at(self.net[-1], pixel_mean)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.task == "logits":
            out: torch.Tensor = self.net(z)
            return out
        grid = F.pad(z, (0, self.padded - z.shape[1])).reshape(-1, *self.symbol_shape)
        out = self.net(grid)
        return torch.sigmoid(out) if self.task == "recon" else out


class TaskReceiver(nn.Module):
    """Splits ``[B, T * reals]`` into per-task segments and runs each task's decoder."""

    def __init__(self, decoders: dict[str, TaskDecoder], reals: int) -> None:
        super().__init__()
        self.decoders = nn.ModuleDict(decoders)
        self.reals = reals

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            task: dec(z[:, i * self.reals : (i + 1) * self.reals])
            for i, (task, dec) in enumerate(self.decoders.items())
        }


def task_receiver(
    tasks: tuple[str, ...],
    reals: int,
    symbol_shape: tuple[int, int, int],
    hidden: int,
    out_channels: int,
    num_classes: int,
    pixel_mean: float = 0.5,
) -> TaskReceiver:
    """A :class:`TaskReceiver` with one :class:`TaskDecoder` per task."""
    decoders = {
        t: TaskDecoder(t, reals, symbol_shape, hidden, out_channels, num_classes, pixel_mean)
        for t in tasks
    }
    return TaskReceiver(decoders, reals)


def quarter(size: int) -> int:
    """Spatial size after two stride-2, padding-1, 3x3 convolutions: ``ceil(ceil(S/2)/2)``."""
    return math.ceil(math.ceil(size / 2) / 2)
