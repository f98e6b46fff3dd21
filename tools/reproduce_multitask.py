"""Reproduce the GAI and KEM/sKEM claims on real offline data, by one command.

Trains and evaluates, with the same parameter count (within 5 %) and the same training
budget each: the sequential baseline (last block only), GAI, GAI-w (no graph update),
GAI + KEM and GAI + sKEM (all :class:`~sdk.models.gai.GAITransceiver`), plus a single-task
JSCC per task as the reference, at R in {1/4, 1/12, 1/48} and SNR in {-2, 2, 6, 10, 14} dB
over AWGN (and Rayleigh at R = 1/12), for several seeds. Extra parts: GAI with M graph
iterations and the node over-smoothing measure MAD; KEM vs sKEM on a long-tailed training
set; KEM's L and K swept; the measured cost of the KEM module vs dense cross-attention.

Every trained cell is cached as JSON under ``--out`` (a re-run resumes); the tables and
plots go into ``docs/multitask.md`` between the result markers and ``docs/img/``.

Parameter matching: GAI's parameter count at ``relation_hidden`` is the target. GAI-family
variants (GAI-w, KEM, sKEM, other M) get the ``relation_hidden`` that comes closest; the
sequential baseline, which has no relation MLPs, gets a wider encoder (``encoder_hidden``).
The single-task references are the sequential model with one task and the whole bandwidth
(not matched: they are references, not competitors).

Usage::

    python tools/reproduce_multitask.py --quick   # MNIST + photo patches, tiny budget (~7 min)
    python tools/reproduce_multitask.py           # the same, full budget (~1.4 h)
    python tools/reproduce_multitask.py --from-cache   # report the finished cells only

Times are for a quiet 2-core CPU with ``--jobs 2``; each cell records its CPU time and the
report sums them (``docs/multitask.md``, Run time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sdk.data import ImageDataset, load_dataset
from sdk.data.labels import with_edge_masks
from sdk.evaluate import evaluate, iou
from sdk.models.gai import GAITransceiver
from sdk.models.kem import KEMModule, dense_attention
from sdk.train import TrainConfig, train

RATIOS = {"1/4": 1 / 4, "1/12": 1 / 12, "1/48": 1 / 48}
SNRS = (-2.0, 2.0, 6.0, 10.0, 14.0)
FOCUS = "1/12"  # the R of the Rayleigh run and the extra parts (the seed's headline R)
METRIC = {"recon": "psnr", "logits": "accuracy", "mask_logits": "iou"}
TASKS = {"mnist": ("recon", "logits", "mask_logits"), "patches": ("recon", "mask_logits")}
VARIANTS: dict[str, dict[str, Any]] = {
    "sequential": {"mode": "sequential"},
    "GAI": {},
    "GAI-w": {"graph_update": False},
    "GAI+KEM": {"kem_slots": 8, "kem_topk": 16},
    "GAI+sKEM": {"kem_slots": 8, "kem_topk": 16, "kem_etf": True},
}
TOLERANCE = 0.05
IMBALANCE_RHO = 0.05
START, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Budget:
    """Everything that sizes a run (recorded in each cell, so caches never mix budgets)."""

    datasets: tuple[str, ...]
    rayleigh: tuple[str, ...]  # the datasets that also get the Rayleigh run at FOCUS
    hidden: int
    relation_hidden: int
    train_size: int
    test_size: int
    epochs: int
    batch_size: int
    seeds: int
    imbalance_seeds: int
    sweep_slots: tuple[int, ...]
    sweep_topk: tuple[int, ...]  # 0 = all tokens (dense memory attention)
    lr: float = 2e-3


QUICK = Budget(
    datasets=("mnist", "patches"),
    rayleigh=("mnist",),  # patches: AWGN only, the cells that add least (docs/multitask.md)
    hidden=8,
    relation_hidden=64,
    train_size=1280,
    test_size=250,
    epochs=4,
    batch_size=32,
    seeds=2,
    imbalance_seeds=3,
    sweep_slots=(2, 8),
    sweep_topk=(4, 0),
)
FULL = Budget(
    datasets=("mnist", "patches"),
    rayleigh=("mnist", "patches"),
    hidden=16,
    relation_hidden=256,
    train_size=4000,
    test_size=500,
    epochs=8,
    batch_size=32,
    seeds=3,
    imbalance_seeds=3,
    sweep_slots=(2, 8, 32),
    sweep_topk=(4, 16, 0),
)
CELL_FIELDS = ("hidden", "relation_hidden", "train_size", "test_size", "epochs", "batch_size", "lr")


def cell_budget(budget: Budget) -> dict[str, Any]:
    """The part of ``budget`` that shapes one cell: the cache key beside the cell's own key,
    so adding seeds or datasets keeps the finished cells."""
    return {k: getattr(budget, k) for k in CELL_FIELDS}


# --- data ------------------------------------------------------------------------


def task_data(name: str, split: str, budget: Budget) -> ImageDataset:
    """The multi-task version of a dataset: MNIST as it is, patches with edge masks."""
    data = load_dataset(name, split)
    data = with_edge_masks(data) if name == "patches" else data
    size = budget.train_size if split == "train" else budget.test_size
    return data.spread(size) if len(data) > size else data


def long_tailed(data: ImageDataset, rho: float = IMBALANCE_RHO) -> ImageDataset:
    """Class ``c`` keeps the first ``ceil(n_c * rho^(c/(C-1)))`` of its items (C classes).

    With rho = 0.05 this keeps 35 % of a balanced set, so the tool cuts it from the whole
    training split (MNIST: 4,000 -> 1,400 images, close to the quick budget's 1,280)."""
    assert data.labels is not None
    classes = data.num_classes
    keep = []
    for c in range(classes):
        idx = (data.labels == c).nonzero().flatten()
        keep.append(idx[: math.ceil(len(idx) * rho ** (c / (classes - 1)))])
    return data.subset(torch.cat(keep).sort().values)


# --- models ----------------------------------------------------------------------


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_args(data: str, ratio: float, budget: Budget, **extra: Any) -> dict[str, Any]:
    c = 1 if data == "mnist" else 3
    return dict(
        in_channels=c,
        image_size=28 if data == "mnist" else 32,
        bandwidth_ratio=ratio,
        tasks=TASKS[data],
        num_classes=10,
        hidden=budget.hidden,
        relation_hidden=budget.relation_hidden,
        **extra,
    )


def matched_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the one knob set that brings the count closest to plain GAI's."""
    base = {k: v for k, v in args.items() if k not in ("mode", "graph_update", "iterations")}
    base = {k: v for k, v in base.items() if not k.startswith("kem_")}
    target = count(GAITransceiver(**base))
    if args.get("mode") == "sequential":
        widths = range(args["hidden"], 4 * args["hidden"])
        best = min(
            widths, key=lambda w: abs(count(GAITransceiver(**args, encoder_hidden=w)) - target)
        )
        return {**args, "encoder_hidden": best}
    one, two = (count(GAITransceiver(**{**args, "relation_hidden": r})) for r in (1, 2))
    best_r = max(1, round(1 + (target - one) / (two - one)))
    return {**args, "relation_hidden": best_r}


def build(args: dict[str, Any], seed: int) -> GAITransceiver:
    torch.manual_seed(seed)
    return GAITransceiver(**args)


# --- cells -----------------------------------------------------------------------


def cell_name(cell: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(cell.items())]
    return "_".join(parts).replace("/", "-").replace("+", "p") + ".json"


def read_cached(cell: dict[str, Any], budget: Budget, out: Path) -> dict[str, Any] | None:
    """The cell's JSON from ``out`` if it was trained at this budget, else None."""
    path = out / cell_name(cell)
    if not path.exists():
        return None
    cached = json.loads(path.read_text())
    same = cached["budget"] == json.loads(json.dumps(cell_budget(budget)))
    return cached if same else None


def run_cell(cell: dict[str, Any], budget: Budget, out: Path) -> dict[str, Any]:
    """Train and evaluate one cell, or read it back from its JSON cache."""
    cached = read_cached(cell, budget, out)
    if cached is not None:
        return cached
    cpu_start = time.process_time()  # CPU time of this worker: the quiet-machine estimate
    data, ratio = cell["data"], RATIOS[cell["R"]]
    extra = dict(cell.get("args", {}))
    if cell["variant"].startswith("single:"):
        task = cell["variant"].split(":", 1)[1]
        args = {**model_args(data, ratio, budget, mode="sequential"), "tasks": (task,)}
    else:
        kw = {**VARIANTS[cell["variant"]], **extra}
        args = matched_args(model_args(data, ratio, budget, **kw))
    args["channel"] = cell["channel"]
    train_set, test_set = task_data(data, "train", budget), task_data(data, "test", budget)
    if cell.get("imbalanced"):  # cut from the whole split: about as many images as balanced
        whole = dataclasses.replace(budget, train_size=10**9)
        train_set = long_tailed(task_data(data, "train", whole))
    model = build(args, cell["seed"])
    config = TrainConfig(
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        snr_db=(min(SNRS), max(SNRS)),
        seed=cell["seed"],
        progress=False,
    )
    start, train_cpu = time.perf_counter(), time.process_time()
    train(model, train_set, config)
    seconds, train_cpu = time.perf_counter() - start, time.process_time() - train_cpu
    rows = evaluate(model, test_set, SNRS, seed=cell["seed"])
    tail = {}
    if cell.get("imbalanced") is not None and test_set.labels is not None:
        rare = test_set.subset((test_set.labels >= 5).nonzero().flatten())
        tail["tail_accuracy"] = evaluate(model, rare, [max(SNRS)], seed=cell["seed"])[0]["accuracy"]
    result = {
        **cell,
        "budget": cell_budget(budget),
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()},
        "params": count(model),
        "train_seconds": round(seconds, 2),
        "train_cpu_seconds": round(train_cpu, 2),
        "steps": budget.epochs * math.ceil(len(train_set) / budget.batch_size),
        "train_items": len(train_set),
        "rows": rows,
        **node_statistics(model, test_set),
        **tail,
    }
    result["cpu_seconds"] = round(time.process_time() - cpu_start, 2)
    out.mkdir(parents=True, exist_ok=True)
    path = out / cell_name(cell)
    staged = path.with_suffix(".part")  # renamed into place: a killed run leaves no half cell
    staged.write_text(json.dumps(result, indent=1))
    staged.replace(path)
    return result


def node_statistics(model: GAITransceiver, data: ImageDataset) -> dict[str, Any]:
    """MAD of the graph nodes and the mean task-node weights on (up to) 256 test images."""
    enc = model.transmitter
    if enc.mode == "sequential":
        return {}
    with torch.no_grad():
        nodes = enc.nodes(data.images[:256])
        weights = enc.task_weights(nodes).mean(0)
    return {"mad": mean_average_distance(nodes), "task_weights": weights.tolist()}


def mean_average_distance(nodes: torch.Tensor) -> float:
    """MAD (Chen et al. 2020) over the fully connected node graph: mean cosine distance
    ``1 - cos(h_i, h_j)`` over ordered pairs ``i != j`` of flattened node features, averaged
    over the batch. 0 means every node carries the same feature (over-smoothed)."""
    flat = nn.functional.normalize(nodes.flatten(2), dim=-1)  # [B, N, D]
    dist = 1 - flat @ flat.transpose(1, 2)
    n = nodes.shape[1]
    return float(dist.sum((1, 2)).mean() / (n * (n - 1)))


def run_cells(cells: list[dict[str, Any]], budget: Budget, out: Path, jobs: int) -> list:
    """:func:`run_cell` over ``cells`` in ``jobs`` processes (0: in this process), in order."""
    if jobs < 1:
        return [run_cell(c, budget, out) for c in tqdm(cells, desc="cells", unit="cell")]
    with ProcessPoolExecutor(jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(run_cell, cell, budget, out) for cell in cells]
        for _ in tqdm(as_completed(futures), total=len(futures), desc="cells", unit="cell"):
            pass
    return [f.result() for f in futures]


# --- the plan ----------------------------------------------------------------------


def plan(budget: Budget, parts: Iterable[str]) -> list[dict[str, Any]]:
    """Every cell the requested parts need (shared cells appear once)."""
    cells: list[dict[str, Any]] = []
    seeds = range(budget.seeds)

    def add(**cell: Any) -> None:
        if cell not in cells:
            cells.append(cell)

    parts = set(parts)
    for data in budget.datasets:
        variants = [*VARIANTS, *(f"single:{t}" for t in TASKS[data])]
        for r in RATIOS if "main" in parts else ():
            for channel in channels(budget, data, r):
                for v in variants if channel == "awgn" else VARIANTS:
                    for s in seeds:
                        add(data=data, variant=v, R=r, channel=channel, seed=s)
    mnist = dict(data="mnist", R=FOCUS, channel="awgn")
    if "m" in parts:
        for m in (1, 2, 3):
            for s in seeds:
                add(
                    **mnist, variant="GAI", seed=s, **({"args": {"iterations": m}} if m > 1 else {})
                )
        for s in seeds:
            add(**mnist, variant="GAI-w", seed=s)
    if "imbalance" in parts:
        for v in ("GAI+KEM", "GAI+sKEM"):
            for s in range(budget.imbalance_seeds):
                add(**mnist, variant=v, seed=s, imbalanced=True)
                add(**mnist, variant=v, seed=s, imbalanced=False)
    if "lk" in parts:
        for slots in budget.sweep_slots:
            for topk in budget.sweep_topk:
                args = {"kem_slots": slots, "kem_topk": topk or 10_000}
                own = {} if args == VARIANTS["GAI+KEM"] else {"args": args}  # main's cell
                for s in seeds:
                    add(**mnist, variant="GAI+KEM", seed=s, **own)
    return cells


def channels(budget: Budget, data: str, r: str) -> tuple[str, ...]:
    return ("awgn", "rayleigh") if r == FOCUS and data in budget.rayleigh else ("awgn",)


# --- cost of the memory vs dense cross-attention ---------------------------------


class DenseMixer(nn.Module):
    """Dense cross-attention over the same tokens, built like :class:`KEMModule` (pre-norm,
    q/k/v/out maps, token MLP) so the timing compares only ``n x n`` vs ``L x n`` attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(x)
        x = x + self.out(dense_attention(self.q(t), self.k(t), self.v(t)))
        return x + self.mlp(self.norm_mlp(x))


def measure_cost(dim: int, token_counts: Iterable[int], slots: int = 8, topk: int = 16) -> list:
    """Median forward time (batch 8, one thread) of KEM and of dense cross-attention."""
    torch.manual_seed(0)
    kem, dense = KEMModule(dim, slots, topk).eval(), DenseMixer(dim).eval()
    rows = []
    for n in token_counts:
        x = torch.randn(8, n, dim)
        times = {}
        for name, module in (("kem", kem), ("dense", dense)):
            with torch.no_grad():
                module(x)
                samples = []
                for _ in range(7):
                    start = time.perf_counter()
                    module(x)
                    samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples) * 1e3
        rows.append({"tokens": n, "kem_ms": times["kem"], "dense_ms": times["dense"]})
    return rows


# --- summaries -------------------------------------------------------------------


def metric_at(result: dict[str, Any], task: str, snr: float) -> float:
    row = next(r for r in result["rows"] if r["snr_db"] == snr)
    return float(row[METRIC[task]])


def recon_collapsed(result: dict[str, Any]) -> bool:
    """The recon output ignores the input: PSNR within 0.05 dB from -2 to 14 dB SNR (the
    decoder settled on one mean image; see docs/training.md on mostly-black images)."""
    psnrs = [row["psnr"] for row in result["rows"] if "psnr" in row]
    return bool(psnrs) and max(psnrs) - min(psnrs) < 0.05


def blind_ious(data: str, budget: Budget) -> tuple[float, float]:
    """The mask IoU on the test set of marking every pixel and of marking none (an image
    without foreground counts 1 then): what a mask head that ignores its input scores."""
    masks = task_data(data, "test", budget).masks
    assert masks is not None
    return float(iou(torch.ones_like(masks), masks)), float(iou(-torch.ones_like(masks), masks))


def mask_blind(result: dict[str, Any], levels: tuple[float, float]) -> bool:
    """The mask head ignores the input: IoU within 0.002 of a :func:`blind_ious` level
    at every SNR."""
    ious = [row["iou"] for row in result["rows"] if "iou" in row]
    return bool(ious) and any(all(abs(x - level) < 0.002 for x in ious) for level in levels)


def spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def select(results: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    """Results matching ``want``; imbalance-experiment cells only when ``want`` names them."""

    def ok(r: dict[str, Any]) -> bool:
        if "imbalanced" in r and "imbalanced" not in want:
            return False
        return all(r.get(k) == v for k, v in want.items())

    return [r for r in results if ok(r)]


def relative_gain(variant: dict[str, Any], base: dict[str, Any], tasks: tuple[str, ...]) -> float:
    """Mean over tasks and SNRs of ``(m_variant - m_base) / m_base`` in % (all metrics are
    higher-is-better: PSNR, accuracy, IoU), paired by seed; a baseline metric of 0 (an
    untrained tiny run) leaves its term out, and NaN when nothing is left."""
    pairs = [(metric_at(variant, t, s), metric_at(base, t, s)) for t in tasks for s in SNRS]
    gains = [(v - b) / abs(b) * 100 for v, b in pairs if b != 0]
    return statistics.fmean(gains) if gains else math.nan


def gains(
    results: list[dict[str, Any]],
    data: str,
    r: str,
    channel: str,
    variant: str,
    tasks: tuple[str, ...] | None = None,
) -> list:
    """Per seed, :func:`relative_gain` over ``tasks`` (default: all of the dataset's)."""
    out = []
    for v in select(results, data=data, R=r, channel=channel, variant=variant, args=None):
        base = select(
            results, data=data, R=r, channel=channel, variant="sequential", seed=v["seed"]
        )
        if base:
            out.append(relative_gain(v, base[0], tasks or TASKS[data]))
    return out


def main_tables(results: list[dict[str, Any]], budget: Budget) -> list[str]:
    lines = []
    for data in budget.datasets:
        tasks = TASKS[data]
        variants = [*VARIANTS, *(f"single:{t}" for t in tasks)]
        levels = blind_ious(data, budget)
        for r in RATIOS:
            for channel in channels(budget, data, r):
                if not select(results, data=data, R=r, channel=channel, args=None):
                    continue  # a partial run (--from-cache)
                lines += [
                    f"### {data}, R = {r}, {channel.upper()}",
                    "",
                    "| variant | params | task | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |",
                    "|---|---|---|" + "---|" * len(SNRS),
                ]
                for v in variants:
                    cells = select(results, data=data, R=r, channel=channel, variant=v, args=None)
                    if not cells:
                        continue
                    mine = [t for t in tasks if t in cells[0]["model_args"]["tasks"]]
                    for t in mine:
                        vals = [
                            spread([metric_at(c, t, s) for c in cells], 2 if t == "recon" else 3)
                            for s in SNRS
                        ]
                        lines.append(
                            f"| {v} | {cells[0]['params']} | {METRIC[t]} | "
                            + " | ".join(vals)
                            + " |"
                        )
                lines.append("")
                table = select(results, data=data, R=r, channel=channel, args=None)
                flat = [f"{c['variant']} seed {c['seed']}" for c in table if recon_collapsed(c)]
                if flat:
                    lines += [f"Reconstruction collapsed (flat PSNR) in: {', '.join(flat)}.", ""]
                blind = [f"{c['variant']} seed {c['seed']}" for c in table if mask_blind(c, levels)]
                if blind:
                    lines += [
                        f"Mask head blind (IoU at a no-information level, every pixel "
                        f"{levels[0]:.3f} or none {levels[1]:.3f}) in: {', '.join(blind)}.",
                        "",
                    ]
                gain_row = [
                    f"{v}: {spread(gains(results, data, r, channel, v), 2)} % ("
                    + ", ".join(
                        f"{METRIC[t]} {spread(gains(results, data, r, channel, v, (t,)), 2)}"
                        for t in tasks
                    )
                    + ")"
                    for v in list(VARIANTS)[1:]
                ]
                lines += [
                    "Average relative gain over the sequential baseline, all tasks and SNRs "
                    "(per task), mean ± std over seeds, %: " + "; ".join(gain_row) + ".",
                    "",
                ]
    return lines


def extra_tables(results: list[dict[str, Any]], budget: Budget, cost: list) -> list[str]:
    lines = []
    mnist = dict(data="mnist", R=FOCUS, channel="awgn")
    m_rows = [("0 (GAI-w)", select(results, **mnist, variant="GAI-w", args=None))]
    m_rows.append(("1", select(results, **mnist, variant="GAI", args=None)))
    for m in (2, 3):
        m_rows.append((str(m), select(results, **mnist, variant="GAI", args={"iterations": m})))
    if any(cells for _, cells in m_rows[2:]):
        lines += [
            f"### GAI graph iterations M (MNIST, R = {FOCUS}, AWGN)",
            "",
            "| M | MAD of the nodes | acc @ −2 dB | acc @ 14 dB | PSNR @ 6 dB | IoU @ 6 dB "
            "| gain over baseline % |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, cells in m_rows:
            if not cells:
                continue
            base = {c["seed"]: c for c in select(results, **mnist, variant="sequential")}
            g = [
                relative_gain(c, base[c["seed"]], TASKS["mnist"])
                for c in cells
                if c["seed"] in base
            ]
            lines.append(
                f"| {m} | {spread([c['mad'] for c in cells])} | "
                f"{spread([metric_at(c, 'logits', -2.0) for c in cells])} | "
                f"{spread([metric_at(c, 'logits', 14.0) for c in cells])} | "
                f"{spread([metric_at(c, 'recon', 6.0) for c in cells], 2)} | "
                f"{spread([metric_at(c, 'mask_logits', 6.0) for c in cells])} | {spread(g, 2)} |"
            )
        lines.append("")
    imb = [(v, b) for v in ("GAI+KEM", "GAI+sKEM") for b in (False, True)]
    if select(results, imbalanced=True):
        lines += [
            "### KEM vs sKEM on a long-tailed training set "
            f"(MNIST, R = {FOCUS}, ρ = {IMBALANCE_RHO})",
            "",
            "Class c keeps ρ^(c/9) of its training images (digit 0 all, digit 9 5 %); "
            "the test set is balanced. "
            "Stability = std of the accuracy over seeds (lower is more stable).",
            "",
            "| variant | training set | acc @ 2 dB | acc @ 14 dB "
            "| stability (std acc, mean over SNRs) | acc on digits 5–9 @ 14 dB |",
            "|---|---|---|---|---|---|",
        ]
        for v, b in imb:
            cells = select(results, **mnist, variant=v, args=None, imbalanced=b)
            if not cells:
                continue
            stab = statistics.fmean(
                statistics.stdev([metric_at(c, "logits", s) for c in cells])
                if len(cells) > 1
                else 0.0
                for s in SNRS
            )
            tail = [c["tail_accuracy"] for c in cells if "tail_accuracy" in c]
            lines.append(
                f"| {v} | {'long-tailed' if b else 'balanced'} ({cells[0]['train_items']}) | "
                f"{spread([metric_at(c, 'logits', 2.0) for c in cells])} | "
                f"{spread([metric_at(c, 'logits', 14.0) for c in cells])} | {stab:.4f} | "
                f"{spread(tail)} |"
            )
        lines.append("")
    sweep = select(results, **mnist, variant="GAI+KEM")  # main's cells are L = 8, K = 16

    def lk(cell: dict[str, Any]) -> tuple[int, int]:
        args = cell.get("args") or VARIANTS["GAI+KEM"]
        return args["kem_slots"], args["kem_topk"]

    if any(c.get("args") for c in sweep):
        n_tokens = 3 * 7 * 7
        lines += [
            f"### KEM memory size L and top-K (MNIST, R = {FOCUS}, AWGN; {n_tokens} tokens; "
            "K = all is dense memory attention)",
            "",
            "| L | K | params | acc @ 2 dB | PSNR @ 6 dB | IoU @ 6 dB | gain over baseline % |",
            "|---|---|---|---|---|---|---|",
        ]
        keys = sorted({lk(c) for c in sweep})
        base = {c["seed"]: c for c in select(results, **mnist, variant="sequential")}
        for slots, topk in keys:
            cells = [c for c in sweep if lk(c) == (slots, topk)]
            g = [
                relative_gain(c, base[c["seed"]], TASKS["mnist"])
                for c in cells
                if c["seed"] in base
            ]
            k = "all" if topk >= n_tokens else str(topk)
            lines.append(
                f"| {slots} | {k} | {cells[0]['params']} | "
                f"{spread([metric_at(c, 'logits', 2.0) for c in cells])} | "
                f"{spread([metric_at(c, 'recon', 6.0) for c in cells], 2)} | "
                f"{spread([metric_at(c, 'mask_logits', 6.0) for c in cells])} | {spread(g, 2)} |"
            )
        lines.append("")
    if cost:
        lines += [
            "### Cost: KEM module (L = 8, K = 16) vs dense cross-attention, "
            f"width {budget.hidden}, batch 8, one thread",
            "",
            "| tokens n | KEM ms | dense ms | dense / KEM |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['tokens']} | {c['kem_ms']:.2f} | {c['dense_ms']:.2f} | "
            f"{c['dense_ms'] / c['kem_ms']:.2f}× |"
            for c in cost
        ]
        lines.append("")
    return lines


# --- plots and the document ---------------------------------------------------------


def plot_snr(results: list[dict[str, Any]], data: str, budget: Budget, path: Path) -> None:
    """Per-task metric vs SNR, one row per R (AWGN), mean ± std over seeds; the IoU panels
    show the no-information levels (:func:`blind_ious`) as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = TASKS[data]
    ratios = [r for r in RATIOS if select(results, data=data, R=r, channel="awgn")]  # partial
    legend_rows = 1 if len(tasks) > 2 else 2  # a 2-panel-wide figure fits 4 entries a row
    room = 0.2 + 0.2 * legend_rows  # inches below the panels for the legend
    fig, axes = plt.subplots(
        len(ratios), len(tasks), figsize=(4 * len(tasks), 3 * len(ratios) + room), squeeze=False
    )
    for i, r in enumerate(ratios):
        for j, t in enumerate(tasks):
            ax = axes[i][j]
            for v in [*VARIANTS, f"single:{t}"]:
                cells = select(results, data=data, R=r, channel="awgn", variant=v, args=None)
                if not cells:
                    continue
                vals = [[metric_at(c, t, s) for c in cells] for s in SNRS]
                mean = [statistics.fmean(x) for x in vals]
                std = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in vals]
                style = "--" if v.startswith("single") else "-"
                ax.errorbar(
                    SNRS,
                    mean,
                    yerr=std,
                    label="single-task" if v.startswith("single") else v,
                    ls=style,
                    capsize=2,
                    marker="o",
                    ms=3,
                )
            if t == "mask_logits":
                for level in blind_ious(data, budget):
                    ax.axhline(level, color="grey", ls=":", lw=1)
            ax.set_title(f"{data} {t}, R = {r}", fontsize=9)
            ax.set_xlabel("SNR (dB)")
            ax.set_ylabel(METRIC[t])
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if "mask_logits" in tasks:
        handles.append(plt.Line2D([], [], color="grey", ls=":", lw=1))
        labels.append("IoU of marking every pixel / none")
    ncol = math.ceil(len(labels) / legend_rows)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    fig.tight_layout(rect=(0, room / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_gain(results: list[dict[str, Any]], datasets: tuple[str, ...], path: Path) -> None:
    """Average relative gain over the sequential baseline vs R (AWGN), mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.4), squeeze=False)
    for ax, data in zip(axes[0], datasets, strict=True):
        x = list(range(len(RATIOS)))
        for k, v in enumerate(list(VARIANTS)[1:]):
            g = [gains(results, data, r, "awgn", v) for r in RATIOS]
            mean = [statistics.fmean(x) if x else math.nan for x in g]
            std = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in g]
            ax.errorbar(
                [p + 0.06 * (k - 1.5) for p in x], mean, yerr=std, label=v, marker="o", capsize=3
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, [f"R = {r}" for r in RATIOS])
        ax.set_ylabel("gain over sequential (%)")
        ax.set_title(f"{data}: mean over tasks and SNRs", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_doc(doc: Path, body: list[str]) -> None:
    """Replace the text between the result markers of ``doc`` (create it if missing)."""
    text = doc.read_text() if doc.exists() else f"# Multi-task reproduction\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(head + START + "\n" + "\n".join(body) + "\n" + END + tail)


@dataclass(frozen=True)
class Invocation:
    """What one run of the tool did: the run-time lines of the report."""

    command: str
    planned: int
    trained: int  # cells trained now (the rest were read back)
    jobs: int
    seconds: float  # wall, this invocation

    def lines(self, results: list[dict[str, Any]]) -> list[str]:
        cpu = sum(r.get("cpu_seconds", math.nan) for r in results)
        partial = (
            f"**Partial: {len(results)} of the {self.planned} planned cells are finished**; "
            "the tables and plots show those. "
            if len(results) < self.planned
            else ""
        )
        steps = [
            f"{data} {statistics.median(ms):.0f} ms"
            for data in ("mnist", "patches")
            if (
                ms := [
                    1e3 * r["train_cpu_seconds"] / r["steps"] for r in select(results, data=data)
                ]
            )
        ]
        return [
            f"Generated by `{self.command}`. {partial}{len(results)} cells; CPU time summed over "
            f"them (`time.process_time` per cell: data, training, evaluation) "
            f"**{cpu / 60:.1f} min**, i.e. about **{cpu / 60 / max(self.jobs, 1):.1f} min** wall "
            f"on a quiet machine with `--jobs {max(self.jobs, 1)}`; median CPU per training "
            f"step: {', '.join(steps)}. This invocation trained {self.trained} cells in "
            f"{self.seconds / 60:.1f} min wall on the shared machine (incl. cached cells, the "
            "cost measurement and the plots).",
            "",
        ]


def report(
    results: list[dict[str, Any]],
    budget: Budget,
    cost: list,
    run: Invocation,
    figures: dict[str, Path],
) -> list[str]:
    lines = [
        *run.lines(results),
        f"Budget: `{json.dumps(dataclasses.asdict(budget))}`; SNR drawn uniformly in "
        f"[{min(SNRS):g}, {max(SNRS):g}] dB while training; Adam, cosine schedule; test split "
        f"({budget.test_size} images), channel noise seeded per SNR.",
        "",
    ]
    lines += [f"![{alt}]({path.parent.name}/{path.name})" for alt, path in figures.items()]
    lines.append("")
    lines += main_tables(results, budget)
    lines += extra_tables(results, budget, cost)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny budget, minutes (default: full)")
    p.add_argument(
        "--parts", default="main,m,imbalance,lk,cost", help="comma-separated parts to run"
    )
    p.add_argument("--out", help="cell cache folder (default: runs/multitask-quick or -full)")
    p.add_argument("--doc", default="docs/multitask.md", help="document to write the results into")
    p.add_argument("--jobs", type=int, default=2, help="cells trained in parallel (0: no workers)")
    p.add_argument("--seeds", type=int, help="override the number of seeds (all parts)")
    p.add_argument("--epochs", type=int, help="override the epochs per cell")
    p.add_argument("--train-size", type=int, help="override the training images per cell")
    p.add_argument("--test-size", type=int, help="override the test images per cell")
    p.add_argument(
        "--from-cache",
        action="store_true",
        help="train nothing: report the finished cells of the plan (a partial run)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    budget = QUICK if args.quick else FULL
    overrides = {
        "seeds": args.seeds,
        "imbalance_seeds": args.seeds,
        "epochs": args.epochs,
        "train_size": args.train_size,
        "test_size": args.test_size,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    out = Path(args.out or f"runs/multitask-{'quick' if args.quick else 'full'}")
    start = time.perf_counter()
    cells = plan(budget, parts)
    if args.from_cache:
        results = [r for c in cells if (r := read_cached(c, budget, out)) is not None]
        trained = 0
    else:
        trained = sum(read_cached(c, budget, out) is None for c in cells)
        results = run_cells(cells, budget, out, args.jobs)
    cost = []
    if "cost" in parts:
        tokens = sorted(
            {len(TASKS[d]) * (7 * 7 if d == "mnist" else 8 * 8) for d in budget.datasets}
            | {512, 2048}
        )
        cost = measure_cost(budget.hidden, tokens)
    doc = Path(args.doc)
    img = doc.parent / "img"  # figures named after the document: several reports coexist
    img.mkdir(parents=True, exist_ok=True)
    figures = {}
    for data in budget.datasets:
        if select(results, data=data, channel="awgn"):
            figures[f"{data}: metric vs SNR"] = img / f"{doc.stem}_snr_{data}.png"
            plot_snr(results, data, budget, figures[f"{data}: metric vs SNR"])
    figures["gain over baseline vs R"] = img / f"{doc.stem}_gain.png"
    plot_gain(results, budget.datasets, figures["gain over baseline vs R"])
    command = "python tools/reproduce_multitask.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    run = Invocation(command.strip(), len(cells), trained, args.jobs, time.perf_counter() - start)
    write_doc(doc, report(results, budget, cost, run, figures))
    print(f"wrote {doc} and {img}/{doc.stem}_*.png from {len(results)} cells in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
