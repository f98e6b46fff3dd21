"""Benchmark: INT8 calibration accuracy and ONNX Runtime CPU latency, fp32 vs INT8.

For every checkpoint given (one per model family), its **receiver** (the part a device
runs behind the channel) is exported with the decoder as delta targets and calibrated
with each method (entropy, percentile, minmax), once with only the output heads in
float and once with per-layer sensitivity under ``--budget-db`` (and 1 accuracy point).
Every variant is scored on the test split at SNR 0/10/20 dB (AWGN on the checkpoint
transmitter's symbols, seeded): PSNR (dB) and accuracy (%).

Latency: median batch-``--batch`` time of the fp32 receiver and of the INT8 graph
forms, interleaved in one run, as a ratio to fp32 (goal <= 0.7x):

* ``int8`` — everything constant (no delta targets; what a plain ``--precision int8``
  build gives);
* ``int8+float-targets`` — semedge's form for delta targets: float weights as graph
  inputs feeding QuantizeLinear (quantized on every run);
* ``int8+int8-targets`` — the alternative: int8 weights as graph inputs feeding
  DequantizeLinear (a runtime would re-quantise touched channels itself).

With ``--modelopt PYTHON`` (an interpreter whose environment has
``nvidia-modelopt[onnx]``; it pins its own onnx/onnxruntime-gpu, so it lives in a
separate venv), the first checkpoint is also quantized by NVIDIA Model Optimizer's
ONNX PTQ (int8, entropy) and scored/timed by this environment's ONNX Runtime.

Usage::

    python tools/bench_int8.py CKPT [CKPT ...] [--threads 1] [--repeats 40]
        [--plot docs/img/calibration.png] [--json out.json] [--modelopt VENV/bin/python]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.calibrate import Settings, calibrate
from calibration.inputs import model_data, task_metrics
from calibration.methods import METHODS
from calibration.sensitivity import run_model
from sdk.checkpoint import load_checkpoint, read_config
from sdk.export import export_onnx
from sdk.onnx_io import read_metadata

SNRS = (0.0, 10.0, 20.0)


def scores(path: Path, meta: dict[str, Any], count: int) -> dict[float, dict[str, float]]:
    """Task metrics of the ONNX model at ``path`` per SNR on the test split."""
    out = {}
    for snr in SNRS:
        data = model_data(meta, "symbols", (), None, count, "test", (snr,))
        out[snr] = task_metrics(data, run_model(path, data))
    return out


def int8_weight_inputs(path: Path, out: Path, targets: list[str]) -> Path:
    """The alternative graph form: each target's int8 initializer exposed as a graph input."""
    model = onnx.load(str(path))
    names = {t + "_quantized" for t in targets}
    inits = {i.name: i for i in model.graph.initializer if i.name in names}
    for name, init in inits.items():
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims))
        )
    onnx.save(model, str(out))
    return out


def latency(paths: dict[str, Path], meta: dict[str, Any], batch: int, threads: int, repeats: int):
    import onnxruntime as ort
    from bench_runtime import interleaved

    data = model_data(meta, "symbols", (), None, batch, "test", (10.0,))
    feed = {"symbols": data.inputs[:batch]}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sessions = {
        k: ort.InferenceSession(str(p), so, ["CPUExecutionProvider"]) for k, p in paths.items()
    }
    fns = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
    times = interleaved(fns, repeats)
    return {k: {"ms": t, "ratio": t / times["fp32"]} for k, t in times.items()}


MODELOPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
quantize(onnx_path=sys.argv[1], quantize_mode="int8", calibration_data=np.load(sys.argv[2]),
         calibration_method="entropy", calibration_eps=["cpu"], output_path=sys.argv[3])
"""


def modelopt_variant(
    python: str, fp32: Path, meta: dict[str, Any], samples: int, out: Path
) -> Path:
    """Quantize with NVIDIA Model Optimizer's ONNX PTQ, run by ``python`` in its own
    environment (its ``[onnx]`` extra pins onnx 1.21 and onnxruntime-gpu 1.24)."""
    import subprocess

    data = model_data(meta, "symbols", (), None, samples, "train")
    np.save(out.with_suffix(".npy"), data.inputs)
    subprocess.run(
        [python, "-c", MODELOPT, str(fp32), str(out.with_suffix(".npy")), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def bench(ckpt: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name = read_config(ckpt)["model"]
    model = load_checkpoint(ckpt)
    fp32 = export_onnx(
        model, work / f"{name}.onnx", "receiver", delta_targets="decoder", source=str(ckpt)
    )
    plain = export_onnx(model, work / f"{name}.plain.onnx", "receiver", source=str(ckpt))
    meta = read_metadata(fp32)
    row: dict[str, Any] = {
        "family": name,
        "params": sum(p.numel() for p in model.receiver.parameters()),
    }
    row["fp32"] = scores(fp32, meta, args.count)
    variants: dict[str, Any] = {}
    forms_extra: dict[str, Path] = {}
    for method in METHODS:
        for budget in (None, args.budget_db):
            tag = f"{method}{'+sens' if budget is not None else ''}"
            out = work / f"{name}.{tag}.onnx"
            result = calibrate(
                fp32,
                out,
                Settings(method=method, samples=args.samples, budget_db=budget),
                show=False,
            )
            variants[tag] = {
                "scores": scores(out, meta, args.count),
                "float_layers": len(result.excluded),
            }
    if args.modelopt and ckpt == Path(args.checkpoints[0]):
        mo = modelopt_variant(plain, meta, args.samples, work / f"{name}.modelopt.onnx")
        if mo is not None:
            variants["modelopt-entropy"] = {
                "scores": scores(mo, meta, args.count),
                "float_layers": 0,
            }
    row["int8"] = variants
    targets = [v.name for v in onnx.load(str(fp32)).graph.input if v.name != "symbols"]
    const = calibrate(
        plain, work / f"{name}.const.onnx", Settings(samples=args.samples), show=False
    ).path
    forms = {
        "fp32": plain,
        "int8": const,
        "int8+float-targets": work / f"{name}.entropy.onnx",
        "int8+int8-targets": int8_weight_inputs(const, work / f"{name}.i8in.onnx", targets),
    }
    forms.update(forms_extra)
    row["latency"] = latency(forms, meta, args.batch, args.threads, args.repeats)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | variant | float layers | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |",
        "|---|---|---|" + "---|" * len(SNRS),
    ]
    for r in rows:

        def cell(
            sc: dict[float, dict[str, float]], base: dict[float, dict[str, float]] | None
        ) -> list[str]:
            out = []
            for snr in SNRS:
                parts = []
                for metric in ("psnr", "accuracy"):
                    if metric in sc[snr]:
                        v = sc[snr][metric]
                        d = f" ({v - base[snr][metric]:+.2f})" if base else ""
                        parts.append(f"{v:.2f}{d}")
                out.append(" / ".join(parts))
            return out

        lines.append(f"| {r['family']} | fp32 | all | " + " | ".join(cell(r["fp32"], None)) + " |")
        for tag, v in r["int8"].items():
            lines.append(
                f"| | int8 {tag} | {v['float_layers']} | "
                + " | ".join(cell(v["scores"], r["fp32"]))
                + " |"
            )
    lines += [
        "",
        "| family | " + " | ".join(rows[0]["latency"]) + " |",
        "|---|" + "---|" * len(rows[0]["latency"]),
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | "
            + " | ".join(f"{v['ms']:.2f} ms ({v['ratio']:.2f}x)" for v in r["latency"].values())
            + " |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        ax.plot(SNRS, [r["fp32"][s]["psnr"] for s in SNRS], "k-o", lw=2, label="fp32")
        for tag, v in r["int8"].items():
            style = "--" if "+sens" in tag else ":"
            ax.plot(SNRS, [v["scores"][s]["psnr"] for s in SNRS], style, marker=".", label=tag)
        ax.set_title(f"{r['family']} receiver")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="one checkpoint per family")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples (256)")
    parser.add_argument("--count", type=int, default=180, help="test samples per SNR (180)")
    parser.add_argument("--budget-db", type=float, default=0.5, help="sensitivity budget (0.5)")
    parser.add_argument("--batch", type=int, default=32, help="latency batch (32)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (1)")
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (40)")
    parser.add_argument("--plot", type=Path, help="PSNR-vs-SNR figure to write")
    parser.add_argument("--json", type=Path, help="raw results to write")
    parser.add_argument(
        "--modelopt", metavar="PYTHON", help="python with nvidia-modelopt[onnx]: compare it too"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(Path(c), args, Path(tmp)) for c in args.checkpoints]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
