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

Usage: ``python tools/bench_flash.py [--baud 921600] [--size 524288] [--plot PNG] [--json OUT]``
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

from firmware_bridge import protocol as p
from firmware_bridge.host import Flasher
from firmware_bridge.relay import Faults, Relay
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baud", type=int, default=921_600)
    ap.add_argument("--size", type=int, default=512 * 1024, help="payload bytes")
    ap.add_argument("--plot", default="docs/img/bench_flash.png")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()
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
