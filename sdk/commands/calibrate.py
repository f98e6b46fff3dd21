"""``semedge calibrate``: float ONNX -> INT8 Q/DQ ONNX (methods, sensitivity, cache)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="quantize an exported ONNX model to INT8 (explicit symmetric Q/DQ)",
        description="Collect activation ranges on real data, quantize Conv/ConvTranspose/"
        "MatMul/Gemm to int8 (per-channel weights, zero points 0), keep the output heads "
        "float, and with --budget-db keep the most sensitive layers float until the "
        "PSNR (dB) and accuracy (points) drops on held-out data fit. Ranges are cached by "
        "(model, data, method, settings). Delta targets stay switchable.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="float model from semedge export")
    p.add_argument("--out", required=True, help="INT8 ONNX file to write")
    p.add_argument("--data", help="mnist | patches | digits | DIR of images or .npy (by shape)")
    p.add_argument("--method", default="entropy", help="entropy | percentile | minmax (entropy)")
    p.add_argument("--samples", type=int, default=256, help="calibration samples (256)")
    p.add_argument("--percentile", type=float, default=99.999, help="for percentile (99.999)")
    p.add_argument("--budget-db", type=float, help="allowed PSNR drop in dB (off)")
    p.add_argument("--budget-points", type=float, default=1.0, help="allowed accuracy drop (1)")
    p.add_argument("--heldout", type=int, default=256, help="held-out samples (256)")
    p.add_argument(
        "--exclude", action="append", default=[], help="node or weight glob to keep float"
    )
    p.add_argument("--quantize-heads", action="store_true", help="also quantize output heads")
    p.add_argument("--plot", help="with --budget-db: per-layer sensitivity bar chart (.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calibration.calibrate import Settings, calibrate

    settings = Settings(
        method=args.method,
        data=args.data,
        samples=args.samples,
        percentile=args.percentile,
        exclude=tuple(args.exclude),
        keep_heads=not args.quantize_heads,
        budget_db=args.budget_db,
        budget_points=args.budget_points,
        heldout=args.heldout,
    )
    result = calibrate(args.model, args.out, settings)
    ranges = "cached ranges" if result.cache_hit else "ranges calibrated"
    print(
        f"wrote {result.path}: int8 {result.method}, {ranges} ({result.cache_key[:12]}), "
        f"{len(result.excluded)} layer(s) float"
    )
    if args.plot and result.layers:
        from calibration.sensitivity import Budget, Sensitivity, plot_layers

        found = Sensitivity(result.layers, result.excluded)
        budget = Budget(settings.budget_db or 0.0, settings.budget_points)
        print(f"plot: {plot_layers(found, budget, args.plot)}")
    for metric, value in result.fp32.items():
        print(
            f"  {metric}: fp32 {value:.2f}, int8 {result.int8[metric]:.2f}, "
            f"drop {value - result.int8[metric]:+.2f}"
        )
    return 0
