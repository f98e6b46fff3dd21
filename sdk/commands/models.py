"""``semedge models``: list the model families a checkpoint config may name."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available model families")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.models import available_models
    from sdk.models.registry import MODELS

    for name in available_models():
        doc = (MODELS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:12s} {doc}")
    return 0
