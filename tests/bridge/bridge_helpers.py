"""Test rig: pty pairs, a seeded fault-injecting relay, artifacts, agent/host processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from sdk import artifact


def pty_pair() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) with the slave in raw mode (no echo, no cooking)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


@dataclass
class Faults:
    """Per-byte fault probabilities and link behaviour; everything drawn from ``seed``."""

    drop: float = 0.0
    flip: float = 0.0
    dup: float = 0.0
    stall: float = 0.0  # probability per forwarded block of a 0.05-0.3 s stall
    disconnect_after: list[int] = field(default_factory=list)  # host->agent byte counts
    disconnect_seconds: float = 1.5
    rate: float | None = None  # bytes/s per direction (921600 baud 8N1 -> 92160)
    seed: int = 0


class Relay:
    """Host ptys <-> agent pty, forwarding through :class:`Faults` in a thread.

    Several host ports may share the agent (what a second concurrent host looks like):
    their bytes are merged towards the agent, the agent's bytes go to all of them.
    """

    def __init__(self, faults: Faults | None = None, hosts: int = 1) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self.agent_master, self._agent_slave, self.agent_port = pty_pair()
        self.hosts = [pty_pair() for _ in range(hosts)]
        self.host_ports = [h[2] for h in self.hosts]
        self.host_port = self.host_ports[0]
        self.to_agent = 0
        self.to_host = 0
        self.down_until = 0.0
        self._pending_disconnects = sorted(self.faults.disconnect_after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _mangle(self, data: bytes) -> bytes:
        f = self.faults
        if not (f.drop or f.flip or f.dup):
            return data
        out = bytearray()
        for b in data:
            r = self.rng.random()
            if r < f.drop:
                continue
            if r < f.drop + f.flip:
                b ^= 1 << self.rng.randrange(8)
            out.append(b)
            if self.rng.random() < f.dup:
                out.append(b)
        return bytes(out)

    def _forward(self, fd_out: int, data: bytes, to_agent: bool) -> None:
        now = time.monotonic()
        if to_agent:
            self.to_agent += len(data)
            if self._pending_disconnects and self.to_agent >= self._pending_disconnects[0]:
                self._pending_disconnects.pop(0)
                self.down_until = now + self.faults.disconnect_seconds
        else:
            self.to_host += len(data)
        if now < self.down_until:
            return  # cable pulled: everything in flight is lost
        if self.faults.stall and self.rng.random() < self.faults.stall:
            time.sleep(self.rng.uniform(0.05, 0.3))
        data = self._mangle(data)
        if self.faults.rate:
            time.sleep(len(data) / self.faults.rate)
        with contextlib.suppress(OSError):
            os.write(fd_out, data)

    def _run(self) -> None:
        fds = [self.agent_master] + [h[0] for h in self.hosts]
        chunk = 1024 if self.faults.rate else 65536
        while not self._stop.is_set():
            ready, _, _ = select.select(fds, [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, chunk)
                except OSError:
                    continue
                if fd == self.agent_master:
                    for h in self.hosts:
                        self._forward(h[0], data, to_agent=False)
                else:
                    self._forward(self.agent_master, data, to_agent=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in [self.agent_master, self._agent_slave] + [x for h in self.hosts for x in h[:2]]:
            os.close(fd)


def make_artifact(
    where: Path,
    *,
    name: str = "rx",
    size: int = 20_000,
    seed: int = 0,
    version: str = "1",
    counter: int = 0,
    backend: str = "onnxrt",
    target: dict | None = None,
    fingerprint: str = "ab" * 32,
) -> Path:
    """A small artifact directory with a random (incompressible) payload."""
    payload = random.Random(seed).randbytes(size)
    manifest = artifact.make_manifest(
        name=name, model_class="DeepJSCC", part="receiver", base_fingerprint=fingerprint,
        backend=backend, precision="fp32",
        inputs=[{"name": "z", "shape": [-1, 16], "dtype": "float32"}],
        outputs=[{"name": "recon", "shape": [-1, 3, 8, 8], "dtype": "float32"}],
        version=version, target=target, security_counter=counter,
    )  # fmt: skip
    return artifact.write_artifact(where, manifest, {"model.onnx": payload})


def make_delta(path: Path, base_fingerprint: str, size: int = 3000) -> Path:
    """A tiny safetensors file with delta metadata (header written by hand; no torch)."""
    values = random.Random(1).randbytes(size)
    header = {
        "__metadata__": {"format": "semedge.delta", "base_fingerprint": base_fingerprint,
                         "domain": "rotation", "kind": "zfda"},
        "w.delta_values": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]},
    }  # fmt: skip
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + values)
    return path


CLI = [sys.executable, "-m", "sdk.cli"]


class Processes:
    """Every process a test starts; all killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def agent(self, port: str, root: Path, *extra: str, env: dict | None = None,
              facts: dict | None = None) -> subprocess.Popen:  # fmt: skip
        facts_file = root.parent / f"{root.name}-facts.json"
        facts_file.write_text(json.dumps(facts or {"free_bytes": 10**9}))
        cmd = [*CLI, "agent", "--port", port, "--root", str(root), "--facts", str(facts_file)]
        proc = subprocess.Popen(
            [*cmd, *extra], env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``semedge ARGS`` as a separate process to completion."""
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
