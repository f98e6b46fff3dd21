"""Run the same inputs through several backends and measure how far their outputs differ.

Like ``polygraphy run --onnxrt --trt``: the first backend is the reference; for every
other backend and every output the maximum absolute and relative error are reported,
and a row passes when ``|out - ref| <= atol + rtol * |ref|`` holds element-wise
(numpy ``allclose``). Inputs: a random batch and a batch of real images from
:mod:`sdk.data` (for a receiver: random unit-power symbols, and the symbols the source
checkpoint's transmitter makes of real images).

Element-wise tolerances suit backends that compute the same float math. A quantized
artifact (int8, fp16) differs by design, so :func:`compare_tasks` also runs held-out
real data (the val split; a receiver gets the checkpoint transmitter's symbols through
AWGN at 0/10/20 dB) through each backend and reports the task-metric drop against the
reference: PSNR in dB, accuracy and IoU in percentage points. A quantized artifact is
held to those drops (default 0.5 dB / 1 point, the calibration budget); its element-wise
rows are shown for information and not judged (:func:`judged_by_tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk import artifact
from sdk.runtime.base import RunnerError
from sdk.runtime.runtime import Runtime, _is_checkpoint


@dataclass
class Row:
    """One backend/output/input-kind comparison against the reference backend."""

    backend: str
    inputs: str
    output: str
    max_abs: float
    max_rel: float
    passed: bool


def _reference_checkpoint(source: Path) -> tuple[Path | None, str]:
    """(checkpoint ``source`` was built from, if it still exists; the part it holds)."""
    if _is_checkpoint(source):
        return source, "chain"
    if source.suffix == ".onnx":
        from sdk.onnx_io import read_metadata

        meta = read_metadata(source)
        origin, part = meta.get("source"), meta.get("part", "chain")
    else:
        model = artifact.read_manifest(source)["model"]
        origin, part = model.get("source"), model["part"]
    candidate = Path(origin) if origin else None
    return (candidate if candidate and _is_checkpoint(candidate) else None), part


def _runtimes(
    source: Path, backends: list[str], checkpoint: Path | None, part: str
) -> dict[str, Runtime]:
    """Load ``source`` on each backend; the torch reference runs the source checkpoint."""
    loaded = {}
    for backend in backends:
        if backend == "torch" and checkpoint is None:
            raise RunnerError(
                f"the torch reference needs the checkpoint {source} was built from; "
                "pass the checkpoint directory instead"
            )
        target = checkpoint if backend == "torch" or checkpoint == source else source
        assert target is not None
        loaded[backend] = Runtime.load(target, backend=backend, part=part)
    return loaded


def _feeds(
    reference: Runtime, checkpoint: Path | None, batch: int, data: str | None, seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Random inputs, and real ones: images, or for a receiver the symbols made of them."""
    from sdk.data import sample_images

    (spec,) = reference.inputs
    shape = (batch, *spec["shape"][1:])
    rng = np.random.default_rng(seed)
    feeds = {}
    if spec["name"] == "image":
        feeds["random"] = rng.random(shape, dtype=np.float32)
        feeds["real"] = sample_images(tuple(shape[1:]), data, batch)
    else:
        z = rng.standard_normal(shape).astype(np.float32)
        feeds["random"] = z / np.sqrt((z**2).sum(1, keepdims=True) / (shape[1] // 2))
        if checkpoint is not None:
            with Runtime.load(checkpoint, part="transmitter") as tx:
                (image,) = tx.inputs
                images = sample_images(tuple(image["shape"][1:]), data, batch)
                feeds["real"] = tx.infer(images)["symbols"]
    return {kind: {spec["name"]: x} for kind, x in feeds.items()}


def compare_backends(
    source: str | Path,
    backends: list[str],
    atol: float = 1e-5,
    rtol: float = 1e-5,
    batch: int = 4,
    data: str | None = None,
    seed: int = 0,
) -> list[Row]:
    """Rows for every non-reference backend x input kind x output (see module docstring)."""
    if len(backends) < 2:
        raise RunnerError("give at least two backends to compare, e.g. torch,onnxrt")
    checkpoint, part = _reference_checkpoint(Path(source))
    runtimes = _runtimes(Path(source), backends, checkpoint, part)
    try:
        ref_name, *others = backends
        ref = runtimes[ref_name]
        rows = []
        for kind, feed in _feeds(ref, checkpoint, batch, data, seed).items():
            expected = ref.infer(feed)
            for name in others:
                got = runtimes[name].infer(feed)
                for out, want in expected.items():
                    diff = np.abs(got[out].astype(np.float64) - want)
                    rel = diff / np.maximum(np.abs(want), 1e-12)
                    ok = bool(np.all(diff <= atol + rtol * np.abs(want)))
                    rows.append(Row(name, kind, out, float(diff.max()), float(rel.max()), ok))
        return rows
    finally:
        for rt in runtimes.values():
            rt.close()


@dataclass
class TaskRow:
    """One backend's task metric on held-out data against the reference backend."""

    backend: str
    metric: str
    reference: float
    value: float
    budget: float
    passed: bool

    @property
    def drop(self) -> float:
        return self.reference - self.value


def judged_by_tasks(source: str | Path) -> str | None:
    """The precision of a quantized artifact (held to task drops), else None."""
    source = Path(source)
    if _is_checkpoint(source) or source.suffix == ".onnx":
        return None
    precision = artifact.read_manifest(source)["precision"]
    return None if precision == "fp32" else str(precision)


def compare_tasks(
    source: str | Path,
    backends: list[str],
    budget_db: float = 0.5,
    budget_points: float = 1.0,
    count: int = 256,
    data: str | None = None,
) -> list[TaskRow]:
    """Task-metric drop of every non-reference backend on held-out data (module docstring).

    Empty when the checkpoint ``source`` was built from is gone (no ground truth path).
    """
    from calibration.inputs import model_data, task_metrics
    from sdk.checkpoint import load_checkpoint

    checkpoint, part = _reference_checkpoint(Path(source))
    if checkpoint is None:
        return []
    model: Any = load_checkpoint(checkpoint)
    meta = {
        "part": part,
        "source": str(checkpoint),
        "input_shape": list(model.input_shape),
        "tasks": list(model.tasks),
    }
    runtimes = _runtimes(Path(source), backends, checkpoint, part)
    try:
        (spec,) = runtimes[backends[0]].inputs
        held = model_data(meta, spec["name"], tuple(spec["shape"][1:]), data, count, "val")
        scores = {}
        for name, rt in runtimes.items():
            chunks = [rt.infer(held.inputs[i : i + 32]) for i in range(0, len(held.inputs), 32)]
            outs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
            scores[name] = task_metrics(held, outs)
    finally:
        for rt in runtimes.values():
            rt.close()
    ref, *others = backends
    rows = []
    for name in others:
        for metric, want in scores[ref].items():
            budget = budget_db if metric == "psnr" else budget_points
            got = scores[name][metric]
            rows.append(TaskRow(name, metric, want, got, budget, want - got <= budget))
    return rows


def format_task_rows(rows: list[TaskRow], reference: str) -> str:
    """A fixed-width table of task metrics and their drops."""
    units = {"psnr": "dB", "accuracy": "pt", "iou": "pt"}
    lines = [f"{'backend':10s} {'metric':9s} {reference:>9s} {'value':>9s} {'drop':>8s}  budget"]
    for r in rows:
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(
            f"{r.backend:10s} {r.metric:9s} {r.reference:9.2f} {r.value:9.2f} {r.drop:+8.2f}  "
            f"{r.budget:g} {units.get(r.metric, '')}  {verdict}"
        )
    return "\n".join(lines)


def format_rows(rows: list[Row], reference: str) -> str:
    """A fixed-width pass/fail table."""
    lines = [f"{'backend':10s} {'inputs':7s} {'output':12s} {'max abs':>10s} {'max rel':>10s}  "]
    lines[0] += f"vs {reference}"
    for r in rows:
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(
            f"{r.backend:10s} {r.inputs:7s} {r.output:12s} {r.max_abs:10.3e} {r.max_rel:10.3e}  "
            f"{verdict}"
        )
    return "\n".join(lines)
