"""``semedge quickstart``: the fast subset of ``semedge demo`` (:mod:`sdk.pipelines.demo`).

Train a DeepJSCC on real photos, build it (and INT8 builds with their measured drop),
flash it to a simulated device with a rollback, and adapt it to a hue-shifted camera with
a ZFDA delta that switches off bit-exactly; the channel sweep, SLF and the report are
``semedge demo``'s.
"""

from __future__ import annotations

import argparse

from sdk.commands.demo import add_common, make_demo, print_step, print_summary
from sdk.options import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the fast subset of semedge demo: train, build, flash, adapt (minutes, CPU)",
        description=__doc__,
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/quickstart", help="output folder")
    add_common(p, "tiny models, few steps (a smoke test; --fast is the same)")
    p.add_argument("--fast", dest="tiny", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sdk.pipelines.demo import QUICKSTART

    demo = make_demo(args, args.out)
    demo.run(QUICKSTART, fresh=args.fresh, report=print_step)
    print_summary(demo)
    print(f"\neverything is in {demo.out}/; the whole product: semedge demo --out {demo.out}")
    return 0
