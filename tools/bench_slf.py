"""Benchmark SLF: fine-tuning cost per ℓ against full fine-tuning, and update apply time.

1. **Step time and peak memory per ℓ** (both freeze sides) against full fine-tuning
   (ℓ = 0), each with plain autograd and with :func:`sdk.adapt.slf.input_grads_only`
   (frozen Conv/ConvTranspose/Linear keep no input; what ``adapt_slf`` uses), for DeepJSCC
   pairs of two sizes: a tiny one where per-op overhead is a large part of a CPU step, and
   a larger one where the convolutions dominate. All settings of a pair are measured side by side in
   interleaved rounds (median step of each round, then the median over rounds), plain and
   lean alternating, each round starting at another setting, so machine drift hits every
   setting alike.

   **Target** (what freezing can give at best): the step's multiply-accumulates with ℓ
   frozen over those of a full step. Per Conv/Linear: forward, input gradient (unless its
   input needs none: the encoder's first layer) and weight gradient (unless frozen), each
   as many MACs as the forward. The encoder is always trained, so the forward and the
   input gradients through every decoder layer stay: freezing removes only the frozen
   layers' weight gradients. The goal is that time and memory fall at least this much.
   **Memory floor**: parameters + gradients and AdamW state of the trained parameters +
   what the input gradients need: every tensor plain autograd saves except the inputs that
   frozen units alone keep, for their weight gradients (PReLU inputs stay: their gradient
   needs them). Peak memory = the same sum with the tensors a step really saves
   (saved-tensor hooks, deterministic).
2. **Update apply time** for a decoder of >= 5 M parameters with half its layers
   frozen: torch in place (:class:`sdk.delta.TorchDeltas`) and ONNX Runtime (weight
   inputs; rebuild with a cached session), activate and roll back, with the rollback
   checked bit-exact.

    nice python tools/bench_slf.py            # both pairs, short (a few minutes)
    nice python tools/bench_slf.py --pair 32,32,32,9,8 --pair 128,64,32,3,2   # docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdk.adapt.slf import (
    WEIGHT_UNITS,
    SLFConfig,
    _frozen_units,
    _loss,
    _saved_bytes,
    _trainable,
    decoder_layers,
    input_grads_only,
    pair,
    split_layers,
)
from sdk.checkpoint import save_checkpoint
from sdk.delta import TorchDeltas, Update
from sdk.fingerprint import model_fingerprint
from sdk.models import DeepJSCC
from sdk.runtime import Runtime


def step_macs(paired: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Multiply-accumulates of one training step as ``paired`` is frozen now (docstring)."""
    total = 0

    def count(unit: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        # weight [out, in/g, k, k] (Conv, Linear: each output element takes in/g x k x k
        # MACs) or [in, out/g, k, k] (ConvTranspose: each *input* element gives out/g x k x k)
        side = args[0] if isinstance(unit, nn.ConvTranspose2d) else out
        forward = side.numel() * (unit.weight.numel() // unit.weight.shape[0])
        total += forward * (1 + args[0].requires_grad + unit.weight.requires_grad)

    units = [m for m in paired.modules() if isinstance(m, WEIGHT_UNITS)]
    hooks = [m.register_forward_hook(count) for m in units]
    with torch.random.fork_rng():
        _loss(paired, batch, SLFConfig())
    for h in hooks:
        h.remove()
    return total


def needed_saved_bytes(paired: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """What plain autograd saves in one step, less the inputs that only frozen units keep."""
    running: list[int] = []  # input storage of the frozen unit whose forward runs now
    sizes: dict[int, int] = {}
    needed: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        sizes[ptr] = t.untyped_storage().nbytes()
        if not running or running[-1] != ptr:
            needed.add(ptr)
        return t

    def enter(_unit: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        running.append(args[0].untyped_storage().data_ptr())

    def leave(*_: Any) -> None:
        running.pop()

    units = _frozen_units(paired)
    hooks = [m.register_forward_pre_hook(enter) for m in units]
    hooks += [m.register_forward_hook(leave) for m in units]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.random.fork_rng():
        _loss(paired, batch, SLFConfig())
    for h in hooks:
        h.remove()
    params = {p.untyped_storage().data_ptr() for p in paired.parameters()}
    return sum(sizes[ptr] for ptr in needed if ptr not in params)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _timed_step(
    paired: nn.Module, opt: torch.optim.Optimizer, batch: dict, lean: bool, clock: str = "cpu"
) -> float:
    undo = input_grads_only(paired) if lean else None
    start = CLOCKS[clock]()
    loss = _loss(paired, batch, SLFConfig())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    took = CLOCKS[clock]() - start
    if undo:
        undo()
    return took


def step_costs(
    hidden: int, image: int, batch_size: int, rounds: int, steps: int, clock: str = "cpu"
) -> list[dict]:
    """One row per (ℓ, side) of a DeepJSCC pair: time and memory, plain and lean."""
    torch.manual_seed(0)
    kw = dict(in_channels=3, image_size=image, hidden=hidden, num_classes=10)
    tx, rx = DeepJSCC(**kw), DeepJSCC(**kw)
    batch = {
        "image": torch.rand(batch_size, 3, image, image),
        "label": torch.randint(0, 10, (batch_size,)),
    }
    layers = decoder_layers(rx)
    settings = [(0, "output")] + [
        (ell, side) for ell in range(1, len(layers) + 1) for side in ("output", "input")
    ]
    settings = [s for s in settings if not (s[0] == len(layers) and s[1] == "input")]
    states = []
    for ell, side in settings:
        _, tuned = split_layers(layers, ell, side)
        paired = pair(tx, rx)
        params = _trainable(paired, tuned)
        opt = torch.optim.AdamW(params, lr=1e-3)
        _timed_step(paired, opt, batch, lean=False)  # warm-up; AdamW state exists from here
        states.append((ell, side, paired, opt, params))
    modes = (False, True)
    times: dict[tuple, list[float]] = {(s[0], s[1], m): [] for s in states for m in modes}
    for r in range(rounds):  # each round starts elsewhere, so no setting always runs first
        for ell, side, paired, opt, _ in states[r % len(states) :] + states[: r % len(states)]:
            for lean in modes[r % 2 :] + modes[: r % 2]:
                runs = [_timed_step(paired, opt, batch, lean, clock) for _ in range(steps)]
                times[(ell, side, lean)].append(statistics.median(runs))
    rows = []
    for ell, side, paired, _, params in states:
        fixed = sum(p.numel() * 4 for p in paired.parameters()) + 3 * sum(
            p.numel() * 4 for p in params
        )
        undo = input_grads_only(paired)
        lean_saved = _saved_bytes(paired, batch, SLFConfig())
        undo()
        rows.append(
            {
                "freeze": ell,
                "side": side,
                "ms": [1e3 * statistics.median(times[(ell, side, m)]) for m in modes],
                "macs": step_macs(paired, batch),
                "mib": [
                    (fixed + _saved_bytes(paired, batch, SLFConfig())) / 2**20,
                    (fixed + lean_saved) / 2**20,
                ],
                "floor_mib": (fixed + needed_saved_bytes(paired, batch)) / 2**20,
            }
        )
    full = rows[0]
    for r in rows:
        r["time_vs_full"] = [ms / full["ms"][0] for ms in r["ms"]]
        r["target"] = r["macs"] / full["macs"]
        r["mem_vs_full"] = [mib / full["mib"][0] for mib in r["mib"]]
        r["floor_vs_full"] = r["floor_mib"] / full["mib"][0]
    return rows


def lean_overhead_us(reps: int = 20, steps: int = 50) -> tuple[float, float]:
    """CPU µs of forward + backward through one small frozen ConvTranspose2d (DeepJSCC's
    decoder at hidden 32, batch 1), plain and lean: the Python cost of the autograd function."""
    unit = nn.ConvTranspose2d(32, 32, 5, 1, padding=2).requires_grad_(False)
    x = torch.randn(1, 32, 8, 8, requires_grad=True)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(reps):
        for lean in (False, True):
            undo = input_grads_only(unit) if lean else None
            took = []
            for _ in range(steps):
                start = time.process_time()
                unit(x).sum().backward()
                took.append(time.process_time() - start)
            runs[lean].append(statistics.median(took))
            if undo:
                undo()
    return 1e6 * statistics.median(runs[False]), 1e6 * statistics.median(runs[True])


def _toggle(target: Any, reps: int) -> dict[str, Any]:
    """First activation, then median activate / rollback over ``reps`` (``target`` has the
    adapter verbs: a :class:`TorchDeltas` or a :class:`Runtime`)."""
    t = time.perf_counter()
    target.activate("bench")
    first = time.perf_counter() - t
    target.deactivate()
    on, off = [], []
    for _ in range(reps):
        t = time.perf_counter()
        target.activate("bench")
        on.append(time.perf_counter() - t)
        t = time.perf_counter()
        target.deactivate()
        off.append(time.perf_counter() - t)
    return {
        "first_activate_ms": 1e3 * first,
        "activate_ms": 1e3 * statistics.median(on),
        "rollback_ms": 1e3 * statistics.median(off),
    }


def apply_times(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    rx = DeepJSCC(in_channels=3, image_size=32, hidden=args.big_hidden, num_classes=10).eval()
    decoder = sum(p.numel() for p in rx.receiver.parameters())
    layers = decoder_layers(rx)
    _, tuned = split_layers(layers, len(layers) // 2, "output")
    rng = np.random.default_rng(0)
    params = dict(rx.named_parameters())
    entries = {
        n: rng.standard_normal(tuple(params[n].shape)).astype(np.float32)
        for lay in tuned
        for n in lay.params
    }
    base = model_fingerprint(rx)
    update = Update("bench", base, base, entries, len(layers) // 2, "output")
    out: dict[str, Any] = {
        "decoder_params": decoder,
        "update_params": sum(v.size for v in entries.values()),
        "update_bytes": update.nbytes,
    }
    adapters = TorchDeltas(copy.deepcopy(rx))
    adapters.load(update)
    out["torch"] = _toggle(adapters, args.reps)
    out["torch"]["rollback_exact"] = model_fingerprint(adapters.model) == base
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(rx, Path(tmp) / "rx")
        x = rx.transmitter(torch.rand(2, 3, 32, 32)).detach().numpy()
        for mode, opts in (
            ("onnxrt-inputs", dict(delta_targets="decoder")),
            ("onnxrt-rebuild", dict(delta_targets="decoder", delta_mode="rebuild")),
        ):
            with Runtime.load(ckpt, backend="onnxrt", part="receiver", **opts) as rt:
                before = rt.infer(x)["recon"]
                rt.load_change(update)
                out[mode] = _toggle(rt, args.reps)
                out[mode]["rollback_exact"] = bool(np.array_equal(rt.infer(x)["recon"], before))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--pair",
        action="append",
        metavar="HIDDEN,IMAGE,BATCH,ROUNDS,STEPS",
        help="a DeepJSCC pair to measure per ℓ, and its rounds x steps per setting and mode "
        "(repeatable; default: 32,32,32,5,5 and 128,64,16,3,1)",
    )
    p.add_argument("--big-hidden", type=int, default=256, help="width of the apply-time model")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-apply", action="store_true", help="step costs only")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="step time as the process's CPU time (default: on a shared machine, the time a "
        "1-thread step computes, without waiting for other jobs) or wall time",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.pair or ["32,32,32,5,5", "128,64,16,3,1"]:
        hidden, image, batch, rounds, steps = (int(v) for v in spec.split(","))
        rows = step_costs(hidden, image, batch, rounds, steps, args.clock)
        print(
            f"\nDeepJSCC 3x{image}x{image}, hidden {hidden}, batch {batch}: full step "
            f"{rows[0]['ms'][0]:.1f} ms ({args.clock}), {rows[0]['mib'][0]:.2f} MiB "
            f"({rounds} rounds x {steps} steps per setting and mode)"
        )
        print(
            "| ℓ | side | time plain | time lean | target | mem plain | mem lean | "
            "mem floor | step ms plain / lean | peak MiB plain / lean |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['freeze']} | {r['side']} | {r['time_vs_full'][0]:.2f} | "
                f"{r['time_vs_full'][1]:.2f} | {r['target']:.2f} | {r['mem_vs_full'][0]:.2f} | "
                f"{r['mem_vs_full'][1]:.2f} | {r['floor_vs_full']:.2f} | "
                f"{r['ms'][0]:.1f} / {r['ms'][1]:.1f} | {r['mib'][0]:.2f} / {r['mib'][1]:.2f} |"
            )
    plain_us, lean_us = lean_overhead_us()
    print(
        f"\none frozen ConvTranspose2d 32->32 5x5 at 1x32x8x8, forward + backward: "
        f"plain {plain_us:.0f} us, lean {lean_us:.0f} us (CPU)"
    )
    if args.no_apply:
        return 0
    result = apply_times(args)
    print(
        f"\nupdate apply: decoder {result['decoder_params']:,} params, update "
        f"{result['update_params']:,} params ({result['update_bytes'] / 2**20:.1f} MiB)"
    )
    print("| backend | first activate ms | activate ms | rollback ms | rollback bit-exact |")
    print("|---|---|---|---|---|")
    for key in ("torch", "onnxrt-inputs", "onnxrt-rebuild"):
        r = result[key]
        print(
            f"| {key} | {r['first_activate_ms']:.2f} | "
            f"{r['activate_ms']:.3f} | {r['rollback_ms']:.3f} | {r['rollback_exact']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
