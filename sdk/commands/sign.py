"""``semedge sign``: sign an artifact or a delta with an Ed25519 key."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sign",
        help="sign an artifact (manifest.sig) or delta (FILE.sig) with an Ed25519 key",
        description="Writes manifest.sig into an artifact directory (or .tar), or FILE.sig "
        "beside a *.delta.safetensors. Agents started with --trusted-key check it.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact dir, .tar or delta file")
    p.add_argument("--key", required=True, help="private key file (from semedge keygen)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.signing import sign

    print(f"wrote signature {sign(args.artifact, args.key)}")
    return 0
