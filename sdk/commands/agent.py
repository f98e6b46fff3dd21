"""``semedge agent``: the device-side flashing agent (runs as a service on the Jetson)."""

from __future__ import annotations

import argparse

from sdk.options import whole_number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="device side: receive artifacts/deltas over serial into A/B slots",
        description="Serve `semedge flash` / `semedge device` requests on a serial port "
        "(USB gadget /dev/ttyGS0 or a UART). Installs into A/B slots under --root; never "
        "speaks first; one host session at a time. Torch-free.",
    )
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyGS0")
    p.add_argument("--root", required=True, help="directory holding models/ and incoming/")
    p.add_argument("--trusted-key", metavar="PUB", help="refuse anything not signed by this key")
    p.add_argument("--baud", type=int, default=921600, help="UART baud rate")
    p.add_argument(
        "--facts",
        metavar="JSON",
        help="file overriding device facts (tensorrt_version, compute_capability, "
        "cuda_version, l4t_version, free_bytes); default: read from this device",
    )
    p.add_argument(
        "--test-attempts",
        type=whole_number,
        default=0,
        help="agent restarts a TEST activation survives unconfirmed (default: 0, the next "
        "restart reverts)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from firmware_bridge.agent import Agent, device_facts
    from firmware_bridge.signing import read_public_key
    from firmware_bridge.transport import Link, open_serial
    from sdk.errors import SemedgeError

    overrides = {}
    if args.facts:
        try:
            overrides = json.loads(Path(args.facts).read_text())
        except (OSError, ValueError) as exc:
            raise SemedgeError(f"cannot read --facts {args.facts} ({exc})") from None
    key = read_public_key(args.trusted_key) if args.trusted_key else None
    link = Link(open_serial(args.port, args.baud), device=True)
    agent = Agent(
        link, args.root, facts=device_facts(overrides), trusted_key=key,
        test_attempts=args.test_attempts,
    )  # fmt: skip
    print(f"semedge agent: serving {args.port}, root {args.root}", file=sys.stderr, flush=True)
    agent.serve()
    return 0
