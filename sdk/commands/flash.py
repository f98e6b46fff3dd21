"""``semedge flash``: upload an artifact or a delta to a device over serial."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flash",
        help="flash an artifact (dir/.tar) or a *.delta.safetensors to a device",
        description="Upload over serial to `semedge agent`, resuming after link loss, then "
        "activate. TEST activation reverts at the agent's next restart unless you run "
        "`semedge device confirm`.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory, .tar, or delta file")
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
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

    from firmware_bridge.host import check_upload, serial_flasher

    check_upload(args.artifact)  # a bad file is reported before the port is touched
    flasher = serial_flasher(
        args.port, args.baud, compress=not args.no_compress, retries=args.retries
    )
    activate = None if args.activate == "none" else args.activate
    result = flasher.flash(args.artifact, activate=activate, model=args.model)
    stats = dataclasses.asdict(flasher.stats)
    stats["data_seconds"] = round(stats["data_seconds"], 3)
    result["stats"] = stats
    took = f" ({stats['data_wire_bytes']:,} bytes in {stats['data_seconds']:.1f} s)"
    if args.json:
        print(json.dumps(result, indent=2))
    elif "delta" in result:
        print(f"installed delta {result['delta']} for {result['model']}{took}")
    else:
        print(f"installed {result['model']} in slot {result['slot']}"
              + (f", activated ({result['activated']})" if activate else "") + took)  # fmt: skip
        if activate == "test":
            print(f"confirm with: semedge device confirm --port {args.port} "
                  "(otherwise it reverts at the agent's next restart)")  # fmt: skip
    return 0
