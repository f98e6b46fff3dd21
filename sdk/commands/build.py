"""``semedge build``: checkpoint or ONNX -> artifact directory (or .tar) with a manifest."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a deployable artifact (ONNX Runtime or TensorRT) with a manifest",
        description="Build an artifact directory: payload (model.onnx or model.plan) and "
        "manifest.json with hashes, I/O, precision and, for TensorRT, the device it was "
        "built for. auto = TensorRT where it is installed and a GPU is present, else ONNX "
        "Runtime. TensorRT plans must be built on (a device like) the one that runs them.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory or exported .onnx")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument(
        "--backend", default="auto", choices=("auto", "onnxrt", "trt"), help="where to run it"
    )
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="numeric precision"
    )
    p.add_argument(
        "--part",
        default="chain",
        choices=("transmitter", "receiver", "chain"),
        help="which part to build",
    )
    p.add_argument("--delta-targets", metavar="SPEC", help="see semedge export --help")
    p.add_argument("--topk-plugin", action="store_true", help="see semedge export --help")
    p.add_argument("--name", help="model name in the manifest (default: source name)")
    p.add_argument("--version", default="1", help="model version in the manifest")
    p.add_argument(
        "--calib-data", help="int8 calibration data: mnist|patches|digits|DIR (by input shape)"
    )
    p.add_argument("--calib-samples", type=int, default=256, help="calibration images")
    p.add_argument(
        "--calib-method",
        default="entropy",
        choices=("entropy", "percentile", "minmax"),
        help="int8 activation ranges; see semedge calibrate --help",
    )
    p.add_argument(
        "--budget-db",
        type=float,
        help="int8: keep the most sensitive layers float until the PSNR drop is at most this",
    )
    p.add_argument("--plugin", action="append", default=[], help="TensorRT plugin .so to load")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (read and updated)")
    p.add_argument("--max-batch", type=int, default=32, help="TensorRT profile max batch")
    p.add_argument(
        "--dla-core",
        type=int,
        metavar="N",
        help="TensorRT on Orin: run on DLA core N with GPU fallback (fp16/int8; default: GPU)",
    )
    p.add_argument("--tar", action="store_true", help="also pack the artifact as OUT.tar")
    p.add_argument(
        "--security-counter",
        type=int,
        default=0,
        metavar="N",
        help="anti-rollback counter in the manifest: devices refuse builds below the "
        "installed one (0)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk import artifact
    from sdk.build import build

    out = build(
        args.model,
        args.out,
        backend=args.backend,
        precision=args.precision,
        part=args.part,
        delta_targets=args.delta_targets,
        topk_plugin=args.topk_plugin,
        name=args.name,
        version=args.version,
        calib_data=args.calib_data,
        calib_samples=args.calib_samples,
        calib_method=args.calib_method,
        budget_db=args.budget_db,
        plugins=args.plugin,
        timing_cache=args.timing_cache,
        max_batch=args.max_batch,
        dla_core=args.dla_core,
        security_counter=args.security_counter,
    )
    manifest = artifact.verify_artifact(out)
    print(f"wrote {out}: {artifact.describe(manifest)}")
    if args.tar:
        print(f"packed {artifact.pack(out)}")
    return 0
