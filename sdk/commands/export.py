"""``semedge export``: a checkpoint part to a checked ONNX file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint (transmitter, receiver or chain) to ONNX",
        description="Export one part of a checkpoint to ONNX (named I/O from the task keys, "
        "dynamic batch, checked with onnx.checker and shape inference). The chain has no "
        "channel (noiseless), for comparing backends.",
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="checkpoint folder, or the --out folder of semedge train"
    )
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument(
        "--part",
        default="chain",
        choices=("transmitter", "receiver", "chain"),
        help="which part to export",
    )
    p.add_argument(
        "--topk-plugin",
        action="store_true",
        help="emit KEM top-K attention as one TopKMemory plugin node (TensorRT) instead of "
        "standard ONNX ops",
    )
    p.add_argument(
        "--delta-targets",
        metavar="SPEC",
        help="weights to expose as graph inputs for delta switching: encoder, decoder, "
        "comma-separated globs over parameter names, or a .delta.safetensors file",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx
    from sdk.onnx_io import io_specs, load_onnx

    model = load_checkpoint(args.checkpoint)
    path = export_onnx(
        model,  # type: ignore[arg-type]
        args.out,
        args.part,
        opset=args.opset,
        topk_plugin=args.topk_plugin,
        delta_targets=args.delta_targets,
        source=args.checkpoint,
    )
    inputs, outputs = io_specs(load_onnx(path, load_external_data=False))
    fmt = ", ".join
    print(
        f"wrote {path}: inputs {fmt(i['name'] for i in inputs)} -> "
        f"outputs {fmt(o['name'] for o in outputs)}"
    )
    return 0
