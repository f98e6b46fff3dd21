"""Validate the CUDA kernels and the TopKMemory TensorRT plugin on a Jetson: one command.

Steps: (1) build the fatbins with nvcc (sm_87/sm_110/compute_87) and check ptxas' report for
spills/local memory; (2) build the plugin ``libsemedge_plugins.so`` against the TensorRT
headers; (3) run both kernels through pycuda on random inputs and edge cases against the
numpy references (top-K: same kept indices, |err| ≤ 1e-5 fp32 / 2e-3 fp16 — the GPU's
``expf`` may differ from glibc's by an ulp; delta: bit-exact apply and restore) and time
them with CUDA events; (4) build TensorRT engines from a one-node ``TopKMemory`` ONNX (fp32
and fp16), run them against the reference and — fp32, batch 1 — ONNX Runtime on the
standard-op graph, and time them; (5) write everything to a JSON report.

Usage::

    python tools/validate_on_device.py [--out validate_report.json] [--work DIR] [--dry-run]

Without a GPU, pycuda, TensorRT or nvcc it stops at once with one line naming what is
missing; ``--dry-run`` prints the plan and what this machine has, and builds nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kernels.build import build_fatbins, build_plugin, find_tensorrt_include
from kernels.onnx_graphs import plugin_graph, standard_graph
from kernels.reference import REFERENCES
from sdk.files import write_text

TOPK_CASES = [  # (batch, L, n, d, topk, dtype)
    (1, 16, 1024, 128, 64, np.float32),
    (1, 16, 4096, 128, 64, np.float32),
    (1, 16, 16384, 128, 64, np.float32),
    (2, 16, 16384, 128, 64, np.float16),
    (1, 4, 65536, 64, 64, np.float32),
    (1, 4, 65536, 64, 300, np.float32),  # global-workspace fallback (topk > 256)
    (1, 3, 100, 8, 1, np.float32),  # K = 1
    (1, 3, 100, 8, 100, np.float16),  # K = n
    (3, 5, 1000, 33, 257, np.float32),  # n, d not multiples of the block
]
TOLERANCE: dict[Any, float] = {np.float32: 1e-5, np.float16: 2e-3}
DELTA_CASES = [
    (10_000_000, 100_000, np.float32),
    (10_000_000, 100_000, np.float16),
    (1000, 0, np.float32),
]
PLAN = [
    "build fatbins with nvcc for sm_87, sm_110, compute_87 and check registers/spills/local memory",
    "build the TopKMemory plugin (libsemedge_plugins.so) against the TensorRT headers",
    f"run topk_memory on {len(TOPK_CASES)} cases (incl. ties, K=1, K=n, n=65536, fp16) vs numpy",
    f"run sparse delta apply/restore on {len(DELTA_CASES)} cases (incl. empty) vs numpy, bit-exact",
    "build TensorRT engines (fp32, fp16) from a one-node TopKMemory ONNX;"
    " compare with numpy and ONNX Runtime",
    "time every kernel and engine (CUDA events) and write the JSON report",
]


def environment() -> dict[str, Any]:
    """What this machine has of the pieces the validation needs."""
    facts: dict[str, Any] = {
        "nvcc": shutil.which("nvcc"),
        "pycuda": importlib.util.find_spec("pycuda") is not None,
        "tensorrt": importlib.util.find_spec("tensorrt") is not None,
        "tensorrt_headers": str(find_tensorrt_include() or "") or None,
        "machine": platform.machine(),
        "gpu": None,
    }
    if facts["pycuda"]:
        try:
            import pycuda.driver as cuda

            cuda.init()
            if cuda.Device.count():
                dev = cuda.Device(0)
                facts["gpu"] = f"{dev.name()} sm_{''.join(map(str, dev.compute_capability()))}"
        except Exception as error:  # any driver failure means: no usable GPU
            facts["gpu_error"] = str(error)
    return facts


def missing_pieces(facts: dict[str, Any]) -> list[str]:
    need = {
        "nvcc": "nvcc (CUDA toolkit)",
        "pycuda": "pycuda",
        "tensorrt": "tensorrt (python)",
        "tensorrt_headers": "TensorRT headers (NvInfer.h)",
        "gpu": "a CUDA GPU",
    }
    return [label for key, label in need.items() if not facts.get(key)]


def cuda_time_ms(cuda: Any, fn: Any, repeats: int = 20) -> float:
    """Median time of ``fn()`` (which enqueues GPU work) between two CUDA events."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = cuda.Event(), cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.time_till(end))
    return float(np.median(times))


def check_topk(kernels: Any) -> list[dict[str, Any]]:
    cuda = kernels.cuda
    rows = []
    for b, L, n, d, topk, dtype in tqdm(TOPK_CASES, desc="topk_memory", file=sys.stderr):
        rng = np.random.default_rng(n + topk)
        q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, L, d), (b, n, d), (b, n, d)))
        k[:, 1:6] = k[:, :1]  # exact ties in every case
        want, want_index = REFERENCES["topk_memory"](q, k, v, topk)
        got, index = kernels.topk_memory(q, k, v, topk)
        same = bool(np.array_equal(np.sort(index, -1), np.sort(want_index, -1)))
        err = float(np.abs(got.astype(np.float32) - want).max())
        kernels.context.push()
        try:
            dq, dk, dv = (cuda.to_device(a) for a in (q, k, v))
            out = cuda.mem_alloc(q.nbytes)
            ws = cuda.mem_alloc(4 * b * L * (n + 2 * topk))
            ms = cuda_time_ms(
                cuda,
                partial(
                    kernels.launch_topk_memory,
                    np.dtype(dtype),
                    int(dq),
                    int(dk),
                    int(dv),
                    int(out),
                    int(ws),
                    b,
                    L,
                    n,
                    d,
                    topk,
                ),
            )
        finally:
            kernels.context.pop()
        rows.append(
            {
                "case": [b, L, n, d, topk, np.dtype(dtype).name],
                "same_indices": same,
                "max_abs_err": err,
                "ok": same and err <= TOLERANCE[dtype],
                "ms": ms,
            }
        )
    return rows


def check_delta(kernels: Any) -> list[dict[str, Any]]:
    rows = []
    for size, count, dtype in tqdm(DELTA_CASES, desc="sparse_delta", file=sys.stderr):
        rng = np.random.default_rng(size + count)
        w = rng.standard_normal(size).astype(dtype)
        idx = np.sort(rng.choice(size, count, replace=False)).astype(np.int64)
        values = (rng.standard_normal(count) * 1e-2).astype(dtype)
        want, want_saved = REFERENCES["sparse_delta_apply"](w, idx, values)
        got, saved = kernels.sparse_delta_apply(w, idx, values)
        restored = kernels.sparse_delta_restore(got, idx, saved)
        ok = (
            got.tobytes() == want.tobytes()
            and saved.tobytes() == want_saved.tobytes()
            and restored.tobytes() == w.tobytes()
        )
        cuda = kernels.cuda
        kernels.context.push()
        try:
            dw, di, dv, ds = (cuda.to_device(a) for a in (w, idx, values, values))
            apply_ms = cuda_time_ms(
                cuda,
                partial(
                    kernels.launch_sparse_delta_apply,
                    np.dtype(dtype),
                    int(dw),
                    int(di),
                    int(dv),
                    int(ds),
                    count,
                ),
            )
            restore_ms = cuda_time_ms(
                cuda,
                partial(
                    kernels.launch_sparse_delta_restore,
                    np.dtype(dtype),
                    int(dw),
                    int(di),
                    int(ds),
                    count,
                ),
            )
        finally:
            kernels.context.pop()
        rows.append(
            {
                "case": [size, count, np.dtype(dtype).name],
                "bit_exact": ok,
                "apply_ms": apply_ms,
                "restore_ms": restore_ms,
            }
        )
    return rows


def check_plugin(kernels: Any, library: Path, work: Path) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import tensorrt as trt

    cuda = kernels.cuda
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(str(library))
    rows = []
    for dtype in (np.float32, np.float16):
        b, L, n, d, topk = 1, 16, 16384, 128, 64
        model = plugin_graph(b, L, n, d, topk, dtype)
        (work / f"topk_plugin_{np.dtype(dtype).name}.onnx").write_bytes(model.SerializeToString())
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model.SerializeToString()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            rows.append({"dtype": np.dtype(dtype).name, "ok": False, "error": errors})
            continue
        config = builder.create_builder_config()
        if dtype == np.float16:
            config.set_flag(trt.BuilderFlag.FP16)
        plan = builder.build_serialized_network(network, config)
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        rng = np.random.default_rng(3)
        feeds = {
            x: rng.standard_normal(s).astype(dtype)
            for x, s in (("q", (b, L, d)), ("k", (b, n, d)), ("v", (b, n, d)))
        }
        kernels.context.push()
        try:
            stream = cuda.Stream()
            device = {x: cuda.to_device(a) for x, a in feeds.items()}
            device["out"] = cuda.mem_alloc(feeds["q"].nbytes)
            for name, buf in device.items():
                context.set_tensor_address(name, int(buf))
            context.execute_async_v3(stream.handle)
            stream.synchronize()
            out = np.empty_like(feeds["q"])
            cuda.memcpy_dtoh(out, device["out"])
            ms = cuda_time_ms(cuda, partial(context.execute_async_v3, 0))
        finally:
            kernels.context.pop()
        want, _ = REFERENCES["topk_memory"](feeds["q"], feeds["k"], feeds["v"], topk)
        row: dict[str, Any] = {
            "dtype": np.dtype(dtype).name,
            "case": [b, L, n, d, topk],
            "max_abs_err_vs_numpy": float(np.abs(out.astype(np.float32) - want).max()),
            "engine_ms": ms,
        }
        if dtype == np.float32:
            session = ort.InferenceSession(
                standard_graph(L, n, d, topk).SerializeToString(),
                providers=["CPUExecutionProvider"],
            )
            start = time.perf_counter()
            ref = session.run(None, feeds)[0]
            row["onnxrt_cpu_ms"] = (time.perf_counter() - start) * 1e3
            row["max_abs_err_vs_onnxrt"] = float(np.abs(out - ref).max())
        row["ok"] = row["max_abs_err_vs_numpy"] <= TOLERANCE[dtype]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("validate_report.json"))
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("validate_build"),
        help="folder for fatbins, plugin and ONNX files",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; build nothing")
    args = parser.parse_args(argv)
    facts = environment()
    missing = missing_pieces(facts)
    if args.dry_run:
        print("plan:\n" + "\n".join(f"  {i + 1}. {step}" for i, step in enumerate(PLAN)))
        print("this machine:", json.dumps(facts))
        print("missing:", ", ".join(missing) or "nothing — ready to run")
        return 0
    if missing:
        print(
            f"error: cannot validate on this machine, missing {', '.join(missing)}; run on a "
            "Jetson with JetPack (CUDA, TensorRT) and `pip install pycuda`, or use --dry-run",
            file=sys.stderr,
        )
        return 2
    from kernels.cuda import CudaKernels

    usage = build_fatbins(args.work)
    library = build_plugin(args.work)
    kernels = CudaKernels(args.work)
    report: dict[str, Any] = {
        "environment": facts,
        "resources": {k: [asdict(r) for r in v] for k, v in usage.items()},
        "topk_memory": check_topk(kernels),
        "sparse_delta": check_delta(kernels),
        "plugin": check_plugin(kernels, library, args.work),
    }
    ok = (
        all(r["ok"] for r in report["topk_memory"])
        and all(r["bit_exact"] for r in report["sparse_delta"])
        and all(r["ok"] for r in report["plugin"])
    )
    report["ok"] = ok
    write_text(args.out, json.dumps(report, indent=1))
    print(f"{'PASS' if ok else 'FAIL'}: report in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
