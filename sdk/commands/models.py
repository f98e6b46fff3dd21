"""``semedge models``: list the model families a checkpoint config may name."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the model families and presets `semedge train --model` takes",
        description="List every name `semedge train --model` accepts (case does not matter), "
        "the class a checkpoint records for it, and what it is.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.models.registry import model_table

    rows = [("name", "class", "what it is"), *model_table()]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, cls, summary in rows:
        print(f"{name:<{widths[0]}}  {cls:<{widths[1]}}  {summary}")
    return 0
