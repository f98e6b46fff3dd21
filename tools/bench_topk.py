"""Benchmark: the top-K memory op vs dense cross-attention among the n tokens (CPU).

For n in ``--sizes`` (default 1k, 4k, 16k), d=128, L=16 queries, K=64, batch 1, in one run:

* ``topk torch``: :func:`sdk.models.kem.topk_attention`, which selects with the C++ library
  of :mod:`kernels.cpu` where it builds;
* ``topk torch stock``: the same with ``SEMEDGE_NATIVE_TOPK=0`` (selection by torch.topk);
* ``topk onnxrt``: the same op as an ONNX graph of standard ops (Gemm, TopK, Softmax, Gather,
  MatMul; :func:`kernels.onnx_graphs.standard_graph`), run by ONNX Runtime;
* ``dense``: full attention of the n tokens with each other (n×n,
  ``torch.nn.functional.scaled_dot_product_attention``, which never holds all n×n scores);
* ``matmul``: the fp32 GEMM of the scores alone — this CPU's matmul rate at the same size: the
  fastest of torch ``q[L,d] @ k^T[d,n]``, torch ``k[n,d] @ q^T[d,L]``, torch's 1x1
  convolution of ``k`` by ``q`` (oneDNN; what the torch path runs at n >= 8k) and ONNX
  Runtime's ``MatMul`` of ``k @ q^T`` (they differ up to 2.5x here; the best one is the bar).

Every path and the matmul bar are timed in interleaved rounds (a block of calls each, in
turn, after 20 ms of untimed calls; per path the block median of the quietest round), so a
machine that slows down mid-run slows them all alike. Reported: median times, dense/top-K speed-up
(goal ≥ 300× at 16k), t(16k)/t(4k) (goal ≤ 4.5), achieved GFLOP/s of the op
(2·L·n·d + 2·L·K·d FLOPs) as a fraction of the matmul rate (goal ≥ 40 %), and a Jetson AGX
Orin roofline of the op. With ``--traffic`` the roofline's kernel row is the CUDA kernels'
global-memory bytes as counted by the CPU emulation (every load and store the kernels make,
``kernels/emulation/traffic.h``; several minutes at 16k), beside the ideal (goal ≤ 2×);
``--traffic-only`` prints just that. Usage::

    python tools/bench_topk.py [--sizes 1024 4096 16384] [--repeats 30] [--threads 2]
        [--plot docs/img/bench_topk.png] [--traffic | --traffic-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from tqdm import tqdm

from kernels.onnx_graphs import standard_graph
from sdk.models.kem import topk_attention

D, L, TOPK = 128, 16, 64
ROUNDS = 10
WARM_MS = 20.0
# Jetson AGX Orin 64GB: 2048 CUDA cores x 1.3 GHz x 2 = 5.3 TFLOPS fp32, 10.6 fp16 (CUDA cores,
# no tensor cores); LPDDR5 256-bit 204.8 GB/s.
ORIN = {"fp32_tflops": 5.3, "fp16_tflops": 10.6, "dram_gbps": 204.8}


def op_flops(n: int) -> int:
    """Scores (2·L·n·d) + weighted sum (2·L·K·d); selection and softmax are not counted."""
    return 2 * L * n * D + 2 * L * TOPK * D


def counted_bytes(n: int, dtype: Any) -> int:
    """Global-memory bytes (loads + stores) of the CUDA kernels at the benchmark's shape,
    counted by the byte-counting CPU emulation built with the GPU's compile-time sizes."""
    from kernels.build import TOPK_BLOCK, build_emulation, cache_dir, private_dir
    from kernels.emulated import EmulatedKernels

    library = build_emulation(private_dir(cache_dir()), TOPK_BLOCK, 256, count_bytes=True)
    kernels = EmulatedKernels(library)
    rng = np.random.default_rng(n)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, L, D), (1, n, D), (1, n, D)))
    kernels.topk_memory(q, k, v, TOPK)
    return sum(kernels.traffic())


def orin_roofline(n: int, itemsize: int, kernel_bytes: int | None = None) -> dict[str, float]:
    """Lower-bound time on Orin: max(FLOPs / peak, bytes / bandwidth).

    ``ideal`` bytes read k once (L queries share it), the K kept rows of v per query, q and
    out. ``kernel_bytes`` (when given) are what the CUDA kernels load and store, counted by
    the emulation (:func:`counted_bytes`) — no hand model.
    """
    ideal = itemsize * (n * D + L * TOPK * D + 2 * L * D)
    peak = ORIN["fp32_tflops" if itemsize == 4 else "fp16_tflops"] * 1e12
    flops = op_flops(n)
    row = {
        "flops": flops,
        "ideal_bytes": ideal,
        "ideal_us": 1e6 * max(flops / peak, ideal / (ORIN["dram_gbps"] * 1e9)),
    }
    if kernel_bytes is not None:
        row["kernel_bytes"] = kernel_bytes
        row["kernel_over_ideal"] = kernel_bytes / ideal
        row["kernel_us"] = 1e6 * max(flops / peak, kernel_bytes / (ORIN["dram_gbps"] * 1e9))
    return row


def roofline(sizes: list[int], traffic: bool) -> dict[int, dict[str, dict[str, float]]]:
    """Orin roofline per size and storage type; kernel bytes counted when ``traffic``."""
    table: dict[int, dict[str, dict[str, float]]] = {}
    for n in tqdm(sizes, desc="roofline", disable=not traffic):
        table[n] = {
            name: orin_roofline(n, size, counted_bytes(n, dtype) if traffic else None)
            for name, size, dtype in (("fp32", 4, np.float32), ("fp16", 2, np.float16))
        }
    return table


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """ms per call of each fn: ``ROUNDS`` rounds, each timing a block of every fn.

    Per fn, the median of each block, then the smallest over the rounds: the block in the
    quietest stretch (as ``timeit`` advises: slower ones measure other processes).

    Each block starts with ``WARM_MS`` of untimed calls: after one runtime's parallel work its
    idle threads keep a core busy for a few ms (measured: ONNX Runtime's MatMul took 0.7-0.9
    ms for its first ~8 calls after torch ran, then 0.45), which would bill the next path.
    """
    per_block = max(1, repeats // ROUNDS)
    blocks: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            warm_until = time.perf_counter() + WARM_MS / 1e3
            fn()
            while time.perf_counter() < warm_until:
                fn()
            times = []
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            blocks[name].append(statistics.median(times))
    return {name: min(medians) for name, medians in blocks.items()}


def stock_selection(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with the torch path's C++ selection switched off (torch.topk instead)."""

    def call() -> object:
        before = os.environ.get("SEMEDGE_NATIVE_TOPK")
        os.environ["SEMEDGE_NATIVE_TOPK"] = "0"
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["SEMEDGE_NATIVE_TOPK"]
            else:
                os.environ["SEMEDGE_NATIVE_TOPK"] = before

    return call


def scores_graph(n: int) -> bytes:
    """ONNX ``MatMul`` of ``k[n,d] @ qT[d,L]``: ONNX Runtime's GEMM rate at the op's size."""
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [n, D])
    qt = helper.make_tensor_value_info("qt", TensorProto.FLOAT, [D, L])
    out = helper.make_tensor_value_info("s", TensorProto.FLOAT, [n, L])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["k", "qt"], ["s"])], "mm", [k, qt], [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def measure(n: int, repeats: int, threads: int) -> dict[str, float]:
    """One size: medians (ms) of every path, checked against the numpy reference first."""
    from kernels.reference import REFERENCES

    rng = np.random.default_rng(n)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, L, D), (1, n, D), (1, n, D)))
    want, _ = REFERENCES["topk_memory"](q, k, v, TOPK)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no stolen cores
    session = ort.InferenceSession(
        standard_graph(L, n, D, TOPK).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    mm_session = ort.InferenceSession(scores_graph(n), options, providers=["CPUExecutionProvider"])
    mm_feeds = {"k": k[0], "qt": np.ascontiguousarray(q[0].T)}
    feeds = {"q": q, "k": k, "v": v}
    np.testing.assert_allclose(session.run(None, feeds)[0], want, atol=1e-5)
    tq, tk, tv = map(torch.from_numpy, (q, k, v))
    ktn, qtn = tk[0].T.contiguous(), tq[0].T.contiguous()
    row: dict[str, float] = {"n": n}
    fns: dict[str, Callable[[], object]] = {
        "topk_onnxrt_ms": lambda: session.run(None, feeds),
        "matmul_torch_qk_ms": lambda: torch.mm(tq[0], ktn),
        "matmul_torch_kq_ms": lambda: torch.mm(tk[0], qtn),
        "matmul_onnxrt_kq_ms": lambda: mm_session.run(None, mm_feeds),
    }
    pixels, kernel = tk.view(1, n, 1, D).permute(0, 3, 1, 2), tq.reshape(L, D, 1, 1)
    fns["matmul_torch_conv_ms"] = lambda: torch.nn.functional.conv2d(pixels, kernel)
    fns["topk_torch_ms"] = lambda: topk_attention(tq, tk, tv, TOPK)
    fns["topk_torch_stock_ms"] = stock_selection(fns["topk_torch_ms"])
    with torch.no_grad():
        for path in ("topk_torch_ms", "topk_torch_stock_ms"):
            np.testing.assert_allclose(np.asarray(fns[path]()), want, atol=1e-5)
    tokens = tk[None]  # [1, 1, n, d]: every token attends to every token
    with torch.no_grad():
        row.update(interleaved_ms(fns, repeats))
        row["matmul_ms"] = min(v for key, v in row.items() if key.startswith("matmul_"))
        row.update(  # ~1 s a call at 16k: timed on its own, a tenth of the calls
            interleaved_ms(
                {
                    "dense_ms": lambda: torch.nn.functional.scaled_dot_product_attention(
                        tokens, tokens, tokens
                    )
                },
                max(ROUNDS, repeats // 10),
            )
        )
    return row


def summarise(rows: list[dict[str, float]], traffic: bool = False) -> dict[str, Any]:
    paths = [p for p in ("topk_torch", "topk_torch_stock", "topk_onnxrt") if f"{p}_ms" in rows[0]]
    for row in rows:
        n = int(row["n"])
        matmul_gflops = 2 * L * n * D / row["matmul_ms"] / 1e6
        row["matmul_gflops"] = matmul_gflops
        for p in paths:
            gflops = op_flops(n) / row[f"{p}_ms"] / 1e6
            row[f"{p}_gflops"] = gflops
            row[f"{p}_fraction_of_matmul"] = gflops / matmul_gflops
            row[f"{p}_speedup_vs_dense"] = row["dense_ms"] / row[f"{p}_ms"]
    by_n = {int(r["n"]): r for r in rows}
    scaling = {
        p: by_n[16384][f"{p}_ms"] / by_n[4096][f"{p}_ms"]
        for p in paths
        if 4096 in by_n and 16384 in by_n
    }
    return {
        "rows": rows,
        "t16k_over_t4k": scaling,
        "orin": roofline(list(by_n), traffic),
    }


def plot(rows: list[dict[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in rows]
    for key in ("topk_torch_ms", "topk_torch_stock_ms", "topk_onnxrt_ms", "dense_ms", "matmul_ms"):
        if key in rows[0]:
            ax.loglog(ns, [r[key] for r in rows], "o-", label=key[:-3])
    ax.set_xlabel("tokens n")
    ax.set_ylabel("time per call (ms, quietest round)")
    ax.set_title(f"top-K memory (L={L}, d={D}, K={TOPK}) vs dense attention, CPU")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per path and size")
    parser.add_argument("--threads", type=int, default=2, help="torch / ORT intra-op threads")
    parser.add_argument("--plot", help="write a PNG of time vs n")
    parser.add_argument("--json", help="write the results as JSON")
    parser.add_argument(
        "--traffic", action="store_true", help="count the CUDA kernels' bytes (emulation)"
    )
    parser.add_argument(
        "--traffic-only", action="store_true", help="only the counted roofline, no CPU timing"
    )
    args = parser.parse_args(argv)
    if args.traffic_only:
        result: dict[str, Any] = {"orin": roofline(args.sizes, traffic=True)}
    else:
        torch.set_num_threads(args.threads)
        rows = [measure(n, args.repeats, args.threads) for n in tqdm(args.sizes, desc="sizes")]
        result = summarise(rows, args.traffic)
        for row in rows:
            print(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
        print("t(16k)/t(4k):", {k: round(v, 2) for k, v in result["t16k_over_t4k"].items()})
        if args.plot:
            plot(rows, args.plot)
    for n, roof in result["orin"].items():
        print(
            f"orin n={n}:",
            json.dumps({p: {k: round(x, 2) for k, x in r.items()} for p, r in roof.items()}),
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
