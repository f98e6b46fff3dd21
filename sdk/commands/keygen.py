"""``semedge keygen``: create an Ed25519 signing key pair."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing artifacts",
        description="Writes KEYBASE.key (private, mode 0600) and KEYBASE.pub (give it to "
        "agents as --trusted-key).",
    )
    p.add_argument("--out", required=True, metavar="KEYBASE", help="path prefix of the key files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.signing import keygen

    key, pub = keygen(args.out)
    print(f"private key {key} (keep secret), public key {pub}")
    return 0
