"""ZFDA factor study: which settings let sparse deltas recover full fine-tuning's gain?

Run as ``python tools/repro_zfda.py --study`` (this module holds the study; the base model,
shifted data, fine-tuning baseline and evaluation are the reproduction's own pieces).

Parts (``--parts``, default all three, in this order):

* ``screen`` — one factor at a time from today's repro defaults (γ = 1 %, decoder, grad
  scores, Adam 1e-3, 6 epochs, d_in + d_out budget, straight-through mask) on two domains
  and a small data budget; the gain of each cell is divided by the gain of full
  fine-tuning of the same side with the same data (6 epochs, lr 1e-3).
* ``full`` — the best level of every tunable factor combined (side stays the decoder: who
  adapts is a deployment choice, not a tuning knob), on all four domains, next to today's
  defaults, and the γ curve 0.01 % … 10 % of that combination.
* ``width`` — today's defaults on bases of width 32 / 64 / 128 trained on a smaller
  budget (the same for all widths, at each of ``--width-base-lrs``), two domains.

Every cell is cached as JSON under ``<workdir>/study/cells``, so a re-run resumes; progress
goes to ``<workdir>/study/study.log``. Each ZFDA delta is switched on and off on the live
base; the misalignment loss with it off is asserted to be exactly 0. ``--sized`` re-runs
cached cells that lack a delta file size (cells of the first run, whose parallel processes
shared one temporary delta file) and asserts the re-run reproduces the cached PSNR, so the
size is that delta's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from repro_zfda import (
    build_base,
    finetune,
    psnr_at,
    reference_outputs,
    shifted_patches,
    write_report,
)

from sdk.adapt.zfda import ZFDAConfig, adapt_zfda
from sdk.data import ImageDataset, load_dataset
from sdk.data.shifts import DOMAINS
from sdk.delta import TorchDeltas, save_delta
from sdk.fingerprint import model_fingerprint

# Today's repro settings (before the study), pinned so the cells stay comparable.
DEFAULTS = dict(lr_values=1e-3, epochs=6, batch_size=32, score_init="grad", progress=False)
FACTORS: dict[str, list[dict[str, Any]]] = {
    "score init": [{"score_init": s} for s in ("grad", "random", "weight")],
    "values lr / optimiser": [
        {"lr_values": 1e-3},
        {"lr_values": 1e-4, "epochs": 30},
        {"lr_values": 3e-3},
        {"lr_values": 1e-2},
        {"values_optimizer": "sgd", "lr_values": 0.3},
    ],
    "epochs": [{"epochs": e} for e in (3, 6, 12)],
    "budget rule": [{"budget_rule": r} for r in ("din+dout", "uniform", "size")],
    "mask update": [
        {"mask_update": "ste"},
        {"mask_update": "periodic", "mask_period": 16},
        {"mask_update": "fixed"},
    ],
    "side": [{"side": s} for s in ("decoder", "encoder", "both")],
}
NOT_TUNED = ("side",)
GAMMAS = (0.0001, 0.001, 0.01, 0.03, 0.1)
WIDTHS = (32, 64, 128)


@dataclass
class Base:
    """A trained base with its live delta adapter and the facts every cell compares to."""

    name: str
    model: torch.nn.Module
    adapter: TorchDeltas
    fingerprint: str
    clean_psnr: float
    reference: torch.Tensor
    base_psnr: dict[str, float] = field(default_factory=dict)


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir)
        self.cells = self.work / "study" / "cells"
        self.cells.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work / "study" / "study.log"
        self.train_all = load_dataset("patches", "train")
        self.test = load_dataset("patches", "test")
        self.bases: dict[tuple, Base] = {}

    def log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, flush=True)
        with self.log_path.open("a") as f:
            f.write(line + "\n")

    def base(self, hidden: int, train_size: int, epochs: int, lr: float = 1e-3) -> Base:
        key = (hidden, train_size, epochs, lr)
        if key not in self.bases:
            name = f"base-h{hidden}-n{train_size}-e{epochs}" + ("" if lr == 1e-3 else f"-lr{lr:g}")
            self.log(f"base {name}")
            model = build_base(self.train_all, hidden, train_size, epochs, self.work / name, lr)
            snr = self.args.snr
            self.bases[key] = Base(
                name,
                model,
                TorchDeltas(model),
                model_fingerprint(model),
                psnr_at(model, self.test, snr, None),
                reference_outputs(model, self.test.images, snr),
            )
        return self.bases[key]

    def data(self, size: int, domain: str) -> ImageDataset:
        start = self.args.train_size  # after the main base's patches: never seen by a base
        return shifted_patches(self.train_all, range(start, start + size), domain)

    def cell_path(self, spec: dict[str, Any]) -> Path:
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.cells / f"{key}.json"

    def cached(self, spec: dict[str, Any], compute) -> dict[str, Any]:
        path = self.cell_path(spec)
        if path.exists():
            return json.loads(path.read_text())
        result = {**spec, **compute()}
        path.write_text(json.dumps(result, indent=1))
        return result

    def base_psnr(self, base: Base, domain: str) -> float:
        if domain not in base.base_psnr:
            base.base_psnr[domain] = psnr_at(base.model, self.test, self.args.snr, domain)
        return base.base_psnr[domain]

    def finetune_cell(self, base: Base, domain: str, size: int, side: str) -> dict[str, Any]:
        spec = dict(kind="finetune", base=base.name, domain=domain, size=size, side=side)

        def compute() -> dict[str, Any]:
            self.log(f"fine-tune {base.name} {domain} n={size} {side}")
            d = DEFAULTS
            data = self.data(size, domain)
            tuned, seconds = finetune(
                base.model, data, side, d["epochs"], d["batch_size"], d["lr_values"]
            )
            return dict(
                psnr=psnr_at(tuned, self.test, self.args.snr, domain),
                base_psnr=self.base_psnr(base, domain),
                seconds=seconds,
            )

        return self.cached(spec, compute)

    def zfda_cell(
        self, base: Base, domain: str, size: int, changes: dict[str, Any], sized: bool = False
    ) -> dict[str, Any]:
        """One ZFDA cell; ``sized``: give a cached cell without ``delta_bytes`` its bytes."""
        config = replace(ZFDAConfig(**DEFAULTS), **changes)
        settings = {k: v for k, v in asdict(config).items() if k not in ("progress",)}
        spec = dict(kind="zfda", base=base.name, domain=domain, size=size, config=settings)
        ft = self.finetune_cell(base, domain, size, config.side)

        def compute() -> dict[str, Any]:
            self.log(f"zfda {base.name} {domain} n={size} {changes}")
            t0 = time.time()
            delta = adapt_zfda(base.model, self.data(size, domain), domain, config)
            seconds = time.time() - t0
            path = save_delta(delta, self.work / "study" / f"cell-{os.getpid()}.delta.safetensors")
            name = base.adapter.load(delta, "cell")
            base.adapter.activate(name)
            psnr = psnr_at(base.model, self.test, self.args.snr, domain)
            base.adapter.deactivate()
            base.adapter.unload(name)
            off = psnr_at(base.model, self.test, self.args.snr, None)
            assert model_fingerprint(base.model) == base.fingerprint, "base not restored"
            assert off == base.clean_psnr, "misalignment with the delta off is not 0"
            gain = psnr - ft["base_psnr"]
            ft_gain = ft["psnr"] - ft["base_psnr"]  # 0 when a base collapsed to a constant
            return dict(
                psnr=psnr,
                gain=gain,
                share=gain / ft_gain if ft_gain else float("nan"),
                delta_bytes=path.stat().st_size,
                nnz=delta.nnz,
                seconds=seconds,
                misalignment=base.clean_psnr - off,
                finetune_psnr=ft["psnr"],
            )

        cell = self.cached(spec, compute)
        if sized and "delta_bytes" not in cell:
            cell = self.measure_bytes(spec, cell, compute())
        return cell

    def measure_bytes(
        self, spec: dict[str, Any], cell: dict[str, Any], again: dict[str, Any]
    ) -> dict[str, Any]:
        """Bytes of a cell cached before one temporary delta file per process (2026-11-30).

        Adaptation is deterministic, so running the cell again writes the same delta; the
        PSNR must match the cached one bit for bit, or the bytes would belong to another delta.
        """
        assert again["psnr"] == cell["psnr"], f"re-run differs: {again['psnr']} != {cell['psnr']}"
        cell = {k: v for k, v in cell.items() if k != "bytes"}  # the unreliable count
        cell["delta_bytes"] = again["delta_bytes"]
        self.cell_path(spec).write_text(json.dumps(cell, indent=1))
        return cell

    def check_alignment(self, base: Base) -> None:
        after = reference_outputs(base.model, self.test.images, self.args.snr)
        assert torch.equal(base.reference, after), "original pair outputs changed"

    # --- parts -----------------------------------------------------------------------

    def screen(self) -> dict[str, list[dict[str, Any]]]:
        a = self.args
        base = self.base(a.hidden, a.train_size, a.base_epochs)
        if a.reverse:  # a second process working from the other end fills the cache
            for changes in [c for levels in FACTORS.values() for c in levels][::-1]:
                for d in a.screen_domains:
                    self.zfda_cell(base, d, a.screen_size, changes, a.sized)
        table: dict[str, list[dict[str, Any]]] = {}
        for factor, levels in FACTORS.items():
            table[factor] = []
            for changes in levels:
                cells = [
                    self.zfda_cell(base, d, a.screen_size, changes, a.sized)
                    for d in a.screen_domains
                ]
                table[factor].append(dict(changes=changes, cells=cells))
        self.check_alignment(base)
        return table

    def best(self, screen: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """The combination of every tuned factor's best level (mean share over domains)."""
        combo: dict[str, Any] = {}
        for factor, levels in screen.items():
            if factor in NOT_TUNED:
                continue
            top = max(levels, key=lambda lv: float(np.mean([c["share"] for c in lv["cells"]])))
            combo.update(top["changes"])
        combo["epochs"] = min(combo.get("epochs", DEFAULTS["epochs"]), self.args.max_epochs)
        return combo

    def full(self, combo: dict[str, Any]) -> dict[str, Any]:
        a = self.args
        base = self.base(a.hidden, a.train_size, a.base_epochs)
        curve = {
            g: [
                self.zfda_cell(base, d, a.full_size, {**combo, "sparsity": g}, a.sized)
                for d in DOMAINS
            ]
            for g in sorted(a.gammas, key=lambda g: abs(np.log(g / 0.01)))
        }
        rows = {"today": self.today(), "best": curve.get(0.01, [])}
        self.check_alignment(base)
        return dict(rows=rows, curve=dict(sorted(curve.items())), combo=combo)

    def today(self) -> list[dict[str, Any]]:
        """Today's defaults on all domains with the full part's data (no screen needed)."""
        a = self.args
        base = self.base(a.hidden, a.train_size, a.base_epochs)
        return [self.zfda_cell(base, d, a.full_size, {}, a.sized) for d in DOMAINS]

    def width(self) -> list[dict[str, Any]]:
        a = self.args
        out = []
        for lr in a.width_base_lrs:
            for hidden in a.widths:
                base = self.base(hidden, a.width_train_size, a.width_base_epochs, lr)
                cells = [
                    self.zfda_cell(base, d, a.width_size, {}, a.sized) for d in a.screen_domains
                ]
                out.append(dict(hidden=hidden, base_lr=lr, clean=base.clean_psnr, cells=cells))
                self.check_alignment(base)
        return out


def study_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="repro_zfda.py --study",
        description="ZFDA factor study (resumable)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--parts",
        default="screen,full,width",
        help="comma list of parts: screen, full (needs screen), width; `today` runs only "
        "today's defaults of the full part (to run it in parallel); `report` only rewrites "
        "the docs from the parts' results",
    )
    p.add_argument("--hidden", type=int, default=32, help="width of the main base")
    p.add_argument("--train-size", type=int, default=4000, help="clean patches, main base")
    p.add_argument("--base-epochs", type=int, default=10, help="main base epochs")
    p.add_argument("--screen-size", type=int, default=1000, help="shifted patches, screen")
    p.add_argument("--screen-domains", default="rotation,hue", type=lambda s: s.split(","))
    p.add_argument("--full-size", type=int, default=1000, help="shifted patches, full part")
    p.add_argument(
        "--gammas",
        default=",".join(f"{g:g}" for g in GAMMAS),
        type=lambda s: [float(g) for g in s.split(",")],
        help="γ curve of the full part (split it over parallel runs)",
    )
    p.add_argument("--max-epochs", type=int, default=12, help="epoch cap of the combination")
    p.add_argument(
        "--widths",
        default=",".join(map(str, WIDTHS)),
        type=lambda s: [int(w) for w in s.split(",")],
        help="base widths (hidden) of the width part",
    )
    p.add_argument("--width-train-size", type=int, default=4000, help="clean patches, widths")
    p.add_argument("--width-size", type=int, default=500, help="shifted patches, widths")
    p.add_argument("--width-base-epochs", type=int, default=4, help="base epochs, widths")
    p.add_argument(
        "--width-base-lrs",
        default="0.001",
        type=lambda s: [float(x) for x in s.split(",")],
        help="base learning rates of the width part (hidden 128 collapses to a constant "
        "output at 1e-3)",
    )
    p.add_argument("--reverse", action="store_true", help="screen cells in reverse order")
    p.add_argument(
        "--sized",
        action="store_true",
        help="re-run cached cells that lack delta bytes (cached before one temporary delta "
        "file per process) to measure them; the re-run must reproduce the cached PSNR",
    )
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (parts run in parallel)")
    p.add_argument("--workdir", default="runs/zfda_repro")
    p.add_argument("--docs", default="docs", help="where zfda_repro.md and img/ are written")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    torch.set_num_threads(args.threads)
    study = Study(args)
    started = time.time()
    study.log(f"study start: {shlex.join(argv)}")
    results: dict[str, Any] = {"command": "python tools/repro_zfda.py --study " + shlex.join(argv)}
    if "screen" in parts or "full" in parts:
        results["screen"] = study.screen()
    if "full" in parts:
        results["full"] = study.full(study.best(results["screen"]))
    if "today" in parts:
        results["today"] = study.today()
    if "width" in parts:
        results["width"] = study.width()
    results["minutes"] = (time.time() - started) / 60
    study.log(f"study done in {results['minutes']:.1f} min")
    if parts != ["report"]:
        out = study.work / "study" / f"results-{'-'.join(parts)}.json"
        out.write_text(json.dumps(results, indent=1))
    write_docs(study, vars(args))


def write_docs(study: Study, args: dict[str, Any]) -> None:
    """Merge every part's results so far into the study section of docs/zfda_repro.md."""
    merged: dict[str, Any] = {"args": args}
    files = (study.work / "study").glob("results-*.json")
    for path in sorted(files, key=lambda f: f.stem.count("-")):  # bigger runs override
        part = json.loads(path.read_text())
        merged.update({k: v for k, v in part.items() if k not in ("command", "minutes")})
    decoder_shares(merged)
    docs = Path(args["docs"])
    (docs / "img").mkdir(parents=True, exist_ok=True)
    plot(merged, docs / "img")
    write_report(docs / "zfda_repro.md", study=report(merged))


def width_label(row: dict[str, Any]) -> str:
    return f"{row['hidden']} @ {row.get('base_lr', 1e-3):g}"


def label(changes: dict[str, Any]) -> str:
    short = {"lr_values": "lr", "values_optimizer": "opt", "mask_period": "every"}
    parts = [
        f"{short.get(k, k)}={v:g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
        for k, v in changes.items()
    ]
    return ", ".join(parts) or "today"


def mean_share(cells: list[dict[str, Any]]) -> float:
    return float(np.mean([c["share"] for c in cells]))


def decoder_shares(results: dict[str, Any]) -> None:
    """Side rows: also divide by the *decoder's* fine-tuning gain, one yardstick for all.

    (Fine-tuning the encoder, or both halves, with the decoder's recipe barely helps or
    even hurts here, so shares of *that* gain are huge or negative and mean little.)
    """
    screen = results.get("screen", {})
    if "side" not in screen:
        return
    reference = {c["domain"]: c for c in screen["score init"][0]["cells"]}
    for level in screen["side"]:
        for c in level["cells"]:
            ref = reference[c["domain"]]
            ft_gain = ref["finetune_psnr"] - (ref["psnr"] - ref["gain"])
            c["same_side_share"], c["share"] = c["share"], c["gain"] / ft_gain


def plot(results: dict[str, Any], out: Path) -> None:
    screen, width = results.get("screen", {}), results.get("width", [])
    panels = len(screen) + bool(width)
    fig, axes = plt.subplots(2, (panels + 1) // 2, figsize=(4 * ((panels + 1) // 2), 7))
    domains = [c["domain"] for c in next(iter(screen.values()))[0]["cells"]] if screen else []
    groups = [(f, [(label(lv["changes"]), lv["cells"]) for lv in lvs]) for f, lvs in screen.items()]
    if width:
        groups.append(("width (hidden @ base lr)", [(width_label(w), w["cells"]) for w in width]))
        domains = domains or [c["domain"] for c in width[0]["cells"]]
    for ax, (factor, levels) in zip(axes.flat, groups, strict=False):
        x = np.arange(len(levels))
        for i, domain in enumerate(domains):
            shares = [
                100 * next(c["share"] for c in cells if c["domain"] == domain)
                for _, cells in levels
            ]
            ax.bar(x + (i - 0.5) * 0.4, shares, 0.4, label=domain)
        for j, (_, cells) in enumerate(levels):
            if np.isnan(cells[0]["share"]):  # a collapsed base: fine-tuning gained nothing
                ax.text(j, 2, "n/a", ha="center", fontsize=7)
        ax.axhline(80, color="k", ls=":", lw=1)
        ax.set_xticks(x, [lv for lv, _ in levels], rotation=30, ha="right", fontsize=7)
        ax.set_title(factor, fontsize=9)
        ax.set_ylabel("% of fine-tuning gain", fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("ZFDA screen: one factor at a time from today's defaults (γ = 1 %)")
    fig.tight_layout()
    fig.savefig(out / "zfda_study_factors.png", dpi=110)
    plt.close(fig)
    if "full" not in results:
        return
    full = results["full"]
    fig, ax = plt.subplots(figsize=(6, 4))
    gammas = [float(g) for g in full["curve"]]
    for i, domain in enumerate(DOMAINS):
        shares = [100 * cells[i]["share"] for cells in full["curve"].values()]
        ax.semilogx([100 * g for g in gammas], shares, "o-", color=f"C{i}", label=domain)
        today = full["rows"]["today"][i]["share"]
        ax.plot([1.0], [100 * today], "x", color=f"C{i}", ms=9)
    ax.axhline(80, color="k", ls=":", lw=1, label="goal 80 %")
    ax.set_xlabel("sparsity γ (% of adapted weights)")
    ax.set_ylabel("ZFDA gain, % of full fine-tuning's gain")
    ax.set_title("Best combination vs γ (x: today's defaults at 1 %)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "zfda_study_gamma.png", dpi=110)
    plt.close(fig)


def goal_lines(full: dict[str, Any]) -> list[str]:
    """The issue's goal, checked per domain: ≥ 80 % of fine-tuning's gain at γ = 1 %."""
    out = ["Goal (≥ 80 % of fine-tuning's gain at γ = 1 % where fine-tuning gains ≥ 1 dB):", ""]
    curve = {float(g): cells for g, cells in full["curve"].items()}
    for i, domain in enumerate(DOMAINS):
        cells = [(g, c[i]) for g, c in sorted(curve.items())]
        ft_gain = cells[0][1]["finetune_psnr"] - (cells[0][1]["psnr"] - cells[0][1]["gain"])
        at_1 = curve.get(0.01, [None] * len(DOMAINS))[i]
        reached = [g for g, c in cells if c["share"] >= 0.8]
        where = f"first reached at γ = {100 * reached[0]:g} %" if reached else "not reached"
        verdict = (
            "fine-tuning gains < 1 dB: not counted"
            if ft_gain < 1
            else ("**met**" if at_1 and at_1["share"] >= 0.8 else "**missed**")
        )
        share = f"{100 * at_1['share']:.0f} %" if at_1 else "n/a"
        out.append(
            f"* {domain}: fine-tuning +{ft_gain:.2f} dB; at γ = 1 %: {share} — {verdict}; "
            f"80 % {where} on the measured γ grid."
        )
    return out


def _all_cells(node: Any) -> list[dict[str, Any]]:
    """Every ZFDA cell anywhere in ``node`` (results nest them in lists and dicts)."""
    if isinstance(node, dict):
        if node.get("kind") == "zfda":
            return [node]
        return [c for v in node.values() for c in _all_cells(v)]
    if isinstance(node, list):
        return [c for v in node for c in _all_cells(v)]
    return []


def percent(share: float) -> str:
    """A share as a percentage; n/a where fine-tuning gained nothing (a collapsed base)."""
    return "n/a" if np.isnan(share) else f"{100 * share:.0f} %"


def delta_bytes(cells: list[dict[str, Any]]) -> str:
    """The delta file size of ``cells`` (a range when they differ; – if not measured)."""
    sizes = sorted(c["delta_bytes"] for c in cells if "delta_bytes" in c)
    if len(sizes) < len(cells):
        return "–"
    return f"{sizes[0]}" if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"


def report(results: dict[str, Any]) -> str:
    a = results["args"]
    cells = {json.dumps(c, sort_keys=True): c for c in _all_cells(results)}
    minutes = sum(c["seconds"] for c in cells.values()) / 60
    lines = [
        "## Factor study (`--study`)",
        "",
        "Command: `python tools/repro_zfda.py --study` (ZFDA training time of all cells, "
        f"summed over the parallel part processes: {minutes:.0f} min) on this 2-core CPU "
        "shared with seven other jobs (load 15-40), "
        "so the seconds below are noisy and several times a quiet machine's (re-run alone "
        "on one core, a γ = 1 % cell of 12 epochs takes about 10 s instead of 130-230 s). "
        "Delta bytes are the size of the file each cell's delta was saved to (safetensors, "
        "fp16 values, gap8 indices; a range when the domains of a row differ). In the first "
        "run the parallel processes shared one temporary delta file, so those cells were "
        "re-run one at a time to measure their bytes (`--sized`); every re-run reproduced "
        "the cached PSNR bit for bit, so each size is that cell's delta."
        + ("" if all("delta_bytes" in c for c in cells.values()) else " –: not re-measured."),
        "",
    ]
    if "screen" in results:
        doms = a["screen_domains"]
        lines += [
            f"### Screen: one factor at a time (domains {', '.join(doms)}, "
            f"{a['screen_size']} shifted patches, base hidden {a['hidden']})",
            "",
            "Share = ZFDA gain / gain of full fine-tuning of the same side on the same "
            "patches (6 epochs, Adam 1e-3). Today's defaults: γ = 1 %, decoder, grad scores, "
            "Adam 1e-3, 6 epochs, batch 32, d_in + d_out budget, straight-through mask.",
            "",
            "| factor | level | "
            + " | ".join(f"{d} dB (share)" for d in doms)
            + " | mean share | nnz | bytes | adapt s |",
            "|---|---|" + "---|" * len(doms) + "---|---|---|---|",
        ]
        for factor, levels in results["screen"].items():
            for lv in levels:
                c = lv["cells"]
                lines.append(
                    f"| {factor} | {label(lv['changes'])} | "
                    + " | ".join(f"{x['psnr']:.2f} ({100 * x['share']:.0f} %)" for x in c)
                    + f" | {100 * mean_share(c):.0f} % | {c[0]['nnz']} | {delta_bytes(c)}"
                    f" | {np.mean([x['seconds'] for x in c]):.0f} |"
                )
        ft = results["screen"]["score init"][0]["cells"]
        sides = results["screen"].get("side", [])
        lines += [
            "",
            "Side rows: share of the *decoder's* fine-tuning gain; fine-tuning that side itself "
            "(same recipe) reaches "
            + "; ".join(
                f"{lv['changes']['side']}: "
                + ", ".join(f"{x['domain']} {x['finetune_psnr']:.2f} dB" for x in lv["cells"])
                for lv in sides
            )
            + ".",
            "",
            "Fine-tuning reference (decoder): "
            + ", ".join(f"{x['domain']} {x['finetune_psnr']:.2f} dB" for x in ft)
            + "; base "
            + ", ".join(f"{x['domain']} {x['psnr'] - x['gain']:.2f} dB" for x in ft)
            + ".",
            "",
        ]
    if "width" in results:
        lines += [
            f"### Width (today's defaults; bases trained {a['width_base_epochs']} epochs on "
            f"{a['width_train_size']} clean patches at the row's learning rate, "
            f"{a['width_size']} shifted patches)",
            "",
            "| hidden | base lr | clean dB | "
            + " | ".join(f"{c['domain']} dB (share)" for c in results["width"][0]["cells"])
            + " | nnz | bytes | adapt s |",
            "|---|---|---|" + "---|" * len(results["width"][0]["cells"]) + "---|---|---|",
        ]
        for w in results["width"]:
            c = w["cells"]
            lines.append(
                f"| {w['hidden']} | {w.get('base_lr', 1e-3):g} | {w['clean']:.2f} | "
                + " | ".join(f"{x['psnr']:.2f} ({percent(x['share'])})" for x in c)
                + f" | {c[0]['nnz']} | {delta_bytes(c)}"
                f" | {np.mean([x['seconds'] for x in c]):.0f} |"
            )
        collapsed = [w for w in results["width"] if np.isnan(w["cells"][0]["share"])]
        lines += [
            "",
            *(
                f"n/a: the hidden-{w['hidden']} base at lr {w.get('base_lr', 1e-3):g} collapsed "
                f"to a constant output ({w['clean']:.2f} dB clean); fine-tuning gains nothing."
                for w in collapsed
            ),
            "",
        ]
    if "full" in results:
        full = results["full"]
        lines += [
            f"### Best combination, all domains ({a['full_size']} shifted patches)",
            "",
            f"Combination: `{label(full['combo'])}` (epochs capped at {a['max_epochs']}).",
            "",
            "| domain | base dB | full FT dB (gain) | today ZFDA dB (share) | best ZFDA dB (share) "
            "| nnz | bytes (today / best) | adapt s (today / best) | misalignment, delta off |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t, b in zip(full["rows"]["today"], full["rows"]["best"], strict=True):
            base = t["psnr"] - t["gain"]
            lines.append(
                f"| {t['domain']} | {base:.2f} | {t['finetune_psnr']:.2f} "
                f"({t['finetune_psnr'] - base:+.2f}) | {t['psnr']:.2f} ({100 * t['share']:.0f} %) "
                f"| {b['psnr']:.2f} ({100 * b['share']:.0f} %) | {b['nnz']} "
                f"| {delta_bytes([t])} / {delta_bytes([b])} "
                f"| {t['seconds']:.0f} / {b['seconds']:.0f} | {b['misalignment']:.3f} dB |"
            )
        lines += [
            "",
            "γ curve of the combination (share of fine-tuning's gain; PSNR in brackets):",
            "",
            "| γ | nnz | bytes | " + " | ".join(DOMAINS) + " |",
            "|---|---|---|" + "---|" * len(DOMAINS),
        ]
        for g, cells in full["curve"].items():
            lines.append(
                f"| {100 * float(g):g} % | {cells[0]['nnz']} | {delta_bytes(cells)} | "
                + " | ".join(f"{100 * c['share']:.0f} % ({c['psnr']:.2f})" for c in cells)
                + " |"
            )
        lines += ["", *goal_lines(full), ""]
    lines += ["![factors](img/zfda_study_factors.png)"]
    if "full" in results:
        lines += ["![gamma](img/zfda_study_gamma.png)"]
    return "\n".join(lines) + "\n"
