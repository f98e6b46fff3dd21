"""A new camera on a device: adapt the receiver to the frames it saved, switch the delta
in for the running app, switch it off again — the base comes back bit-exact.

    python examples/new_camera.py --root ROOT --checkpoint CKPT [--frames DIR] [--model M]
    python examples/new_camera.py --tiny      # makes everything in a temp folder (seconds)

ROOT is the agent's device root (``semedge agent --root``) running the receiver of CKPT;
the camera's frames lie in ``DIR/train`` (adapted on) and ``DIR/val`` (measured on),
default ``ROOT/frames``. The steps are the commands a device owner runs:

1. ``semedge adapt zfda CKPT --data ROOT/frames --out D.delta.safetensors --install ROOT
   --activate`` trains a
   sparse delta on the frames (on this device) and switches it on in ``state.json``;
2. the app, which serves through ``sdk.Runtime.open_device(ROOT)``, follows it;
3. ``semedge device deactivate-delta`` (here: the same store call, locally) switches it
   off and the app serves the base weights again, bit-identical to before.

It prints the frames' PSNR through the noiseless link before, with and after the delta.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from tiny_setup import camera_frames, psnr_db, receiver_build, tiny_checkpoint

from firmware_bridge.slots import SlotStore
from sdk import Runtime, artifact
from sdk.cli import main as semedge
from sdk.data import sample_set


def follow(app, key: str, want: str | None, timeout: float = 30.0) -> None:
    """Wait until the app serves ``want`` as its ``key`` (it polls the device state)."""
    deadline = time.monotonic() + timeout
    while app.info()[key] != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"the app did not pick up {key} {want}: {app.last_error}")
        time.sleep(0.02)


def tiny_device(tmp: Path) -> tuple[Path, Path, str]:
    """A trained tiny checkpoint, a device root running its receiver, frames saved there."""
    checkpoint = tiny_checkpoint(tmp / "base")
    build = receiver_build(checkpoint, tmp / "rx", "camera-rx")
    root = tmp / "root"
    store = SlotStore(root)  # what the agent does after `semedge flash --activate permanent`
    store.activate("camera-rx", store.stage("camera-rx", artifact.pack(build, tmp / "rx.tar")),
                   test=False)  # fmt: skip
    camera_frames(root / "frames" / "train", 48)
    camera_frames(root / "frames" / "val", 12, start=48)
    return checkpoint, root, "camera-rx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="the agent's --root on this device")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint of the running receiver")
    parser.add_argument("--frames", type=Path, help="camera frames (default ROOT/frames)")
    parser.add_argument("--model", help="installed model (default: the only one)")
    parser.add_argument("--epochs", type=int, default=30, help="ZFDA epochs (default 30)")
    parser.add_argument("--sparsity", default="0.01", help="ZFDA γ (default 0.01)")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per step (default 64)")
    parser.add_argument("--lr-values", default="1e-4", help="ZFDA value learning rate")
    parser.add_argument("--domain", default="new-camera", help="the delta's name")
    parser.add_argument("--tiny", action="store_true", help="a made-up device, tiny settings")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="semedge-camera-") as tmp:
        if args.tiny:
            args.checkpoint, args.root, args.model = tiny_device(Path(tmp))
            args.epochs, args.sparsity, args.batch_size, args.lr_values = 4, "0.05", 8, "3e-3"
        elif not (args.root and args.checkpoint):
            parser.error("give --root and --checkpoint (or --tiny)")
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    frames = args.frames or args.root / "frames"
    delta = tmp / f"{args.domain}.delta.safetensors"
    with (
        Runtime.load(args.checkpoint, part="transmitter") as tx,
        Runtime.open_device(args.root, args.model, poll=0.05) as app,
    ):
        shape = tuple(tx.inputs[0]["shape"][1:])
        images = sample_set(shape, str(frames), "val").images.numpy()
        symbols = tx.infer(images)["symbols"]
        before = app.infer(symbols)["recon"]
        print(f"{len(images)} new-camera frames, base receiver: {psnr_db(before, images):.2f} dB")

        command = ["adapt", "zfda", str(args.checkpoint), "--data", str(frames), "--domain",
                   args.domain, "--epochs", str(args.epochs), "--sparsity", args.sparsity,
                   "--batch-size", str(args.batch_size), "--lr-values", args.lr_values,
                   "--out", str(delta), "--install", str(args.root), "--activate"]  # fmt: skip
        if args.model:
            command += ["--model", args.model]
        print("$ semedge " + " ".join(command), flush=True)
        started = time.monotonic()
        if semedge(command) != 0:
            return 1
        follow(app, "delta", delta.name)
        adapted = app.infer(symbols)["recon"]
        print(f"app switched to delta {delta.name} {time.monotonic() - started:.1f} s after the "
              f"start of adaptation: {psnr_db(adapted, images):.2f} dB")  # fmt: skip

        model = app.info()["model"]
        print(SlotStore(args.root).revert_change(model, "delta"))  # = device deactivate-delta
        follow(app, "delta", None)
        after = app.infer(symbols)["recon"]
        exact = np.array_equal(after, before)
        print(f"delta off: {psnr_db(after, images):.2f} dB, outputs bit-identical to the "
              f"base: {'yes' if exact else 'NO'}")  # fmt: skip
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
