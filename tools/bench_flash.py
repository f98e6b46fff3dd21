"""Flash throughput and wire efficiency over a pty link paced at a UART's line rate.

The agent runs as its own process on one end of :class:`firmware_bridge.relay.Relay`,
the flasher in this process on the other; the relay paces each direction at
``baud / 10`` bytes/s (8N1: start + 8 data + stop bit). For every frame size × window
the same artifact (random payload; compression off, since even a random artifact's tar
padding would compress) is flashed to a fresh agent root; a last run flashes a
compressible payload with per-chunk zlib on:

* wire efficiency = payload bytes (the artifact ``.tar``) / bytes the host put on the
  wire (COBS, header, CRC, delimiters, DATA offsets, control frames; retransmissions
  would count too);
* data-phase throughput = payload bytes / seconds from BEGIN's reply to the last ACK,
  as a fraction of the line rate; end-to-end adds HELLO, BEGIN, VERIFY (hash + install
  into the slot) and ACTIVATE.

With ``--faults 1e-6,1e-5,1e-4,1e-3`` it measures the link under noise instead: the
relay drops, flips and duplicates each byte with probability ``p`` each (so about
``3p`` of the bytes are damaged, both directions), and each rate is flashed
``--repeats`` times (rates interleaved, so load drift on a shared machine hits them
alike; include ``0`` for a clean reference in the same run) with the flasher's
defaults (``serial_flasher``: adaptive frame size) except compression, which is off
(the tar's headers and padding would compress and flatter the ratio). Goodput = tar
bytes / DATA phase / line rate, next to what :mod:`firmware_bridge.framesize` predicts
at the optimum frame size for ``3p``.

Usage: ``python tools/bench_flash.py [--baud 921600] [--size 524288] [--plot PNG] [--json OUT]
[--faults RATES --repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import serial

from firmware_bridge import framesize
from firmware_bridge import protocol as p
from firmware_bridge.host import Flasher, LinkLost, serial_flasher
from firmware_bridge.relay import Faults, Relay
from firmware_bridge.slots import SlotStore
from firmware_bridge.transport import Link
from sdk import artifact

CONFIGS = [(1024, 16384), (2048, 32768), (4096, 32768), (8192, 32768), (8192, 65536)]
"""(DATA chunk bytes, window bytes) pairs measured."""


def make(tmp: Path, size: int, compressible: bool) -> Path:
    rng = random.Random(0)
    if compressible:  # float32 weights with few distinct values, like a quantised model
        payload = b"".join(
            rng.choice([b"\x00\x00\x80\x3f", b"\x00\x00\x00\x00"]) for _ in range(size // 4)
        )
    else:
        payload = rng.randbytes(size)
    manifest = artifact.make_manifest(
        name="bench", model_class="DeepJSCC", part="receiver", base_fingerprint="00" * 32,
        backend="onnxrt", precision="fp32",
        inputs=[{"name": "z", "shape": [-1, 8], "dtype": "float32"}],
        outputs=[{"name": "y", "shape": [-1, 8], "dtype": "float32"}],
    )  # fmt: skip
    name = "compressible" if compressible else "random"
    return artifact.pack(artifact.write_artifact(tmp / name, manifest, {"model.onnx": payload}))


def run_one(tar: Path, chunk: int, window: int, baud: int, compress: bool, tmp: Path) -> dict:
    relay = Relay(Faults(rate=baud / 10))
    root = tmp / f"root-{chunk}-{window}-{compress}-{time.monotonic_ns()}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "agent", "--port", relay.agent_port, "--root", str(root)],
        stderr=subprocess.DEVNULL,
    )
    try:
        link = Link(serial.Serial(relay.host_port, timeout=0.02), device=False,
                    max_payload=chunk + p.DATA_HEADER.size)  # fmt: skip
        rto = 0.5 + 10 * window / baud
        flasher = Flasher(link, window=window, rto=rto, link_timeout=rto + 3,
                          compress=compress, progress=False)  # fmt: skip
        flasher.hello()  # waits for the agent process to come up; not timed
        t0 = time.monotonic()
        flasher.flash(tar, activate="permanent")
        seconds = time.monotonic() - t0
        stats = flasher.stats
        size = tar.stat().st_size
        line = baud / 10
        return {
            "chunk": chunk, "window": window, "compress": compress, "bytes": size,
            "wire_efficiency": size / link.bytes_out,
            "data_phase_wire_efficiency": size / stats.data_wire_bytes,
            "data_phase_fraction_of_line_rate": size / stats.data_seconds / line,
            "end_to_end_fraction_of_line_rate": size / seconds / line,
            "seconds": seconds, "retransmitted": stats.retransmitted,
            "device_to_host_bytes": relay.to_host,
        }  # fmt: skip
    finally:
        agent.kill()
        agent.wait()
        relay.close()


def run_faulty(
    tar: Path, rate: float, seed: int, baud: int, tmp: Path, pipe: int, fifo: float
) -> dict:
    """Flash ``tar`` through a relay damaging each byte with ``rate`` per fault kind."""
    faults = Faults(drop=rate, flip=rate, dup=rate, rate=baud / 10, seed=seed, fifo=fifo)
    relay = Relay(faults)
    root = tmp / f"root-{rate}-{seed}-{time.monotonic_ns()}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "agent", "--port", relay.agent_port, "--root", str(root)],
        stderr=subprocess.DEVNULL,
    )
    q = 1 - (1 - 2 * rate) * (1 - rate)  # damaged bytes per byte
    best = framesize.optimal_chunk(q)
    row = {"p_each": rate, "damaged_per_byte": q, "seed": seed, "pipe": pipe, "theory_chunk": best,
           "theory_goodput": framesize.goodput(min(best, 8192), q)}  # fmt: skip
    try:
        flasher = serial_flasher(relay.host_port, baud, progress=False, pipe=pipe, compress=False)
        deadline = time.monotonic() + 30
        while True:  # wait for the agent process; not timed
            try:
                flasher.hello()
                break
            except LinkLost:
                if time.monotonic() > deadline:
                    raise
        t0 = time.monotonic()
        try:
            flasher.flash(tar, activate="permanent")
            row["completed"] = True
        except (LinkLost, p.ProtocolError) as exc:
            row |= {"completed": False, "error": str(exc)}
        seconds = time.monotonic() - t0
        installed = (
            row["completed"]
            and artifact.verify_artifact(SlotStore(root).active_dir("bench"))["files"]
            == artifact.read_manifest(tar)["files"]
        )
        stats = flasher.stats
        size, line = tar.stat().st_size, baud / 10
        return row | {
            "sha256_ok": bool(installed), "seconds": seconds,
            "goodput": size / stats.data_seconds / line if stats.data_seconds else 0.0,
            "end_to_end": size / seconds / line, "lost_frames": stats.lost_frames,
            "retransmitted": stats.retransmitted, "reconnects": stats.reconnects,
            "timeouts": stats.timeouts, "fifo": fifo,
            "frame_sizes": stats.frame_sizes,
            "final_chunk": flasher.sizer.chunk if flasher.sizer else None,
            "estimated_damage_per_byte": stats.fault_rate_estimate,
        }  # fmt: skip
    finally:
        agent.kill()
        agent.wait()
        relay.close()


def fault_sweep(args: argparse.Namespace) -> int:
    rates = [float(r) for r in args.faults.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tar = make(tmp, args.size, False)
        pipes = [int(x) for x in args.pipe.split(",")]
        for seed in range(args.repeats):  # interleaved: load drift hits every setting alike
            for rate in rates:
                for pipe in pipes:
                    rows.append(run_faulty(tar, rate, seed, args.baud, tmp, pipe, args.fifo))
                    print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (r["p_each"], r["pipe"], r["seed"]))
    print(f"\nline rate {args.baud} baud 8N1 = {args.baud / 10:.0f} B/s, payload {args.size} B")
    print(f"{'p each':>7} {'pipe':>6} {'q=3p':>7} {'L* (theory)':>11} {'G(L*)':>6} {'done':>5} "
          f"{'goodput':>8} {'e2e':>6} {'lost':>5} {'final L':>7} {'q est':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['p_each']:>7.0e} {r['pipe']:>6} {r['damaged_per_byte']:>7.1e} "
              f"{r['theory_chunk']:>11.0f} "
              f"{r['theory_goodput']:>6.3f} {r['completed']!s:>5} {r['goodput']:>8.3f} "
              f"{r['end_to_end']:>6.3f} {r['lost_frames']:>5} {r['final_chunk']:>7} "
              f"{r['estimated_damage_per_byte']:>8.1e}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot_sweep(rows, args)
    return 0


def plot_sweep(rows: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.8))
    noisy = [r["p_each"] for r in rows if r["p_each"] > 0]
    ps = np.logspace(np.log10(min(noisy)) - 0.3,
                     np.log10(max(noisy)) + 0.2, 60)  # fmt: skip
    qs = 1 - (1 - 2 * ps) * (1 - ps)
    theory = [framesize.goodput(min(framesize.optimal_chunk(q), 8192), q) for q in qs]
    fixed = [framesize.goodput(8192, q) for q in qs]
    ax.semilogx(ps, theory, "k-", lw=1, label="theory, optimum frame (≤ 8 KiB)")
    ax.semilogx(ps, fixed, "k:", lw=1, label="theory, fixed 8 KiB frames")
    done = [r for r in rows if r["completed"] and r["p_each"] > 0]
    ax.semilogx([r["p_each"] for r in done], [r["goodput"] for r in done], "o", c="C0",
                label="measured DATA phase")  # fmt: skip
    ax.semilogx([r["p_each"] for r in done], [r["end_to_end"] for r in done], "x", c="C1",
                label="measured end to end")  # fmt: skip
    ax.axhline(0.9, ls="--", c="gray", lw=0.7)
    ax.axhline(0.6, ls="--", c="gray", lw=0.7)
    ax.set_xlabel("fault probability per byte, each of drop / flip / duplicate")
    ax.set_ylabel("goodput / line rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"semedge flash through a faulty link at {args.baud} baud 8N1")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
    fig.savefig(args.plot, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baud", type=int, default=921_600)
    ap.add_argument("--size", type=int, default=512 * 1024, help="payload bytes")
    ap.add_argument("--plot", default="docs/img/bench_flash.png")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--faults", help="comma-separated fault rates per byte: run the noise sweep")
    ap.add_argument("--repeats", type=int, default=3, help="flashes per fault rate (default 3)")
    ap.add_argument("--fifo", type=float, default=0.01, help="seconds of UART FIFO the relay "
                    "emulates (default 0.01; 0 = every late wakeup idles the line)")  # fmt: skip
    ap.add_argument("--pipe", default="32768", help="comma-separated pipe sizes to compare "
                    "(bytes of unknown fate in flight; default 32768, the flasher's)")  # fmt: skip
    args = ap.parse_args()
    if args.faults:
        if args.plot == ap.get_default("plot"):
            args.plot = "docs/img/bench_flash_faults.png"
        return fault_sweep(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rnd, comp = make(tmp, args.size, False), make(tmp, args.size, True)
        for chunk, window in CONFIGS:
            rows.append(run_one(rnd, chunk, window, args.baud, False, tmp))
            print(json.dumps(rows[-1]), flush=True)
        rows.append(run_one(comp, 8192, 65536, args.baud, True, tmp) | {"payload": "compressible"})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nline rate {args.baud} baud 8N1 = {args.baud / 10:.0f} B/s, payload {args.size} B")
    print(f"{'chunk':>6} {'window':>7} {'wire eff':>9} {'data/line':>10} {'e2e/line':>9}")
    for r in rows:
        print(f"{r['chunk']:>6} {r['window']:>7} {r['wire_efficiency']:>9.4f} "
              f"{r['data_phase_fraction_of_line_rate']:>10.4f} "
              f"{r['end_to_end_fraction_of_line_rate']:>9.4f}"
              + ("  (compressible payload)" if r.get("payload") else ""))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{r['chunk'] // 1024}K/{r['window'] // 1024}K" for r in rows[:-1]]
        x = range(len(labels))
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar([i - 0.2 for i in x], [r["wire_efficiency"] for r in rows[:-1]], 0.4,
               label="wire efficiency")  # fmt: skip
        ax.bar([i + 0.2 for i in x], [r["data_phase_fraction_of_line_rate"] for r in rows[:-1]],
               0.4, label="throughput / line rate")  # fmt: skip
        ax.axhline(0.97, ls="--", c="C0", lw=0.8)
        ax.axhline(0.90, ls="--", c="C1", lw=0.8)
        ax.axhline(0.74, ls=":", c="gray", lw=0.8, label="esptool ≈ 0.74")
        ax.set_xticks(list(x), labels)
        ax.set_xlabel("DATA chunk / window")
        ax.set_ylim(0.5, 1.02)
        ax.set_title(f"semedge flash at {args.baud} baud 8N1 (random payload)")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
