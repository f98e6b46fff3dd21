"""``semedge delta inspect``: what a delta file contains, and whether it fits a checkpoint."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "delta", help="inspect ZFDA delta files", description="Inspect ZFDA delta files."
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = actions.add_parser(
        "inspect",
        help="size, nnz and %% per layer, base fingerprint, domain, encoding",
        description="Validate a delta file completely and describe it. With --against CKPT, "
        "also check that it applies to that checkpoint (fingerprint, names, shapes).",
    )
    i.add_argument("file", help="*.delta.safetensors")
    i.add_argument("--against", metavar="CKPT", help="check compatibility with this checkpoint")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from sdk.delta import describe_file, load_delta

    info = describe_file(args.file, load_delta, args.against)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['file']}: {info['bytes']} bytes, index encoding {info['index_encoding']}")
    print(
        f"domain {info['domain']}, sparsity {100 * info['sparsity']:g} %, "
        f"base {info['base_fingerprint']}"
    )
    print(
        f"{info['nnz']} entries = {info['percent_of_adapted']:.3f} % of "
        f"{info['adapted_parameters']} weights in {len(info['layers'])} parameters"
    )
    width = max((len(n) for n in info["layers"]), default=4)
    print(f"{'parameter':<{width}}  {'shape':>18}  {'nnz':>8}  {'%':>7}  values")
    for name, layer in info["layers"].items():
        shape = "x".join(map(str, layer["shape"]))
        print(
            f"{name:<{width}}  {shape:>18}  {layer['nnz']:>8}  {layer['percent']:>7.3f}  "
            f"{layer['value_dtype']}"
        )
    if args.against:
        print(f"compatible with {args.against}")
    return 0
