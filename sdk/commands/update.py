"""``semedge update inspect|apply|rollback``: SLF update packages on receiver checkpoints."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="inspect, apply and roll back SLF update packages",
        description="Update packages (*.update.safetensors, written by semedge adapt slf) hold "
        "new values of whole decoder tensors for one exact receiver checkpoint.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = actions.add_parser(
        "inspect",
        help="fingerprints, ℓ, freeze side, tensors and accounting of a package",
        description="Validate an update package completely and describe it. With --against "
        "CKPT, also check that it applies to that checkpoint (fingerprint, names, shapes).",
    )
    i.add_argument("file", help="*.update.safetensors")
    i.add_argument("--against", metavar="CKPT", help="check compatibility with this checkpoint")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=run_inspect)
    a = actions.add_parser(
        "apply",
        help="bake a package into a receiver checkpoint (keeps a rollback package)",
        description="Validate PACKAGE against CHECKPOINT (base fingerprint, names, shapes, "
        "values, and the resulting fingerprint) and only then write the updated checkpoint "
        "(in place, or to --out) plus CHECKPOINT.rollback.update.safetensors next to it.",
    )
    a.add_argument("checkpoint", help="the receiver's checkpoint")
    a.add_argument("package", help="*.update.safetensors")
    a.add_argument("--out", help="write the updated checkpoint here (default: in place)")
    a.set_defaults(func=run_apply)
    r = actions.add_parser(
        "rollback",
        help="restore a checkpoint from before `update apply` (bit-exact)",
        description="Apply the rollback package that `semedge update apply` kept next to "
        "CHECKPOINT, restoring its previous weights and fingerprint exactly.",
    )
    r.add_argument("checkpoint", help="an updated receiver checkpoint")
    r.add_argument("--package", help="rollback package (default: CHECKPOINT.rollback.update…)")
    r.set_defaults(func=run_rollback)


def run_inspect(args: argparse.Namespace) -> int:
    import json

    from sdk.delta import describe_file, load_update

    info = describe_file(args.file, load_update, args.against)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['file']}: {info['bytes']} bytes, update {info['name']!r}, {info['value_dtype']}")
    print(f"base   {info['base_fingerprint']}\nresult {info['result_fingerprint']}")
    print(
        f"ℓ = {info['freeze']} frozen at the {info['freeze_side']} side; {info['parameters']} "
        f"values in {len(info['layers'])} tensors ({info['value_bytes']} bytes)"
    )
    width = max((len(n) for n in info["layers"]), default=9)
    for name, layer in info["layers"].items():
        print(f"  {name:<{width}}  {'x'.join(map(str, layer['shape'])):>14}  {layer['bytes']:>9}")
    acc = info["accounting"]
    if acc:
        print("accounting: " + ", ".join(f"{k}={v}" for k, v in acc.items() if "layers" not in k))
    if args.against:
        print(f"compatible with {args.against}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from sdk.adapt.slf import apply_to_checkpoint

    out, undo = apply_to_checkpoint(args.checkpoint, args.package, args.out)
    print(f"updated {out}; roll back with: semedge update rollback {out}  ({undo})")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from sdk.adapt.slf import rollback_checkpoint

    fingerprint = rollback_checkpoint(args.checkpoint, args.package)
    print(f"rolled back {args.checkpoint} to {fingerprint}")
    return 0
