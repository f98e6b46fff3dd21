"""``semedge demo``: the whole product on one machine in one command, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdk.options import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    from sdk.pipelines import demo

    p = sub.add_parser(
        "demo",
        help="train, build, flash, adapt and re-align on one machine; writes a report",
        description=demo.__doc__,
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    add_common(p, "under a minute: tiny models, few steps (a smoke test)")
    p.add_argument(
        "--only",
        help=f"comma-separated steps to (re)run, with what they need: {', '.join(demo.STEPS)}",
    )
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser, tiny_help: str) -> None:
    """The flags ``demo`` and ``quickstart`` share."""
    p.add_argument("--tiny", action="store_true", help=tiny_help)
    p.add_argument("--fresh", action="store_true", help="recompute every step (no cached results)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: all, or 1 if the CPU is busy)"
    )


def make_demo(args: argparse.Namespace, out: str) -> Any:
    import torch

    from sdk.pipelines.demo import FULL, TINY, Demo
    from sdk.train import default_threads

    torch.set_num_threads(args.threads or default_threads())
    return Demo(Path(out), TINY if args.tiny else FULL, args.seed)


def print_step(step: str, result: dict[str, Any]) -> None:
    print(f"{step}: done ({result.get('seconds', 0):.0f} s)", flush=True)


def print_summary(demo: Any) -> None:
    """The headline number of every step finished in ``demo``'s folder."""
    from sdk.pipelines.demo import STEPS
    from sdk.pipelines.report import summary

    print(f"\nsummary of {demo.out}:")
    for line in summary({step: demo.cached(step) for step in STEPS}):
        print("  " + line)


def run(args: argparse.Namespace) -> int:
    import time

    from sdk.pipelines.demo import STEPS

    start = time.perf_counter()
    demo = make_demo(args, args.out)
    only = [s.strip() for s in (args.only or "").split(",") if s.strip()]
    results = demo.run(only, only, args.fresh, print_step)
    print_summary(demo)
    print(f"done in {time.perf_counter() - start:.0f} s")
    if "report" in results:
        print(f"report: {results['report']['html']} (and report.md beside it)")
    else:
        print(f"report: semedge demo --out {demo.out} --only report   (steps: {', '.join(STEPS)})")
    return 0
