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
    p.add_argument("--baud", type=int, default=921600, help="baud rate (default 921600)")
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
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        change = [status["change"]] if status.get("change") else []
        print("\n".join(change + status_lines(status)))
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    """A device's STATUS reply as text: facts, then per model its slots and deltas."""
    lines = ["device: " + ", ".join(f"{k}={v}" for k, v in status["facts"].items())]
    for name, m in status["models"].items():
        lines.append(f"{name}: active {_slot(m, m['active'])} [{_test_state(m)}], "
                     f"previous {_slot(m, m['previous'])}")  # fmt: skip
        for slot, info in m["slots"].items():
            fields = (f"{k}={_short(v)}" for k, v in info.items())
            lines.append(f"  slot {slot}: " + ", ".join(fields))
        if m["deltas"]:
            lines.append("  deltas: " + ", ".join(m["deltas"]))
    if status.get("transfer"):
        t = status["transfer"]
        lines.append(f"partial transfer {t['sha256'][:12]}…: {t['offset']} of {t['size']} bytes")
    return lines


def _slot(model: dict[str, Any], slot: str | None) -> str:
    """``B (v2)``, or ``none``."""
    version = model["slots"].get(slot, {}).get("version") if slot else None
    return f"{slot} (v{version})" if version else str(slot or "none")


def _test_state(model: dict[str, Any]) -> str:
    """``confirmed``, or TEST with its restarts left and what a restart returns to."""
    if not model["test"]:
        return "confirmed" if model["active"] else "nothing installed"
    left = model["test"]["attempts_left"]
    back = model.get("confirmed")
    to = (
        f"then back to confirmed {_slot(model, back)}" if back else "nothing confirmed to return to"
    )
    return f"TEST, {left} restarts left, {to}"


def _short(value: Any) -> Any:
    """A SHA-256 or fingerprint shortened to 12 hex digits for reading (--json has all 64)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    return value
