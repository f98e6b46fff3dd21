"""Validate the CUDA kernels, the TensorRT serving path and the plugin on a Jetson: one command.

Steps (each needs some of: nvcc, pycuda, a CUDA GPU, TensorRT's Python module and headers):

1. ``fatbins`` — build the kernels with nvcc for the architectures it knows and check
   ptxas' report for spills/local memory;
2. ``plugin`` — build ``libsemedge_plugins.so`` against the TensorRT headers;
3. ``topk_memory`` — run the kernel through pycuda on random inputs and edge cases against
   the numpy reference (same kept indices, |err| ≤ 1e-5 fp32 / 2e-3 fp16) and time it;
4. ``sparse_delta`` — apply/restore against the reference, bit-exact, timed;
5. ``device_deltas`` — the TensorRT runner's serving path: weights in device memory,
   deltas switched by the sparse-delta kernel
   (:class:`sdk.backends.trt.device_deltas.DeviceDeltaCore`), update packages by
   device-to-device copies, against the numpy :class:`sdk.delta.DeltaCore`, bit-exact, switch time;
6. ``plugin_engines`` — TensorRT engines (fp32, fp16) from a one-node ``TopKMemory`` ONNX,
   against numpy and (fp32, batch 1) ONNX Runtime, timed.

A step whose pieces are missing (e.g. TensorRT on an x86 GPU machine) or whose input step
failed is skipped with the reason; a step that fails records its one-line error and the
rest go on. The JSON report (``--out``) is written in every case, also by ``--dry-run``,
which runs nothing and says, per step, whether it would run here or why it would be
skipped. Exit status: 0 all run steps passed (dry run: always), 1 a step failed, 2 nothing
could run.

Usage::

    python tools/validate_on_device.py [--out validate_report.json] [--work DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
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
NEEDS = {
    "nvcc": "nvcc (CUDA toolkit)",
    "pycuda": "pycuda",
    "gpu": "a CUDA GPU",
    "tensorrt": "tensorrt (python)",
    "tensorrt_headers": "TensorRT headers (NvInfer.h)",
}


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
    if facts["tensorrt"]:
        from sdk.artifact import local_device_facts

        facts.update(local_device_facts())
    return facts


def missing_pieces(facts: dict[str, Any], needs: tuple[str, ...] = tuple(NEEDS)) -> list[str]:
    return [NEEDS[key] for key in needs if not facts.get(key)]


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


def _synchronize(kernels: Any) -> None:
    kernels.context.push()
    try:
        kernels.context.synchronize()
    finally:
        kernels.context.pop()


def _device_bytes(kernels: Any, core: Any, like: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The device core's weights, read back (for the comparison only)."""
    return {
        name: kernels.download(core.device_tensor(name)[0], like[name]).tobytes() for name in like
    }


def check_device_deltas(kernels: Any) -> list[dict[str, Any]]:
    """The runner's device-resident switching vs the numpy core, bit-exact, timed: a delta
    (sparse-delta kernel) and an update package (device-to-device copies), per dtype."""
    from sdk.backends.trt.device_deltas import DeviceDeltaCore
    from sdk.delta import Delta, DeltaCore, DeltaEntry, Update

    rows = []
    for dtype in (np.float32, np.float16):
        rng = np.random.default_rng(7)
        shapes = {"dec.0.weight": (512, 1024), "dec.0.bias": (512,), "dec.1.weight": (3, 512, 9)}
        base = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
        entries = {}
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            idx = np.sort(rng.choice(size, size // 20, replace=False)).astype(np.int64)
            entries[name] = DeltaEntry(
                idx, (rng.standard_normal(len(idx)) * 1e-2).astype(dtype), shape
            )
        new = {
            n: rng.standard_normal(shapes[n]).astype(dtype) for n in ("dec.0.weight", "dec.0.bias")
        }
        changes = [
            Delta("check", "0" * 64, 0.95, entries),
            Update("check", "0" * 64, "1" * 64, new),
        ]
        for change in changes:
            host = {n: w.copy() for n, w in base.items()}
            numpy_core = DeltaCore(host, "0" * 64)
            device_core = DeviceDeltaCore(base, "0" * 64, kernels)
            prepared = device_core.prepare(change)
            numpy_core.activate(change)
            start = time.perf_counter()
            device_core.activate(prepared)
            _synchronize(kernels)
            switch_ms = (time.perf_counter() - start) * 1e3

            applied = _device_bytes(kernels, device_core, base) == {
                n: w.tobytes() for n, w in host.items()
            }
            device_core.deactivate()
            restored = _device_bytes(kernels, device_core, base) == {
                n: w.tobytes() for n, w in base.items()
            }
            rows.append(
                {
                    "kind": change.kind,
                    "dtype": np.dtype(dtype).name,
                    "values_written": sum(s.values.size for s in prepared.segments)
                    + sum(b.values.size for b in prepared.blocks),
                    "applied_bit_exact": applied,
                    "restored_bit_exact": restored,
                    "first_switch_ms": switch_ms,
                    "changed": sorted(device_core.take_changed()),
                    "ok": applied and restored,
                }
            )
    return rows


def check_plugin(kernels: Any, library: Path, work: Path) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import tensorrt as trt

    from sdk.backends.trt.builder import precision_settings
    from sdk.backends.trt.plugins import load_plugins

    cuda = kernels.cuda
    logger = trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, [library])
    rows = []
    for dtype in (np.float32, np.float16):
        b, L, n, d, topk = 1, 16, 16384, 128, 64
        model = plugin_graph(b, L, n, d, topk, dtype)
        (work / f"topk_plugin_{np.dtype(dtype).name}.onnx").write_bytes(model.SerializeToString())
        settings = precision_settings(trt.__version__, "fp16" if dtype == np.float16 else "fp32")
        builder = trt.Builder(logger)
        flags = 0  # the graph's inputs carry the dtype: strongly typed where TensorRT has it
        if settings["strongly_typed"]:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model.SerializeToString()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            rows.append({"dtype": np.dtype(dtype).name, "ok": False, "error": errors})
            continue
        config = builder.create_builder_config()
        config.clear_flag(trt.BuilderFlag.TF32)
        if "FP16" in settings["builder_flags"]:
            config.set_flag(trt.BuilderFlag.FP16)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            rows.append({"dtype": np.dtype(dtype).name, "ok": False, "error": "build failed"})
            continue
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if engine is None:
            rows.append({"dtype": np.dtype(dtype).name, "ok": False, "error": "deserialize failed"})
            continue
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


@dataclass(frozen=True)
class Step:
    """One validation step: what it needs (machine pieces, earlier steps) and how to run it."""

    name: str
    description: str
    needs: tuple[str, ...]
    after: tuple[str, ...]
    run: Callable[[dict[str, Any]], Any]

    def passed(self, result: Any) -> bool:
        rows = result if isinstance(result, list) else []
        return all(r.get("ok", r.get("bit_exact", True)) for r in rows)


def steps(work: Path) -> list[Step]:
    """The steps in order; ``run`` gets the results of the steps before it by name."""

    def fatbins(done: dict[str, Any]) -> Any:
        usage = build_fatbins(work)
        return {k: [asdict(r) for r in v] for k, v in usage.items()}

    def kernels(done: dict[str, Any]) -> Any:
        from kernels.cuda import CudaKernels

        if "_kernels" not in done:
            done["_kernels"] = CudaKernels(work)
        return done["_kernels"]

    cases = f"{len(TOPK_CASES)} cases (ties, K=1, K=n, n=65536, fp16)"
    return [
        Step(
            "fatbins",
            "build the kernels with nvcc, check spills/local memory",
            ("nvcc",),
            (),
            fatbins,
        ),
        Step(
            "plugin",
            "build the TopKMemory plugin against the TensorRT headers",
            ("nvcc", "tensorrt_headers"),
            (),
            lambda done: str(build_plugin(work)),
        ),
        Step(
            "topk_memory",
            f"top-K memory kernel vs numpy on {cases}, timed",
            ("pycuda", "gpu"),
            ("fatbins",),
            lambda done: check_topk(kernels(done)),
        ),
        Step(
            "sparse_delta",
            f"sparse delta apply/restore on {len(DELTA_CASES)} cases, bit-exact",
            ("pycuda", "gpu"),
            ("fatbins",),
            lambda done: check_delta(kernels(done)),
        ),
        Step(
            "device_deltas",
            "TensorRT runner's device-resident delta switch vs numpy core",
            ("pycuda", "gpu"),
            ("fatbins",),
            lambda done: check_device_deltas(kernels(done)),
        ),
        Step(
            "plugin_engines",
            "TensorRT engines (fp32, fp16) of a TopKMemory node vs numpy/ORT",
            ("pycuda", "gpu", "tensorrt"),
            ("fatbins", "plugin"),
            lambda done: check_plugin(kernels(done), Path(done["plugin"]), work),
        ),
    ]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def walk(facts: dict[str, Any], work: Path, dry_run: bool) -> list[dict[str, Any]]:
    """Run (or, dry, only plan) every step; each row says what happened and why."""
    rows: list[dict[str, Any]] = []
    done: dict[str, Any] = {}
    status: dict[str, str] = {}
    for step in steps(work):
        row: dict[str, Any] = {"step": step.name, "description": step.description}
        missing = missing_pieces(facts, step.needs)
        blocked = [a for a in step.after if status.get(a) not in ("passed", "would run")]
        if missing:
            row.update(status="skipped", reason=f"missing {', '.join(missing)}")
        elif blocked:
            row.update(status="skipped", reason=f"needs step {', '.join(blocked)}")
        elif dry_run:
            row.update(status="would run")
        else:
            try:
                done[step.name] = result = step.run(done)
                row.update(status="passed" if step.passed(result) else "failed", result=result)
            except Exception as error:  # record it, keep going: the report is never lost
                row.update(status="failed", reason=_one_line(error))
        status[step.name] = row["status"]
        rows.append(row)
    return rows


def _line(row: dict[str, Any]) -> str:
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"  [{row['status']:>9}] {row['step']:<15} {row['description']}{reason}"


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
    parser.add_argument(
        "--dry-run", action="store_true", help="say what each step would do here; run nothing"
    )
    args = parser.parse_args(argv)
    facts = environment()
    rows = walk(facts, args.work, args.dry_run)
    ran = [r for r in rows if r["status"] in ("passed", "failed")]
    ok = all(r["status"] == "passed" for r in ran) and bool(ran)
    report = {"environment": facts, "dry_run": args.dry_run, "steps": rows, "ok": ok}
    write_text(args.out, json.dumps(report, indent=1, default=str))
    print(("dry run — " if args.dry_run else "") + f"{len(rows)} steps on this machine:")
    print("\n".join(_line(r) for r in rows))
    if args.dry_run:
        print(f"report: {args.out}")
        return 0
    if not ran:
        missing = ", ".join(missing_pieces(facts)) or "nothing"
        print(
            f"error: cannot validate on this machine, missing {missing}; run on a Jetson with "
            f"JetPack (CUDA, TensorRT) and `pip install 'semedge[jetson]'` (report: {args.out})",
            file=sys.stderr,
        )
        return 2
    print(f"{'PASS' if ok else 'FAIL'}: report in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
