"""``semedge compare``: the same inputs through several backends, max errors, pass/fail."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare backends (torch, onnxrt, trt) on random and real inputs",
        description="Run a random batch and a batch of real images through each backend and "
        "report the max absolute/relative error of every output against the first backend, "
        "then the task-metric drop (PSNR dB, accuracy/IoU points) on held-out real data. "
        "fp32: exit status 1 when any output is outside atol + rtol*|reference| or a drop "
        "exceeds its budget. A quantized (int8/fp16) artifact is held to the drop budgets "
        "only; its element-wise errors are shown, not judged.",
    )
    p.add_argument("model", metavar="MODEL_OR_ARTIFACT", help="checkpoint, .onnx or artifact")
    p.add_argument(
        "--backends", default="torch,onnxrt", help="comma-separated backends: torch, onnxrt, trt"
    )
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    p.add_argument("--batch", type=int, default=4, help="batch size")
    p.add_argument("--data", help="dataset for the real inputs (default: by input shape)")
    p.add_argument("--budget-db", type=float, default=0.5, help="allowed PSNR drop, dB (0.5)")
    p.add_argument("--budget-points", type=float, default=1.0, help="allowed accuracy/IoU drop (1)")
    p.add_argument("--heldout", type=int, default=256, help="held-out samples for metrics (256)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.runtime.compare import (
        compare_backends,
        compare_tasks,
        format_rows,
        format_task_rows,
        judged_by_tasks,
    )

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = compare_backends(args.model, backends, args.atol, args.rtol, args.batch, args.data)
    print(format_rows(rows, backends[0]))
    tasks = compare_tasks(
        args.model, backends, args.budget_db, args.budget_points, args.heldout, args.data
    )
    if tasks:
        print(format_task_rows(tasks, backends[0]))
    quantized = judged_by_tasks(args.model)
    budgets = f"PSNR drop <= {args.budget_db:g} dB, accuracy/IoU drop <= {args.budget_points:g}"
    if quantized:
        print(f"{quantized} artifact: held to {budgets} (element-wise errors not judged)")
        passed = bool(tasks) and all(r.passed for r in tasks)
    else:
        passed = all(r.passed for r in rows) and all(r.passed for r in tasks)
    tolerance = budgets if quantized else f"atol={args.atol:g}, rtol={args.rtol:g}; {budgets}"
    print("PASSED" if passed else f"FAILED ({tolerance})")
    return 0 if passed else 1
