"""``semedge quickstart``: the whole product on one CPU in a few minutes, on real photos.

1. train   a DeepJSCC (R = 1/6: 512 complex channel uses per 32x32x3 patch) over SNRs
           0..20 dB on patches of the scikit-image photos; sweep the channel SNR on a
           held-out photo against uncoded transmission and the mean colour at the same
           bandwidth (:class:`sdk.evaluate.Uncoded`, :class:`sdk.evaluate.MeanColour`);
2. adapt   the receiver to a hue-shifted camera with a ZFDA delta (1 % of the decoder's
           weights) and switch it off again: the base outputs are bit-identical;
3. deploy  the receiver as an ONNX Runtime artifact whose delta targets are graph
           inputs; check it against torch and switch the delta on and off through
           ``sdk.Runtime``;
4. flash   the artifact and the delta over a 921,600-baud serial link (a pty pair) to a
           device agent running in its own process, into an A/B slot, and confirm.

Everything is written under ``--out``; running again with the same settings reuses the
finished training run there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import SemedgeError
from sdk.options import RawDescriptionHelpFormatter

SWEEP_DB = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
REPORT_DB = 10.0
DOMAIN = "hue"
BAUD = 921_600


@dataclass(frozen=True)
class Preset:
    epochs: int
    hidden: int
    train_patches: int | None  # None = all
    zfda_epochs: int
    zfda_patches: int


FULL = Preset(epochs=6, hidden=32, train_patches=None, zfda_epochs=3, zfda_patches=3000)
FAST = Preset(epochs=1, hidden=16, train_patches=2000, zfda_epochs=1, zfda_patches=500)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train, adapt, deploy and flash a small DeepJSCC on real photos (minutes, CPU)",
        description=__doc__,
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        help="output folder (default: runs/quickstart, or runs/quickstart-fast with --fast)",
    )
    p.add_argument(
        "--fast", action="store_true", help="1 epoch on 2,000 patches, tiny model (a smoke test)"
    )
    p.add_argument("--no-flash", action="store_true", help="skip step 4 (needs ptys: Linux/macOS)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: all, or 1 if the CPU is busy)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import time

    import torch

    from sdk.data import load_dataset
    from sdk.train import default_threads

    start = time.perf_counter()
    torch.set_num_threads(args.threads or default_threads())
    preset = FAST if args.fast else FULL
    out = Path(args.out or ("runs/quickstart-fast" if args.fast else "runs/quickstart"))
    train_set = load_dataset("patches", "train")
    if preset.train_patches:
        train_set = train_set.spread(preset.train_patches)
    test_set = load_dataset("patches", "test")
    flash = not args.no_flash and hasattr(os, "openpty")  # ptys: Linux/macOS
    steps = 4 if flash else 3
    _header(1, steps, f"train DeepJSCC (R=1/6) on {len(train_set)} patches of real photos")
    model = _train(train_set, test_set, out, preset, args.seed)
    _header(2, steps, f"adapt the receiver to a {DOMAIN}-shifted camera with a ZFDA delta")
    delta_path = _adapt(model, train_set, test_set, out, preset, args.seed)
    _header(3, steps, "deploy the receiver as an ONNX Runtime artifact; switch the delta there")
    artifact = _deploy(model, test_set, out, delta_path)
    if flash:
        _header(4, steps, f"flash artifact and delta to a device agent over a {BAUD}-baud pty")
        _flash(out, artifact, delta_path)
    print(f"\ndone in {time.perf_counter() - start:.0f} s; everything is in {out}/")
    print(f"next: semedge eval {out} --domain {DOMAIN} --delta {delta_path} --snr 0,10,20")
    return 0


def _header(step: int, steps: int, text: str) -> None:
    print(f"\n[{step}/{steps}] {text}", flush=True)


def _train(train_set: Any, test_set: Any, out: Path, preset: Preset, seed: int) -> Any:
    import torch

    from sdk.evaluate import MeanColour, Uncoded, evaluate, format_table, plot
    from sdk.models import DeepJSCC
    from sdk.train import TrainConfig, history_table, train

    torch.manual_seed(seed)
    model = DeepJSCC(bandwidth_ratio=1 / 6, hidden=preset.hidden)
    config = TrainConfig(epochs=preset.epochs, batch_size=32, lr=1e-3, seed=seed, data="patches")
    print(history_table(train(model, train_set, config, out)))
    rows = evaluate(model, test_set, SWEEP_DB, label="DeepJSCC")
    rows += evaluate(Uncoded(model.channel_uses), test_set, SWEEP_DB, label="uncoded")
    rows += evaluate(MeanColour(), test_set, [REPORT_DB], label="mean colour")
    print(format_table(rows))
    png = plot(rows, out / "quickstart.png", title="DeepJSCC vs references, R = 1/6, AWGN")
    at = {r["model"]: r["psnr"] for r in rows if r["snr_db"] == REPORT_DB}
    print(
        f"At SNR {REPORT_DB:g} dB: DeepJSCC {at['DeepJSCC']:.2f} dB PSNR, uncoded "
        f"{at['uncoded']:.2f} dB, mean colour {at['mean colour']:.2f} dB "
        f"on {len(test_set)} held-out patches"
    )
    print(f"checkpoint: {out / 'checkpoint'}   plot: {png}")
    return model


def _adapt(model: Any, train_set: Any, test_set: Any, out: Path, preset: Preset, seed: int) -> Path:
    import torch

    from sdk.adapt.zfda import ZFDAConfig, adapt_zfda
    from sdk.checkpoint import RUN_CHECKPOINT, WEIGHTS
    from sdk.data.shifts import shift_dataset
    from sdk.delta import TorchDeltas, save_delta
    from sdk.evaluate import evaluate, image_grid, reconstructions

    shifted = shift_dataset(train_set.spread(preset.zfda_patches), DOMAIN)
    delta = adapt_zfda(model, shifted, DOMAIN, ZFDAConfig(epochs=preset.zfda_epochs, seed=seed))
    path = save_delta(delta, out / f"{DOMAIN}.delta.safetensors")
    # Rows say what they show: what was sent, and what DeepJSCC made of it at REPORT_DB.
    clean_in, clean_out = reconstructions(model, test_set, [REPORT_DB], seed=seed).values()
    camera_in, base_out = reconstructions(
        model, test_set, [REPORT_DB], seed=seed, domain=DOMAIN
    ).values()
    at = f"@ {REPORT_DB:g} dB"
    rows = {
        "clean": "clean photo\n(sent)",
        "clean out": f"DeepJSCC output\n{at}",
        "camera": f"{DOMAIN}-shifted\ncamera (sent)",
        "base out": f"base model\noutput {at}",
        "delta out": f"with the {DOMAIN}\ndelta {at}",
    }
    examples = {
        rows["clean"]: clean_in,
        rows["clean out"]: clean_out,
        rows["camera"]: camera_in,
        rows["base out"]: base_out,
    }
    with torch.no_grad():
        symbols = model.transmitter(test_set.images[:64])
        before = model.receiver(symbols)["recon"]
    base = evaluate(model, test_set, [REPORT_DB], domain=DOMAIN)[0]["psnr"]
    deltas = TorchDeltas(model)
    deltas.activate(deltas.load(path))
    adapted = evaluate(model, test_set, [REPORT_DB], domain=DOMAIN)[0]["psnr"]
    _, examples[rows["delta out"]] = reconstructions(
        model, test_set, [REPORT_DB], seed=seed, domain=DOMAIN
    ).values()
    deltas.deactivate()
    with torch.no_grad():
        identical = torch.equal(model.receiver(symbols)["recon"], before)
    targets = {rows["clean out"]: rows["clean"]}
    targets |= {rows[k]: rows["camera"] for k in ("base out", "delta out")}
    title = f"held-out photo, channel SNR {REPORT_DB:g} dB; PSNR of each output vs what was sent"
    png = image_grid(examples, out / "examples.png", title=title, targets=targets)
    share = 100 * path.stat().st_size / (out / RUN_CHECKPOINT / WEIGHTS).stat().st_size
    print(
        f"delta {path}: {delta.nnz} weights, {path.stat().st_size:,} bytes "
        f"({share:.2f} % of the checkpoint)\n"
        f"{DOMAIN}-shifted test photo at {REPORT_DB:g} dB: base {base:.2f} dB PSNR, "
        f"with the delta {adapted:.2f} dB ({adapted - base:+.2f} dB)\n"
        f"delta off: base outputs {'bit-identical' if identical else 'CHANGED'} to before\n"
        f"examples: {png}"
    )
    if not identical:
        raise SemedgeError("switching the delta off did not restore the base bit-exactly")
    return path


def _deploy(model: Any, test_set: Any, out: Path, delta_path: Path) -> Path:
    import numpy as np
    import torch

    from sdk import Runtime
    from sdk.build import build
    from sdk.data.shifts import apply_shift
    from sdk.delta import TorchDeltas
    from sdk.evaluate import psnr

    artifact = build(
        out,
        out / "artifact-rx",
        backend="onnxrt",
        part="receiver",
        delta_targets="decoder",
        name="quickstart-rx",
    )
    images = apply_shift(test_set.images[:64], DOMAIN)
    torch.manual_seed(0)
    with torch.no_grad():
        symbols = model.channel(model.transmitter(images), REPORT_DB)
        torch_base = model.receiver(symbols)["recon"].numpy()
        deltas = TorchDeltas(model)
        deltas.activate(deltas.load(delta_path))
        torch_adapted = model.receiver(symbols)["recon"].numpy()
        deltas.deactivate()
    with Runtime.load(artifact) as rt:
        base = rt.infer(symbols.numpy())["recon"]
        rt.activate_delta(delta_path)
        adapted = rt.infer(symbols.numpy())["recon"]
        rt.deactivate_delta()
        restored = rt.infer(symbols.numpy())["recon"]
        mode = rt.delta_mode
    restored_exactly = np.array_equal(base, restored)
    gain = float(psnr(torch.from_numpy(adapted), images) - psnr(torch.from_numpy(base), images))
    print(
        f"artifact {artifact}: ONNX Runtime vs torch max |diff| "
        f"{np.abs(base - torch_base).max():.1e} (delta off), "
        f"{np.abs(adapted - torch_adapted).max():.1e} (delta on)\n"
        f"delta switched in {mode} mode: {gain:+.2f} dB on 64 {DOMAIN}-shifted patches; "
        f"off again: outputs {'bit-identical' if restored_exactly else 'CHANGED'}"
    )
    if not restored_exactly:
        raise SemedgeError("the runtime did not restore the base outputs bit-exactly")
    return artifact


def _flash(out: Path, artifact: Path, delta_path: Path) -> None:
    import contextlib
    import shutil
    import subprocess
    import sys
    import time

    from firmware_bridge.host import serial_flasher
    from firmware_bridge.protocol import ProtocolError
    from firmware_bridge.relay import Faults, Relay
    from sdk.commands.device import status_lines

    device, log = out / "device", out / "device-agent.log"
    shutil.rmtree(device, ignore_errors=True)  # a fresh simulated device every run
    with contextlib.ExitStack() as cleanup:
        relay = Relay(Faults(rate=BAUD / 10))  # 8N1: ten bits on the wire per byte
        cleanup.callback(relay.close)
        with open(log, "w") as agent_log:
            command = [sys.executable, "-m", "sdk.cli", "agent"]
            agent = subprocess.Popen(
                [*command, "--port", relay.agent_port, "--root", str(device)],
                stdout=agent_log,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(_stop, agent)
        flasher = serial_flasher(relay.host_port, BAUD, retries=1)
        cleanup.callback(flasher.link.close)
        try:
            start = time.perf_counter()
            installed = flasher.flash(artifact, activate="test")
            flasher.confirm()
            flasher.flash(delta_path)
            seconds = time.perf_counter() - start
            status = flasher.status()
        except ProtocolError as exc:
            said = log.read_text(errors="replace").strip().splitlines() or ["nothing"]
            raise ProtocolError(
                f"{exc} — the simulated device said: {said[-1]} (log: {log}); try --no-flash"
            ) from None
    print(
        f"installed {installed['model']} in slot {installed['slot']}, confirmed, plus the "
        f"{DOMAIN} delta: {flasher.stats.data_wire_bytes:,} bytes on the wire in {seconds:.1f} s"
    )
    print("\n".join(status_lines(status)))


def _stop(process: Any) -> None:
    """Terminate ``process``, and kill it if it has not gone within 10 s."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
