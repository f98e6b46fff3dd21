"""Per-layer sensitivity: which layers to keep in float so the task-metric drop fits a budget.

1. Quantize one layer at a time (ranges from the cache, so each try is a graph
   rewrite) and measure the drop of every task metric against fp32 on held-out data.
2. Quantize everything not excluded; while the drop exceeds the budget, move the
   layer with the largest single-layer drop (not yet excluded) to float and measure
   again.

A drop is compared with its own budget: ``budget_db`` for PSNR (dB), ``budget_points``
for accuracy and IoU (percentage points); a layer's score is its worst drop/budget
ratio. If even an all-float graph misses the budget (it cannot: nothing is quantized),
the loop ends when no layer is left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibration.inputs import ModelData, task_metrics
from sdk.files import save_figure

Quantizer = Callable[[Path, Sequence[str], Sequence[str]], Path]
"""``quantizer(out, exclude, only)`` writes a Q/DQ model with the cached ranges."""


@dataclass
class Budget:
    """Allowed drop per metric family."""

    db: float = 0.5
    points: float = 1.0

    def ratio(self, drops: dict[str, float]) -> float:
        """Worst drop relative to its budget (<= 1 means within budget)."""
        ratios = [d / (self.db if k == "psnr" else self.points) for k, d in drops.items()]
        return max(ratios, default=0.0)


@dataclass
class Sensitivity:
    """Per-layer drops, what was excluded, and the final drop."""

    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    fp32: dict[str, float] = field(default_factory=dict)
    int8: dict[str, float] = field(default_factory=dict)

    @property
    def drops(self) -> dict[str, float]:
        return {k: self.fp32[k] - self.int8[k] for k in self.fp32}


def run_model(path: Path | bytes, data: ModelData, batch: int = 64) -> dict[str, np.ndarray]:
    """All outputs of an ONNX model over ``data.inputs`` (CPU, batched)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), so, ["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(data.inputs), batch):
        outs = sess.run(names, {data.name: data.inputs[i : i + batch]})
        for n, o in zip(names, outs, strict=True):
            chunks[n].append(o)
    return {n: np.concatenate(c) for n, c in chunks.items()}


def metrics_of(path: Path, data: ModelData) -> dict[str, float]:
    return task_metrics(data, run_model(path, data))


def sensitivity(
    fp32: Path,
    quantizer: Quantizer,
    layers: Sequence[str],
    forced: Sequence[str],
    data: ModelData,
    budget: Budget,
    work: Path,
    show: bool = True,
) -> Sensitivity:
    """Greedy exclusion until ``budget`` holds (module docstring); ``forced`` stay float."""
    result = Sensitivity(fp32=metrics_of(fp32, data))

    def drops(path: Path) -> dict[str, float]:
        got = metrics_of(path, data)
        return {k: result.fp32[k] - got[k] for k in result.fp32}

    candidates = [n for n in layers if n not in forced]
    for name in tqdm(candidates, desc="sensitivity", unit="layer", disable=not show):
        result.layers[name] = drops(quantizer(work / "one.onnx", forced, [name]))
    ranked = sorted(candidates, key=lambda n: budget.ratio(result.layers[n]), reverse=True)
    excluded = list(forced)
    current = metrics_of(quantizer(work / "all.onnx", excluded, []), data)
    while budget.ratio({k: result.fp32[k] - current[k] for k in current}) > 1 and ranked:
        excluded.append(ranked.pop(0))
        current = metrics_of(quantizer(work / "all.onnx", excluded, []), data)
    result.excluded = excluded
    result.int8 = current
    return result


def plot_layers(found: Sensitivity, budget: Budget, path: str | Path) -> Path:
    """Bar chart: each layer's drop when quantized alone, relative to its budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(found.layers)
    ratios = [budget.ratio(found.layers[n]) for n in names]
    fig, ax = plt.subplots(figsize=(7.2, 0.35 * len(names) + 1.2))
    colours = ["tab:red" if n in found.excluded else "tab:blue" for n in names]
    ax.barh(range(len(names)), ratios, color=colours)
    ax.set_yticks(range(len(names)), [n.strip("/").replace("/", " ") for n in names], fontsize=7)
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_xlabel("drop quantized alone / budget (red: float)")
    ax.invert_yaxis()
    fig.tight_layout()
    return save_figure(fig, path)
