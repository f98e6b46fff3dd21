"""``semedge device``: ask a device's agent for its status, confirm or roll back."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="status | confirm | rollback of a device's installed models",
        description="status: device facts, slots and any partial transfer. confirm: make a "
        "TEST activation permanent. rollback: return to the previous slot.",
    )
    p.add_argument("action", choices=("status", "confirm", "rollback"))
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
    p.add_argument("--baud", type=int, default=921600, help="baud rate (default 921600)")
    p.add_argument("--model", help="model name (default: the only installed one)")
    p.add_argument("--json", action="store_true", help="print the device status as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from firmware_bridge.host import Flasher
    from firmware_bridge.transport import Link, open_serial

    flasher = Flasher(Link(open_serial(args.port, args.baud), device=False), progress=False)
    if args.action == "confirm":
        status = flasher.confirm(args.model)
    elif args.action == "rollback":
        status = flasher.rollback(args.model)
    else:
        status = flasher.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    facts = status["facts"]
    print("device: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    for name, m in status["models"].items():
        state = f"TEST ({m['test']['attempts_left']} restarts left)" if m["test"] else "confirmed"
        print(f"{name}: active {m['active']} [{state}], previous {m['previous']}")
        for slot, info in m["slots"].items():
            print(f"  slot {slot}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
        if m["deltas"]:
            print("  deltas: " + ", ".join(m["deltas"]))
    if status.get("transfer"):
        t = status["transfer"]
        print(f"partial transfer {t['sha256'][:12]}…: {t['offset']} of {t['size']} bytes")
    return 0
