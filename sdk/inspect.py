"""What a trained GAI transmitter attends to: task-node weights and graph attention.

:func:`gai_weights` runs the transmitter on real images and averages, over the images,
the task-node weights (``[T, N]``: how much of block ``i`` task ``t`` sends) and each
graph-attention layer's coefficients (``[N, N]``, row = receiving node). It also flags
the GAI seed's failure signature, *attention collapse*: every coefficient close to the
uniform ``1/N``, so the graph passes each node the plain mean of all nodes and its
structure carries nothing. The flag is raised when the largest deviation from ``1/N``
is below :data:`COLLAPSE_TOLERANCE`; the same test is applied to the task weights
(every task using every block equally).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdk.errors import SemedgeError

COLLAPSE_TOLERANCE = 0.02
IMAGES = 256


class InspectError(SemedgeError):
    """A checkpoint that has nothing to inspect, or images that do not fit it."""


def gai_weights(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """``{"tasks", "task_weights" [T][N], "attention" [M][N][N], "collapsed": {...}}``."""
    from sdk.models.gai import GAIEncoder, GAITransceiver

    enc = getattr(model, "transmitter", None)
    if (
        not isinstance(model, GAITransceiver)
        or not isinstance(enc, GAIEncoder)
        or enc.mode != "gai"
    ):
        raise InspectError(
            f"{type(model).__name__} has no task-node weights to show; "
            "--gai-weights needs a GAITransceiver checkpoint with mode='gai'"
        )
    if images.shape[1:] != model.input_shape:
        raise InspectError(
            f"the model takes {list(model.input_shape)} images, got {list(images.shape[1:])}; "
            "pick the dataset it was trained on with --data"
        )
    model.eval()
    with torch.no_grad():
        nodes = enc.nodes(images[:IMAGES])
        weights = enc.task_weights(nodes).mean(0)
    attention = [a.mean(0) for a in enc.last_attention]
    n = nodes.shape[1]
    collapsed = {"task_weights": _uniform(weights, n)}
    collapsed.update({f"attention_{m + 1}": _uniform(a, n) for m, a in enumerate(attention)})
    return {
        "tasks": list(model.tasks),
        "task_weights": weights.tolist(),
        "attention": [a.tolist() for a in attention],
        "collapsed": collapsed,
    }


def _uniform(values: torch.Tensor, n: int) -> bool:
    return bool((values - 1.0 / n).abs().max() < COLLAPSE_TOLERANCE)


def format_gai_weights(info: dict[str, Any]) -> str:
    """The weights as aligned text tables, with a warning line per collapsed matrix."""
    n = len(info["task_weights"][0])
    head = "task".ljust(12) + "".join(f"block {i}".rjust(9) for i in range(n))
    lines = ["task-node weights (mean over images; each row sums to 1)", head]
    for task, row in zip(info["tasks"], info["task_weights"], strict=True):
        lines.append(task.ljust(12) + "".join(f"{w:9.3f}" for w in row))
    for m, att in enumerate(info["attention"]):
        lines += [
            "",
            f"graph attention, iteration {m + 1} (row: receiving block)",
            head.replace("task", "to", 1),
        ]
        lines += [
            f"block {i}".ljust(12) + "".join(f"{a:9.3f}" for a in row) for i, row in enumerate(att)
        ]
    if not info["attention"]:
        lines += ["", "no graph attention layers (GAI-w: graph_update=False)"]
    for name, flag in info["collapsed"].items():
        if flag:
            lines.append(
                f"warning: {name} collapsed: every value within {COLLAPSE_TOLERANCE} of 1/{n}"
            )
    return "\n".join(lines)


def plot_gai_weights(info: dict[str, Any], path: str | Path) -> Path:
    """Heatmaps: task-node weights, then one per graph-attention iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("task-node weights", info["task_weights"], info["tasks"])]
    n = len(info["task_weights"][0])
    panels += [
        (f"attention {m + 1}", a, [f"block {i}" for i in range(n)])
        for m, a in enumerate(info["attention"])
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3), squeeze=False)
    for ax, (title, values, rows) in zip(axes[0], panels, strict=True):
        im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(
            title + (" (collapsed)" if _uniform(torch.tensor(values), n) else ""), fontsize=9
        )
        ax.set_xticks(range(n), [f"b{i}" for i in range(n)])
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
