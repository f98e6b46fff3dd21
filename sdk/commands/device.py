"""``semedge device``: ask a device's agent what it holds and change it (slots, deltas,
updates), or pull a file from it."""

from __future__ import annotations

import argparse
from typing import Any

from sdk.options import RawDescriptionHelpFormatter

ACTIONS = {
    "status": "device facts, slots and any partial transfer",
    "confirm": "make the running TEST build the confirmed one",
    "rollback": "leave the running build (a TEST build: back to the confirmed one)",
    "list": "everything installed: slots, deltas, updates with sizes, fingerprints, signatures",
    "activate-delta": "switch a delta (TARGET: its file name) on for the running build",
    "deactivate-delta": "switch the active delta off (base weights restored)",
    "apply-update": "apply an update package (TARGET: its file name) to the running build",
    "rollback-update": "roll the applied update back",
    "remove": "delete an inactive delta/update file, or an inactive unconfirmed slot (A/B)",
    "pull": "copy TARGET (path in the model's folder, e.g. active/model.onnx) to --out",
    "sim": "run a simulated device (a real agent on a pty pair) on --root; prints its port",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="status | list | confirm | rollback | deltas, updates, remove, pull on a device",
        description="\n".join(f"{a}: {text}" for a, text in ACTIONS.items()),
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=tuple(ACTIONS))
    p.add_argument("target", nargs="?", help="file name, slot or path the action works on")
    p.add_argument("--port", help="serial device, e.g. /dev/ttyACM0 (every action but sim)")
    p.add_argument("--root", help="sim: the simulated device's folder (models/, incoming/)")
    p.add_argument("--baud", type=int, default=921600, help="baud rate")
    p.add_argument(
        "--model", help="model name (default: the only installed one, or the one that fits)"
    )
    p.add_argument("--out", help="pull: where to write the file (default: its name, here)")
    p.add_argument("--json", action="store_true", help="print the device's reply as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from firmware_bridge import remote
    from firmware_bridge.host import serial_flasher
    from sdk.errors import SemedgeError

    needs_target = ("activate-delta", "apply-update", "remove", "pull")
    if args.action in needs_target and not args.target:
        raise SemedgeError(f"device {args.action} needs a TARGET; see: semedge device list")
    if args.action == "sim":
        return simulate(args.root)
    if not args.port:
        raise SemedgeError(f"device {args.action} needs --port (try a simulated device: "
                           "semedge device sim --root DIR)")  # fmt: skip
    flasher = serial_flasher(args.port, args.baud, progress=args.action == "pull")
    verbs = {
        "status": flasher.status,
        "confirm": lambda: flasher.confirm(args.model),
        "rollback": lambda: flasher.rollback(args.model),
        "list": lambda: remote.inventory(flasher),
        "activate-delta": lambda: remote.apply(flasher, args.target, args.model),
        "apply-update": lambda: remote.apply(flasher, args.target, args.model),
        "deactivate-delta": lambda: remote.revert(flasher, "delta", args.model),
        "rollback-update": lambda: remote.revert(flasher, "update", args.model),
        "remove": lambda: remote.remove(flasher, args.target, args.model),
        "pull": lambda: remote.pull(flasher, args.target, Path(args.out or
                                    Path(args.target).name), model=args.model),
    }  # fmt: skip
    try:
        reply = verbs[args.action]()
    finally:
        flasher.close()
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.action == "pull":
        print(f"pulled {reply['model']}/{reply['path']} ({reply['size']} bytes, sha256 "
              f"{reply['sha256'][:12]}…) to {reply['dest']}")  # fmt: skip
    elif args.action == "list":
        print("\n".join(list_lines(reply)))
    else:
        change = [reply["change"]] if reply.get("change") else []
        print("\n".join(change + status_lines(reply)))
    return 0


def simulate(root: str | None) -> int:
    import sys

    from firmware_bridge.sim import simulate
    from sdk.errors import SemedgeError

    if not root:
        raise SemedgeError("device sim needs --root DIR (created if missing)")

    def announce(port: str) -> None:
        print(f"simulated device on {port} (root {root}); try:\n"
              f"  semedge flash --port {port} ARTIFACT\n  semedge device list --port {port}\n"
              "Ctrl-C stops it", flush=True)  # fmt: skip

    try:
        simulate(root, announce)
    except KeyboardInterrupt:
        print("simulated device stopped", file=sys.stderr)
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    """A device's STATUS reply as text: facts, then per model its slots and deltas."""
    facts = (f"{k}={'unknown' if v is None else v}" for k, v in status["facts"].items())
    lines = ["device: " + ", ".join(facts)]
    for name, m in status["models"].items():
        if "error" in m:  # this model's state is broken; the others are listed as usual
            lines.append(f"{name}: ERROR {m['error']}")
            continue
        lines.append(f"{name}: active {_slot(m, m['active'])} [{_test_state(m)}], "
                     f"previous {_slot(m, m['previous'])}")  # fmt: skip
        for slot, info in m["slots"].items():
            fields = (f"{k}={_short(v)}" for k, v in info.items() if v is not None)
            lines.append(f"  slot {slot}: " + ", ".join(fields))
        for kind in ("deltas", "updates"):
            if m.get(kind):
                lines.append(f"  {kind}: " + ", ".join(m[kind]))
        changes = m.get("changes", {})  # an agent of protocol 1 sends none
        active = changes.get(m["active"], {}) if m["active"] else {}
        on = [f"{k} {v}" for k, v in active.items() if v]
        if on:
            lines.append("  active on the running build: " + ", ".join(on))
    if status.get("transfer"):
        t = status["transfer"]
        lines.append(f"partial transfer {t['sha256'][:12]}…: {t['offset']} of {t['size']} bytes")
    return lines


def list_lines(inventory: dict[str, Any]) -> list[str]:
    """LIST as an aligned table: one row per slot and per delta/update file."""
    rows = [("model", "what", "size", "fingerprint", "signed", "state")]
    broken = []
    for name, m in inventory["models"].items():
        if "error" in m:
            broken.append(f"{name}: ERROR {m['error']}")
            continue
        for slot, info in m["slots"].items():
            role = ("running " if slot == m["active"] else "") + (
                "confirmed" if slot == m["confirmed"] else "test" if slot == m["active"] else ""
            )
            what, size = f"slot {slot} v{info.get('version', '?')}", str(info.get("size", ""))
            signed = "yes" if info.get("signed") else "no"
            rows.append((name, what, size, _short(info.get("base_fingerprint", "")), signed,
                         role.strip()))  # fmt: skip
        for c in m["changes"]:
            where = ", ".join(c["active_in"])
            state = f"active on {where}" if where else ""
            rows.append((name, c["file"], str(c["size"]), _short(c["base_fingerprint"] or ""),
                         "yes" if c["signed"] else "no", state))  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return [*lines, *broken, f"free: {inventory['free_bytes']} bytes"]


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
    to = f"then back to confirmed {_slot(model, back)}" if back else "nothing confirmed to go to"
    return f"TEST, {left} restarts left, {to}"


def _short(value: Any) -> Any:
    """A SHA-256 or fingerprint shortened to 12 hex digits for reading (--json has all 64)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, float):
        return f"{value:.3g}"
    return value
