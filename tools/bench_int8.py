"""Benchmark: INT8 calibration accuracy and ONNX Runtime CPU latency, fp32 vs INT8.

For every checkpoint given (one per model family), its **receiver** (the part a device
runs behind the channel) is exported with the decoder as delta targets and calibrated
with each method (entropy, percentile, minmax), once with only the output heads in
float and once with per-layer sensitivity under ``--budget-db`` (and 1 accuracy point).
Every variant is scored on the test split at SNR 0/10/20 dB (AWGN on the checkpoint
transmitter's symbols, seeded): PSNR (dB) and accuracy (%).

Variants: each method with the output heads float (the default), and entropy with the
heads quantized too (``all-int8``); ``+sens`` adds per-layer sensitivity.

Latency: median batch-``--batch`` time of the fp32 receiver and of the INT8 graph
forms, interleaved in one run, as a ratio to fp32 (goal <= 0.7x); the transmitter
(Conv layers, images in) fp32 vs int8 in a second interleaved run:

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


def latency(
    paths: dict[str, Path],
    meta: dict[str, Any],
    batch: int,
    threads: int,
    repeats: int,
    input_name: str = "symbols",
) -> dict[str, dict[str, float]]:
    import onnxruntime as ort
    from bench_runtime import interleaved

    data = model_data(meta, input_name, (), None, batch, "test", (10.0,))
    feed = {input_name: data.inputs[:batch]}
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


def latencies(
    model: Any, ckpt: Path, name: str, args: argparse.Namespace, work: Path, extra: dict[str, Path]
) -> dict[str, dict[str, float]]:
    """Receiver graph forms vs fp32, then transmitter int8 vs fp32 (two interleaved runs)."""
    src = str(ckpt)
    fp32 = export_onnx(
        model, work / f"{name}.t.onnx", "receiver", delta_targets="decoder", source=src
    )
    plain = export_onnx(model, work / f"{name}.plain.onnx", "receiver", source=src)
    meta = read_metadata(fp32)
    quick = Settings(samples=args.samples)
    const = calibrate(plain, work / f"{name}.const.onnx", quick, show=False).path
    targets = [v.name for v in onnx.load(str(fp32)).graph.input if v.name != "symbols"]
    forms = {
        "fp32": plain,
        "int8": const,
        "int8+float-targets": calibrate(fp32, work / f"{name}.ft.onnx", quick, show=False).path,
        "int8+int8-targets": int8_weight_inputs(const, work / f"{name}.i8in.onnx", targets),
        **extra,
    }
    timed = latency(forms, meta, args.batch, args.threads, args.repeats)
    tx = export_onnx(model, work / f"{name}.tx.onnx", "transmitter", source=src)
    tx8 = calibrate(tx, work / f"{name}.tx8.onnx", quick, show=False).path
    tx_meta = {**read_metadata(tx), "part": "chain"}  # images in: no checkpoint needed
    both = {"fp32": tx, "int8": tx8}
    timed["transmitter int8"] = latency(
        both, tx_meta, args.batch, args.threads, args.repeats, "image"
    )["int8"]
    return timed


def probe(hidden: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Latency only, for an untrained DeepJSCC of width ``hidden`` on 32x32 RGB."""
    from sdk.checkpoint import save_checkpoint
    from sdk.models import build_model

    model = build_model("DeepJSCC", image_size=32, hidden=hidden, num_classes=10).eval()
    ckpt = save_checkpoint(model, work / f"probe{hidden}")
    params = sum(p.numel() for p in model.receiver.parameters())
    label = f"DeepJSCC hidden={hidden} (untrained, {params / 1e3:.0f} k)"
    return {"family": label, "latency": latencies(model, ckpt, f"p{hidden}", args, work, {})}


def bench(ckpt: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name = read_config(ckpt)["model"]
    model = load_checkpoint(ckpt)
    fp32 = export_onnx(
        model, work / f"{name}.onnx", "receiver", delta_targets="decoder", source=str(ckpt)
    )
    plain = export_onnx(model, work / f"{name}.plain.onnx", "receiver", source=str(ckpt))
    meta = read_metadata(fp32)
    from sdk.data import DATASET_FOR_SHAPE

    dataset = DATASET_FOR_SHAPE.get(tuple(model.input_shape), "?")
    params = sum(p.numel() for p in model.receiver.parameters())
    row: dict[str, Any] = {"family": f"{name} ({dataset}, {params / 1e3:.0f} k)"}
    row["fp32"] = scores(fp32, meta, args.count)
    variants: dict[str, Any] = {}
    forms_extra: dict[str, Path] = {}
    runs = [(m, True, b) for m in METHODS for b in (None, args.budget_db)]
    runs += [("entropy", False, b) for b in (None, args.budget_db)]  # heads quantized too
    for method, heads, budget in runs:
        tag = f"{method}{'' if heads else ' all-int8'}{'+sens' if budget is not None else ''}"
        out = work / f"{name}.{tag}.onnx"
        settings = Settings(method, samples=args.samples, keep_heads=heads, budget_db=budget)
        result = calibrate(fp32, out, settings, show=False)
        variants[tag] = {
            "scores": scores(out, meta, args.count),
            "float_layers": len(result.excluded),
        }
    if args.modelopt and ckpt == Path(args.checkpoints[0]):
        mo = modelopt_variant(args.modelopt, plain, meta, args.samples, work / f"{name}.mo.onnx")
        variants["modelopt-entropy"] = {"scores": scores(mo, meta, args.count), "float_layers": 0}
        forms_extra["modelopt"] = mo
    row["int8"] = variants
    row["latency"] = latencies(model, ckpt, name, args, work, forms_extra)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | variant | float layers | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |",
        "|---|---|---|" + "---|" * len(SNRS),
    ]
    scored = [r for r in rows if "fp32" in r]
    for r in scored:

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
    forms = list(dict.fromkeys(k for r in rows for k in r["latency"]))
    lines += ["", "| receiver of | " + " | ".join(forms) + " |", "|---|" + "---|" * len(forms)]
    for r in rows:
        times = r["latency"]
        cells = [
            f"{times[f]['ms']:.2f} ms ({times[f]['ratio']:.2f}x)" if f in times else "–"
            for f in forms
        ]
        lines.append(f"| {r['family']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, budget_db: float) -> None:
    """INT8 minus fp32 PSNR per SNR, one panel per family, the budget shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "fp32" in r]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        ax.axhspan(-budget_db, 0, color="tab:green", alpha=0.08, label=f"budget {budget_db:g} dB")
        ax.axhline(0, color="k", lw=1)
        for tag, v in r["int8"].items():
            drop = [v["scores"][s]["psnr"] - r["fp32"][s]["psnr"] for s in SNRS]
            ax.plot(SNRS, drop, "--" if "+sens" in tag else ":", marker="o", ms=3, label=tag)
        ax.set_ylim(-budget_db * 1.2, budget_db * 0.4)
        ax.set_title(r["family"], fontsize=9)
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("INT8 - fp32 PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="one checkpoint per family")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples (256)")
    parser.add_argument("--count", type=int, default=180, help="test samples per SNR (180)")
    parser.add_argument("--budget-db", type=float, default=0.5, help="sensitivity budget (0.5)")
    parser.add_argument("--batch", type=int, default=32, help="latency batch (32)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (1)")
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (40)")
    parser.add_argument("--plot", type=Path, help="PSNR-vs-SNR figure to write")
    parser.add_argument("--json", type=Path, help="raw results to write")
    parser.add_argument(
        "--probe-hidden", type=int, nargs="*", default=[], help="latency-only DeepJSCC widths"
    )
    parser.add_argument(
        "--modelopt", metavar="PYTHON", help="python with nvidia-modelopt[onnx]: compare it too"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(Path(c), args, Path(tmp)) for c in args.checkpoints]
        rows += [probe(h, args, Path(tmp)) for h in args.probe_hidden]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot, args.budget_db)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
