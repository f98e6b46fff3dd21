"""``semedge device``: ask a device's agent for its status, confirm or roll back."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="status | confirm | rollback of a device's installed models",
        description="status: device facts, slots and any partial transfer. confirm: make a "
        "TEST activation permanent. rollback: return to the previous slot.",
    )
    p.add_argument("action", choices=("status", "confirm", "rollback"))
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
    p.add_argument("--baud", type=int, default=921600, help="baud rate")
    p.add_argument("--model", help="model name (default: the only installed one)")
    p.add_argument("--json", action="store_true", help="print the device status as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from firmware_bridge.host import serial_flasher

    flasher = serial_flasher(args.port, args.baud, progress=False)
    if args.action == "confirm":
        status = flasher.confirm(args.model)
    elif args.action == "rollback":
        status = flasher.rollback(args.model)
    else:
        status = flasher.status()
    print(json.dumps(status, indent=2) if args.json else "\n".join(status_lines(status)))
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    """A device's STATUS reply as text: facts, then per model its slots and deltas."""
    facts = (f"{k}={'unknown' if v is None else v}" for k, v in status["facts"].items())
    lines = ["device: " + ", ".join(facts)]
    for name, m in status["models"].items():
        state = f"TEST ({m['test']['attempts_left']} restarts left)" if m["test"] else "confirmed"
        previous = m["previous"] or "none"
        lines.append(f"{name}: active {m['active'] or 'none'} [{state}], previous {previous}")
        for slot, info in m["slots"].items():
            fields = (f"{k}={_short(v)}" for k, v in info.items() if v is not None)
            lines.append(f"  slot {slot}: " + ", ".join(fields))
        if m["deltas"]:
            lines.append("  deltas: " + ", ".join(m["deltas"]))
    if status.get("transfer"):
        t = status["transfer"]
        lines.append(f"partial transfer {t['sha256'][:12]}…: {t['offset']} of {t['size']} bytes")
    return lines


def _short(value: Any) -> Any:
    """A SHA-256 or fingerprint shortened to 12 hex digits for reading (--json has all 64)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, float):
        return f"{value:.3g}"
    return value
