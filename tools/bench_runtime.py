"""Benchmark: ONNX Runtime vs torch eager latency, and delta-switching modes per backend.

Part 1 — for every registered model family (default config, 32x32x3 input, the whole
noiseless chain): median latency at batch 1 and batch 32 of the ``onnxrt`` backend and
of torch eager, measured interleaved in one run, and their ratio (goal: onnxrt <= 0.7x
torch at batch 1).

Part 2 — a DeepJSCC receiver with >= 5 M parameters (``--hidden 256``: 10 M) and a
ZFDA-like delta (``--density`` of every decoder Conv/Linear weight, random positions).
For each switching mode: median switch time (activate A <-> B) and steady-state batch-1
latency with a delta active relative to the constant-weight session (goal: switch
<= 1 ms, latency <= 1.2x). Modes: ``inputs`` with every decoder tensor as a graph input
(``--delta-targets decoder``), ``inputs`` with only the tensors the delta touches
(``--delta-targets FILE``), ``rebuild`` (one cached constant-weight session per delta,
built by ``preload_delta``), ``shared``, and torch in place. Both deltas are preloaded
first (time reported), then 60 switches alternate between them. After the run every
mode is deactivated and checked bit-exact against its own base output.

Usage::

    python tools/bench_runtime.py [--threads 1] [--repeats 30] [--hidden 256]
        [--plot docs/img/bench_runtime.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sdk import Runtime
from sdk.build import build
from sdk.checkpoint import load_checkpoint, save_checkpoint
from sdk.delta import Delta, DeltaEntry, load_delta, save_delta
from sdk.fingerprint import model_fingerprint
from sdk.models import DeepJSCC, available_models, build_model


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each function, calls interleaved so load drifts hit all."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def families(work: Path, threads: int, repeats: int) -> list[dict[str, object]]:
    rows = []
    for family in tqdm(available_models(), desc="families", file=sys.stderr):
        torch.manual_seed(0)
        ckpt = save_checkpoint(build_model(family).eval(), work / family)
        rt_torch = Runtime.load(ckpt)
        rt_ort = Runtime.load(ckpt, backend="onnxrt", threads=threads)
        params = sum(p.numel() for p in load_checkpoint(ckpt).parameters())
        for batch in (1, 32):
            x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
            n = repeats if batch == 1 else max(5, repeats // 4)
            calls = {"torch": rt_torch, "onnxrt": rt_ort}
            t = interleaved({k: (lambda rt=rt, x=x: rt.infer(x)) for k, rt in calls.items()}, n)
            rows.append(
                {
                    "family": family,
                    "params": params,
                    "batch": batch,
                    "torch_ms": t["torch"],
                    "onnxrt_ms": t["onnxrt"],
                    "ratio": t["onnxrt"] / t["torch"],
                }
            )
        rt_torch.close()
        rt_ort.close()
    return rows


def make_delta(model: DeepJSCC, density: float, domain: str, seed: int, path: Path) -> Path:
    rng = np.random.default_rng(seed)
    entries = {}
    for name, p in model.named_parameters():
        if name.startswith("receiver.") and name.endswith("weight") and p.dim() >= 2:
            count = max(1, int(p.numel() * density))
            idx = np.sort(rng.choice(p.numel(), count, replace=False)).astype(np.int64)
            vals = rng.normal(0, 0.01, count).astype(np.float16)
            entries[name] = DeltaEntry(idx, vals, tuple(p.shape))
    return save_delta(Delta(domain, model_fingerprint(model), 1 - density, entries), path)


def switching(work: Path, hidden: int, density: float, threads: int, repeats: int) -> dict:
    """Switch time and steady latency per mode on a big DeepJSCC receiver (module docstring)."""
    torch.manual_seed(0)
    model = DeepJSCC(hidden=hidden).eval()
    ckpt = save_checkpoint(model, work / "big")
    deltas = [
        make_delta(model, density, d, i, work / f"{d}.delta.safetensors")
        for i, d in enumerate(("hue", "rotation"))
    ]
    common = {"backend": "onnxrt", "part": "receiver"}
    const = build(ckpt, work / "const", **common)
    side = build(ckpt, work / "side", delta_targets="decoder", **common)
    subset = build(ckpt, work / "subset", delta_targets=str(deltas[0]), **common)
    torch.set_num_threads(threads)
    runtimes = {
        "const": Runtime.load(const, threads=threads),
        "inputs (all decoder tensors)": Runtime.load(side, threads=threads),
        "inputs (delta's tensors only)": Runtime.load(subset, threads=threads),
        "rebuild": Runtime.load(const, delta_mode="rebuild", threads=threads),
        "shared": Runtime.load(const, delta_mode="shared", threads=threads),
        "torch in place": Runtime.load(ckpt, part="receiver"),
    }
    with torch.no_grad():
        z = model.transmitter(torch.rand(1, 3, 32, 32)).numpy()
    base = {k: rt.infer(z)["recon"] for k, rt in runtimes.items()}
    switchable = {k: rt for k, rt in runtimes.items() if k != "const"}
    switch_ms, preload_ms = {}, {}
    for name, rt in tqdm(switchable.items(), desc="switch", file=sys.stderr):
        start = time.perf_counter()
        for delta in deltas:
            rt.preload_delta(delta)
        preload_ms[name] = (time.perf_counter() - start) * 1e3 / len(deltas)
        times = []
        for i in range(60):
            rt.activate_delta(deltas[i % 2])
            times.append(rt.last_switch_ms)
        switch_ms[name] = statistics.median(times)
        rt.activate_delta(deltas[0])
    onnx_modes = {k: rt for k, rt in runtimes.items() if k != "torch in place"}
    latency = interleaved({k: (lambda rt=rt: rt.infer(z)) for k, rt in onnx_modes.items()}, repeats)
    latency["torch in place"] = interleaved(
        {"t": lambda: runtimes["torch in place"].infer(z)}, max(5, repeats // 6)
    )["t"]
    exact = {}
    for name, rt in switchable.items():
        rt.deactivate_delta()
        exact[name] = bool(np.array_equal(rt.infer(z)["recon"], base[name]))
    nnz = sum(len(e.indices) for e in load_delta(deltas[0]).entries.values())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "receiver_params": sum(p.numel() for p in model.receiver.parameters()),
        "nnz": nnz,
        "switch_ms": switch_ms,
        "preload_ms": preload_ms,
        "latency_ms": latency,
        "exact": exact,
    }


def layer_costs(threads: int, repeats: int, channels: int = 256) -> list[dict]:
    """Batch-1 latency of one 5x5 layer with a constant vs a graph-input weight (ms)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((channels, channels, 5, 5)) * 0.01).astype(np.float32)
    x = rng.random((1, channels, 8, 8), dtype=np.float32)
    rows = []
    for op in ("Conv", "ConvTranspose"):
        for stride in (1, 2):
            attrs = {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2], "strides": [stride] * 2}
            if op == "ConvTranspose" and stride == 2:
                attrs["output_padding"] = [1, 1]
            runs = {}
            for weight_input in ("const", "input"):
                inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
                if weight_input == "input":
                    shape = list(weight.shape)
                    inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, shape))
                graph = helper.make_graph(
                    [helper.make_node(op, ["x", "w"], ["y"], **attrs)],
                    "layer",
                    inputs,
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                    [numpy_helper.from_array(weight, "w")],
                )
                model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.log_severity_level = 4
                sess = ort.InferenceSession(model.SerializeToString(), so, ["CPUExecutionProvider"])
                feed = {"x": x, "w": weight} if weight_input == "input" else {"x": x}
                runs[weight_input] = lambda s=sess, f=feed: s.run(None, f)
            times = interleaved(runs, repeats)
            rows.append({"op": op, "stride": stride, **times})
    return rows


def plot(fam: list[dict], sw: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    labels = [f"{r['family']}\nB={r['batch']}" for r in fam]
    axes[0].bar(labels, [r["ratio"] for r in fam], color="tab:blue")
    axes[0].axhline(0.7, color="tab:red", ls="--", label="goal (batch 1)")
    axes[0].set_ylabel("onnxrt / torch eager latency")
    axes[0].legend()
    modes = list(sw["switch_ms"])
    axes[1].barh(modes, [sw["switch_ms"][m] for m in modes], color="tab:orange")
    axes[1].axvline(1.0, color="tab:red", ls="--", label="goal 1 ms")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("switch time (ms, log)")
    axes[1].legend()
    const = sw["latency_ms"]["const"]
    onnx = [m for m in modes if m != "torch in place"]
    axes[2].barh(onnx, [sw["latency_ms"][m] / const for m in onnx], color="tab:green")
    axes[2].axvline(1.2, color="tab:red", ls="--", label="goal 1.2x")
    axes[2].set_xlabel("batch-1 latency / constant-weight session")
    axes[2].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both (1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per case (30)")
    parser.add_argument("--hidden", type=int, default=256, help="switching model width (256)")
    parser.add_argument("--density", type=float, default=0.01, help="delta density (0.01)")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/bench_runtime.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        fam = families(Path(tmp), args.threads, args.repeats)
        sw = switching(Path(tmp), args.hidden, args.density, args.threads, args.repeats)
        layers = layer_costs(args.threads, args.repeats)
    print("| family | params | batch | torch eager ms | onnxrt ms | onnxrt / torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in fam:
        print(
            f"| {r['family']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['torch_ms']:.2f} |"
            f" {r['onnxrt_ms']:.2f} | {r['ratio']:.2f} |"
        )
    print(
        f"\nswitching model: DeepJSCC hidden={args.hidden}, {sw['params'] / 1e6:.2f} M parameters"
        f" ({sw['receiver_params'] / 1e6:.2f} M in the receiver); delta: {sw['nnz']} entries"
        f" ({args.density:.1%} of every decoder Conv/Linear weight)\n"
    )
    const = sw["latency_ms"]["const"]
    print(
        "| mode | preload ms / delta | switch ms (median) | batch-1 latency ms | vs constant |"
        " base bit-exact after |"
    )
    print("|---|---:|---:|---:|---:|---|")
    print(f"| const (no switching) | - | - | {const:.2f} | 1.00 | - |")
    for mode, ms in sw["switch_ms"].items():
        lat = sw["latency_ms"][mode]
        ratio = "n/a (torch)" if mode == "torch in place" else f"{lat / const:.2f}"
        print(
            f"| {mode} | {sw['preload_ms'][mode]:.1f} | {ms:.3f} | {lat:.2f} | {ratio} |"
            f" {sw['exact'][mode]} |"
        )
    print("\none 5x5 layer, 256 -> 256 channels, 8x8 input, batch 1 (onnxrt):\n")
    print("| op | stride | constant weight ms | weight as graph input ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for r in layers:
        print(
            f"| {r['op']} | {r['stride']} | {r['const']:.2f} | {r['input']:.2f} |"
            f" {r['input'] / r['const']:.2f} |"
        )
    plot(fam, sw, args.plot)
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
