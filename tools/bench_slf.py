"""Benchmark SLF: fine-tuning cost per ℓ against full fine-tuning, and update apply time.

1. **Step time and peak memory per ℓ** (both freeze sides) for one DeepJSCC pair,
   measured side by side in interleaved rounds (median step of each round, then the
   median over rounds) so machine drift hits every ℓ alike. Next to each: the
   *proportional target*, what the step would cost if time fell exactly with the frozen
   share of the work — ``1 - frozen weight-gradient MACs / all MACs of a step`` (a step
   is ~3x the forward MACs: forward, input gradients, weight gradients). The encoder is
   still trained, so input gradients flow through every decoder layer: only frozen
   layers' weight gradients (and their optimiser state) can be saved, and the floor
   with the whole decoder frozen is forward + input gradients + the encoder's weight
   gradients.
2. **Update apply time** for a decoder of >= 5 M parameters with half its layers
   frozen: torch in place (:class:`sdk.delta.TorchDeltas`) and ONNX Runtime (weight
   inputs; rebuild with a cached session), activate and roll back, with the rollback
   checked bit-exact.

    nice python tools/bench_slf.py            # numbers go to docs/benchmarks.md
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
    SLFConfig,
    _loss,
    _saved_bytes,
    _trainable,
    decoder_layers,
    pair,
    split_layers,
)
from sdk.checkpoint import save_checkpoint
from sdk.delta import TorchDeltas, Update
from sdk.fingerprint import model_fingerprint
from sdk.models import DeepJSCC
from sdk.runtime import Runtime


def layer_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Forward multiply-accumulates per Conv/Linear module (output elements x fan-in)."""
    macs: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            fan_in = m.weight.numel() // (
                m.out_features if isinstance(m, nn.Linear) else m.out_channels
            )

            def hook(
                mod: nn.Module, _i: Any, out: torch.Tensor, name: str = name, fan_in: int = fan_in
            ) -> None:
                macs[name] = out.numel() * fan_in

            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x, 10.0)
    for h in hooks:
        h.remove()
    return macs


def step_costs(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    kw = dict(in_channels=3, image_size=32, hidden=args.hidden, num_classes=10)
    tx, rx = DeepJSCC(**kw), DeepJSCC(**kw)
    x = torch.rand(args.batch, 3, 32, 32)
    batch = {"image": x, "label": torch.randint(0, 10, (args.batch,))}
    layers = decoder_layers(rx)
    macs = layer_macs(pair(tx, rx), x)
    total = sum(macs.values())
    settings = [(0, "output")] + [
        (ell, side) for ell in range(1, len(layers) + 1) for side in ("output", "input")
    ]
    settings = [s for s in settings if not (s[0] == len(layers) and s[1] == "input")]
    states = []
    for ell, side in settings:
        frozen, tuned = split_layers(layers, ell, side)
        paired = pair(tx, rx)
        params = _trainable(paired, tuned)
        opt = torch.optim.AdamW(params, lr=1e-3)
        frozen_macs = sum(
            v
            for k, v in macs.items()
            if any(p.startswith(k + ".") for lay in frozen for p in lay.params)
        )
        states.append((ell, side, paired, opt, params, frozen_macs))
    config = SLFConfig(progress=False)
    times: dict[tuple[int, str], list[float]] = {(s[0], s[1]): [] for s in states}
    for _ in range(args.rounds):
        for ell, side, paired, opt, _, _ in states:
            steps = []
            for _ in range(args.steps):
                start = time.perf_counter()
                loss = _loss(paired, batch, config)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps.append(time.perf_counter() - start)
            times[(ell, side)].append(statistics.median(steps))
    rows = []
    full = statistics.median(times[(0, "output")])
    for ell, side, paired, _, params, frozen_macs in states:
        saved = _saved_bytes(paired, batch, config)
        param_bytes = sum(p.numel() * 4 for p in paired.parameters())
        trained = sum(p.numel() * 4 for p in params)
        step = statistics.median(times[(ell, side)])
        rows.append(
            {
                "freeze": ell,
                "side": side,
                "step_ms": 1e3 * step,
                "step_vs_full": step / full,
                "target_vs_full": 1 - frozen_macs / (3 * total),
                "peak_mib": (param_bytes + 3 * trained + saved) / 2**20,
                "trained_params": trained // 4,
            }
        )
    full_mem = rows[0]["peak_mib"]
    for r in rows:
        r["mem_vs_full"] = r["peak_mib"] / full_mem
    return rows


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
    p.add_argument("--hidden", type=int, default=32, help="width of the step-time pair")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="steps per round and setting")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--big-hidden", type=int, default=256, help="width of the apply-time model")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("| ℓ | side | step ms | step / full | proportional target | peak MiB | mem / full |")
    print("|---|---|---|---|---|---|---|")
    for r in step_costs(args):
        print(
            f"| {r['freeze']} | {r['side']} | {r['step_ms']:.1f} | {r['step_vs_full']:.2f} | "
            f"{r['target_vs_full']:.2f} | {r['peak_mib']:.2f} | {r['mem_vs_full']:.2f} |"
        )
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
