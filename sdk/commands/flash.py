"""``semedge flash``: upload an artifact or a delta to one device or a fleet over serial."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flash",
        help="flash an artifact (dir/.tar) or a *.delta.safetensors to one or more devices",
        description="Upload over serial to `semedge agent`, resuming after link loss, then "
        "activate. TEST activation reverts at the agent's next restart unless you run "
        "`semedge device confirm`. Several devices (repeat --port, or --fleet FILE) are "
        "flashed at once, one progress line each, then a summary table; a device that "
        "fails does not stop the others (exit status 1 if any failed).",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory, .tar, or delta file")
    p.add_argument(
        "--port",
        action="append",
        default=[],
        help="serial device, e.g. /dev/ttyACM0; repeat for several devices",
    )
    p.add_argument(
        "--fleet",
        metavar="FILE",
        help="text file with one serial port per line (# comments) to flash at once",
    )
    p.add_argument("--baud", type=int, default=921600, help="baud rate")
    p.add_argument(
        "--activate",
        choices=("test", "permanent", "none"),
        default="test",
        help="after upload: test (revert unless confirmed), permanent, or none",
    )
    p.add_argument("--model", help="installed model a delta is for (default: the only one)")
    p.add_argument(
        "--retries",
        type=int,
        default=5,
        help="reconnect attempts in a row without progress before giving up",
    )
    p.add_argument("--no-compress", action="store_true", help="never zlib-compress chunks")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run, on_interrupt=how_to_continue)


def how_to_continue(args: argparse.Namespace, argv: list[str]) -> str:
    """After Ctrl-C: the device keeps what it received, so the same command resumes."""
    import shlex

    return (
        "the device keeps what it has received; run the same flash again to resume: "
        f"semedge {shlex.join(argv)}"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from firmware_bridge import fleet
    from firmware_bridge.host import check_upload, serial_flasher

    check_upload(args.artifact)  # a bad file is reported before any port is touched
    ports = list(args.port) + (fleet.read_fleet_file(args.fleet) if args.fleet else [])
    fleet.check_ports(ports)
    activate = None if args.activate == "none" else args.activate
    options = {"compress": not args.no_compress, "retries": args.retries}
    if len(ports) > 1:
        results = fleet.flash_fleet(ports, args.artifact, baud=args.baud, activate=activate,
                                    model=args.model, **options)  # fmt: skip
        if args.json:
            print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
        else:
            print(fleet.summary_table(results))
        return 0 if all(r.ok for r in results) else 1

    flasher = serial_flasher(ports[0], args.baud, **options)
    try:
        result = flasher.flash(args.artifact, activate=activate, model=args.model)
    finally:
        flasher.close()  # BYE: the next `semedge device` call need not wait out the lease
        flasher.link.close()
    stats = dataclasses.asdict(flasher.stats)
    stats["data_seconds"] = round(stats["data_seconds"], 3)
    result["stats"] = stats
    took = f" ({stats['data_wire_bytes']:,} bytes in {stats['data_seconds']:.1f} s)"
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(fleet.describe(result) + took)
    if activate == "test" and "slot" in result:  # an artifact went into a slot
        print(f"confirm with: semedge device confirm --port {ports[0]} "
              "(otherwise it reverts at the agent's next restart)")  # fmt: skip
    return 0
