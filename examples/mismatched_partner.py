"""A mismatched partner: re-align this transmitter with a receiver device by SLF, over
the link — pull the partner's decoder, push the update back, apply it, roll it back.

    python examples/mismatched_partner.py --port PORT --tx CKPT --partner-file NAME
                                          [--data DIR] [--root ROOT]
    python examples/mismatched_partner.py --tiny   # a simulated partner device (seconds)

PORT is the receiver device's link (``semedge device sim --root ROOT`` prints one to try
it without hardware); NAME is its decoder download in the model's folder there (the
partner writes it with ``semedge adapt slf --rx CKPT --save-download FILE``). The steps
are the commands a user runs on the transmitter's side:

1. ``semedge device pull NAME --port PORT --out HERE`` (resumable, hash-checked);
2. ``semedge adapt slf --tx CKPT --rx HERE --data DIR --freeze L --out U --port PORT
   --activate``: fine-tune on this side's own images, flash the update, apply it;
3. ``semedge device rollback-update --port PORT`` when asked to.

With ``--root`` (the partner's device root is readable here, as with the simulator) it
also measures the images' PSNR end to end through the partner's running app
(``sdk.Runtime.open_device``): mismatched, aligned, rolled back (bit-exact).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tiny_setup import camera_frames, psnr_db, receiver_build, tiny_checkpoint

from sdk import Runtime
from sdk.cli import main as semedge
from sdk.data import sample_set


def run_step(*command: str) -> None:
    """Run one ``semedge`` command (printed first), stopping the example if it fails."""
    print("$ semedge " + " ".join(command), flush=True)
    if semedge(list(command)) != 0:
        raise SystemExit(1)


def wait_for(app, want: str | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while app.info()["update"] != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"the partner's app did not pick up update {want}")
        time.sleep(0.02)


def simulated_partner(tmp: Path) -> tuple[subprocess.Popen, str, Path, Path, Path]:
    """A partner device (real agent on a pty pair) running a receiver trained apart from
    this side's transmitter; returns (its process, port, root, this side's tx, download)."""
    rx = tiny_checkpoint(tmp / "partner", seed=0)
    tx = tiny_checkpoint(tmp / "mine", seed=1)
    root = tmp / "partner-root"
    sim = subprocess.Popen([sys.executable, "-m", "sdk.cli", "device", "sim", "--root",
                            str(root)], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    line = sim.stdout.readline() if sim.stdout else ""
    port = re.search(r"simulated device on (\S+)", line)
    if port is None:
        sim.kill()
        raise SystemExit(f"the simulated device did not start: {line!r}")
    run_step("flash", "--port", port[1], str(receiver_build(rx, tmp / "rx", "partner-rx")),
             "--activate", "permanent")  # fmt: skip
    # the partner saves its decoder download beside its model (its own side of the deal)
    download = root / "models" / "partner-rx" / "rx.decoder.safetensors"
    run_step("adapt", "slf", "--rx", str(rx), "--save-download", str(download))
    return sim, port[1], root, tx, download


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", help="the receiver device's serial port")
    parser.add_argument("--tx", type=Path, help="this side's transmitter checkpoint")
    parser.add_argument("--partner-file", default="rx.decoder.safetensors",
                        help="the decoder download in the partner's model folder")  # fmt: skip
    parser.add_argument("--data", type=Path, help="this side's images (default: tx's dataset)")
    parser.add_argument("--root", type=Path, help="the partner's device root, to measure")
    parser.add_argument("--freeze", type=int, default=1, help="ℓ, frozen decoder layers")
    parser.add_argument("--steps", type=int, default=300, help="SLF steps (default 300)")
    parser.add_argument("--tiny", action="store_true", help="a simulated partner, tiny settings")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="semedge-partner-") as tmp:
        sim = None
        if args.tiny:
            sim, args.port, args.root, args.tx, download = simulated_partner(Path(tmp))
            args.partner_file, args.steps = download.name, 60
            args.data = camera_frames(Path(tmp) / "my-frames", 48, tint=(1.0, 1.0, 1.0))
        elif not (args.port and args.tx):
            parser.error("give --port and --tx (or --tiny)")
        try:
            return run(args, Path(tmp))
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(timeout=10)


def run(args: argparse.Namespace, tmp: Path) -> int:
    download = tmp / args.partner_file
    update = tmp / "partner.update.safetensors"
    run_step("device", "pull", args.partner_file, "--port", args.port, "--out", str(download))
    app = Runtime.open_device(args.root, poll=0.05) if args.root else None
    images = symbols = before = None
    if app is not None:
        with Runtime.load(args.tx, part="transmitter") as tx:
            shape = tuple(tx.inputs[0]["shape"][1:])
            data = str(args.data) if args.data else None
            images = sample_set(shape, data, "val").images.numpy()[:32]
            symbols = tx.infer(images)["symbols"]
        before = app.infer(symbols)["recon"]
        print(f"mismatched: {psnr_db(before, images):.2f} dB on {len(images)} images")
    command = ["adapt", "slf", "--tx", str(args.tx), "--rx", str(download), "--freeze",
               str(args.freeze), "--steps", str(args.steps), "--batch-size", "16", "--out",
               str(update), "--port", args.port, "--activate"]  # fmt: skip
    run_step(*command, *(["--data", str(args.data)] if args.data else []))
    if app is None:
        run_step("device", "rollback-update", "--port", args.port)
        return 0
    try:
        wait_for(app, update.name)
        with Runtime.load(tmp / "partner.tx", part="transmitter") as tx:
            aligned = app.infer(tx.infer(images)["symbols"])["recon"]
        print(f"aligned by SLF: {psnr_db(aligned, images):.2f} dB (update {update.stat().st_size}"
              " bytes)")  # fmt: skip
        run_step("device", "rollback-update", "--port", args.port)
        wait_for(app, None)
        back = app.infer(symbols)["recon"]
        exact = np.array_equal(back, before)
        print(f"rolled back: {psnr_db(back, images):.2f} dB, outputs bit-identical to the "
              f"partner's base: {'yes' if exact else 'NO'}")  # fmt: skip
    finally:
        app.close()
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
