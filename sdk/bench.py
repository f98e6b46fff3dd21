"""``semedge bench``: latency percentiles, throughput and peak memory of an artifact.

Shaped after ``trtexec``: for each batch size, random inputs of the artifact's I/O
shapes, a timed warm-up (not measured), then back-to-back ``Runtime.infer`` calls for a
set duration (at least ``min_iterations``); each call is timed end to end (host→device
copies, execution, device→host copies on TensorRT; the ONNX Runtime session run on the
CPU), so the numbers are what an application sees. Reported per batch: p50/p90/p99,
mean, min and max latency (ms) and throughput (samples/s and inferences/s); per run:
peak host memory (the process's resident-set high-water mark, reset before loading
where Linux allows) and, on TensorRT, the device memory taken by loading and running
(``cuMemGetInfo`` before vs after). The backend is the artifact's (ONNX Runtime on a
CPU machine, TensorRT on the Jetson it was built for).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import SemedgeError
from sdk.files import save_figure

DEFAULT_BATCHES = (1, 4, 16)


class BenchError(SemedgeError):
    """Bad benchmark settings (batch sizes, durations)."""


def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]``; anything else is a one-line :class:`BenchError`."""
    try:
        batches = [int(part) for part in text.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise BenchError(
            f"--batch {text!r}: give batch sizes >= 1 separated by commas, e.g. 1,8,32"
        )
    return sorted(set(batches))


def check_batches(manifest: dict[str, Any] | None, batches: Iterable[int]) -> None:
    """Refuse batch sizes over a TensorRT plan's profile maximum, before loading anything."""
    limit = ((manifest or {}).get("target") or {}).get("max_batch")
    over = [b for b in batches if limit and b > limit]
    if over:
        raise BenchError(
            f"batch {over[0]} exceeds the plan's maximum {limit}; bench smaller batches or "
            "rebuild with --max-batch"
        )


def _peak_rss_mb() -> float:
    """The resident-set high-water mark (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _device_used_mb() -> float | None:
    """Device memory in use on GPU 0 (pycuda), or None without it."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        free, total = cuda.mem_get_info()
    finally:
        context.pop()
        context.detach()
    return (total - free) / 2**20


def random_feed(specs: list[dict[str, Any]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs (zeros for integer inputs) with the batch dimension set."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = (batch, *(max(int(d), 1) for d in spec["shape"][1:]))
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec["name"]] = np.zeros(shape, dtype)
    return feed


def time_calls(
    call: Callable[[], Any], warmup_s: float, duration_s: float, min_iterations: int
) -> np.ndarray:
    """Latencies (ms) of back-to-back ``call()``s after ``warmup_s`` seconds of warm-up."""
    end = time.perf_counter() + warmup_s
    call()
    while time.perf_counter() < end:
        call()
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while len(times) < min_iterations or time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def summarize(batch: int, latencies_ms: np.ndarray) -> dict[str, Any]:
    """Percentiles and throughput of one batch size's latencies."""
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    total_s = float(latencies_ms.sum()) / 1e3
    return {
        "batch": batch,
        "iterations": len(latencies_ms),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(latencies_ms.mean()),
        "min_ms": float(latencies_ms.min()),
        "max_ms": float(latencies_ms.max()),
        "inferences_per_s": len(latencies_ms) / total_s,
        "samples_per_s": batch * len(latencies_ms) / total_s,
    }


def bench(
    source: str | Path,
    batches: Iterable[int] = DEFAULT_BATCHES,
    warmup_s: float = 0.2,
    duration_s: float = 1.0,
    min_iterations: int = 10,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark the artifact (or ``.onnx``) at ``source``; see the module docstring."""
    from tqdm import tqdm

    from sdk import artifact
    from sdk.runtime.runtime import Runtime

    batches = sorted(set(batches))
    if warmup_s < 0 or duration_s <= 0 or min_iterations < 1:
        raise BenchError("--warmup must be >= 0, --duration > 0 and --iterations >= 1")
    source = Path(source)
    manifest = artifact.read_manifest(source) if source.suffix != ".onnx" else None
    check_batches(manifest, batches)
    reset = _reset_peak_rss()
    device_before = _device_used_mb() if manifest and manifest["backend"] == "trt" else None
    rows = []
    with Runtime.load(source, threads=threads) as runtime:
        for batch in tqdm(batches, desc="semedge bench", unit="batch", disable=not progress):
            call = partial(runtime.infer, random_feed(runtime.inputs, batch))
            latencies = time_calls(call, warmup_s, duration_s, min_iterations)
            rows.append(summarize(batch, latencies))
        device_after = _device_used_mb() if device_before is not None else None
        info = runtime.info()
    return {
        "source": str(source),
        "backend": info["backend"],
        "precision": info.get("precision", "fp32"),
        "artifact": info.get("artifact"),
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "results": rows,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_reset_before_load": reset,
        "device_memory_mb": (
            device_after - device_before
            if device_after is not None and device_before is not None
            else None
        ),
    }


def table(report: dict[str, Any]) -> str:
    """The report as aligned text lines (what ``semedge bench`` prints without --json)."""
    what = report["artifact"] or f"{report['source']} on {report['backend']}"
    lines = [
        f"{what} (warm-up {report['warmup_s']} s, {report['duration_s']} s per batch)",
        f"{'batch':>5} {'iters':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'samples/s':>11} {'infer/s':>9}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['batch']:>5} {r['iterations']:>6} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} "
            f"{r['p99_ms']:>9.3f} {r['samples_per_s']:>11.1f} {r['inferences_per_s']:>9.1f}"
        )
    memory = f"peak host memory {report['peak_rss_mb']:.0f} MB"
    if report["device_memory_mb"] is not None:
        memory += f", device memory {report['device_memory_mb']:.0f} MB"
    return "\n".join([*lines, memory])


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Latency percentiles and throughput vs batch size, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = report["results"]
    batches = [r["batch"] for r in rows]
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^:")):
        latency.plot(batches, [r[key] for r in rows], style, label=key.split("_")[0])
    latency.set_ylabel("latency per call (ms)")
    latency.set_yscale("log")
    latency.legend(fontsize=8)
    throughput.plot(batches, [r["samples_per_s"] for r in rows], "o-")
    throughput.set_ylabel("throughput (samples/s)")
    throughput.set_ylim(0, 1.1 * max(r["samples_per_s"] for r in rows))
    for ax in (latency, throughput):
        ax.set_xlabel("batch size")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.grid(alpha=0.3)
    fig.suptitle(report["artifact"] or report["source"], fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
