"""``semedge bench``: latency p50/p99 and throughput per batch size, peak memory (trtexec-like)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark an artifact: latency percentiles, throughput, peak memory",
        description="Run an artifact (or .onnx) on its own backend — ONNX Runtime here, "
        "TensorRT on the device it was built for — with random inputs: per batch size a "
        "warm-up, then timed back-to-back inferences (end to end, copies included). "
        "Prints p50/p90/p99 latency, throughput and peak memory.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory, .tar or .onnx")
    p.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes")
    p.add_argument("--warmup", type=float, default=0.2, help="warm-up seconds per batch")
    p.add_argument("--duration", type=float, default=1.0, help="timed seconds per batch")
    p.add_argument("--iterations", type=int, default=10, help="minimum timed runs")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="PNG", help="also plot latency and throughput vs batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from sdk.bench import bench, parse_batches, plot, table
    from sdk.options import check_figure_path

    check_figure_path(args.plot)  # before the benchmark, not after it
    report = bench(
        args.artifact,
        parse_batches(args.batch),
        warmup_s=args.warmup,
        duration_s=args.duration,
        min_iterations=args.iterations,
        threads=args.threads,
        progress=not args.json,
    )
    print(json.dumps(report, indent=1) if args.json else table(report))
    if args.plot:
        print(f"plot: {plot(report, args.plot)}", file=sys.stderr)
    return 0
