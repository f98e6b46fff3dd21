"""A minimal edge app that follows the device: it serves whatever the agent made active.

    python examples/edge_app.py --root /var/lib/semedge [--model rx] [--seconds 0]

It opens the device's running build with ``sdk.Runtime.open_device`` and calls ``infer``
in a loop (random inputs stand in for the received symbols); whenever the agent flashes
a build, switches a delta or update, or rolls back, the next call runs on the new
weights and the app prints one line saying what it now serves. Try it with a simulated
device: ``semedge device sim --root DIR`` in one terminal, this app on ``--root DIR``
in another, then ``semedge flash`` / ``semedge device activate-delta`` on the port the
simulator printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sdk import Runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the agent's --root on this device")
    parser.add_argument("--model", help="installed model (default: the only one)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long "
                        "(default 0: run until Ctrl-C)")  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the "
                        "device state (default 0.5)")  # fmt: skip
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    with Runtime.open_device(args.root, args.model, poll=args.poll) as app:
        spec = app.info()["inputs"][0]
        shape = [1, *[d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"][1:]]]
        serving, calls = None, 0
        end = time.monotonic() + args.seconds if args.seconds else float("inf")
        try:
            while time.monotonic() < end:
                app.infer(rng.normal(size=shape).astype(np.float32))
                calls += 1
                info = app.info()
                now = (info["model"], info["slot"], info["update"], info["delta"])
                if now != serving:
                    serving = now
                    print(f"serving {now[0]} slot {now[1]}, update {now[2]}, delta {now[3]} "
                          f"(after {calls} calls)", flush=True)  # fmt: skip
        except KeyboardInterrupt:
            pass
    print(f"{calls} calls, none failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
