"""``semedge compare``: the same inputs through several backends, max errors, pass/fail."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare backends (torch, onnxrt, trt) on random and real inputs",
        description="Run a random batch and a batch of real images through each backend and "
        "report the max absolute/relative error of every output against the first backend. "
        "Exit status 1 when any output is outside atol + rtol*|reference|.",
    )
    p.add_argument("model", metavar="MODEL_OR_ARTIFACT", help="checkpoint, .onnx or artifact")
    p.add_argument(
        "--backends", default="torch,onnxrt", help="comma-separated backends: torch, onnxrt, trt"
    )
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    p.add_argument("--batch", type=int, default=4, help="batch size")
    p.add_argument("--data", help="dataset for the real inputs (default: by input shape)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.runtime.compare import compare_backends, format_rows

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = compare_backends(args.model, backends, args.atol, args.rtol, args.batch, args.data)
    print(format_rows(rows, backends[0]))
    passed = all(r.passed for r in rows)
    print("PASSED" if passed else f"FAILED (atol={args.atol:g}, rtol={args.rtol:g})")
    return 0 if passed else 1
