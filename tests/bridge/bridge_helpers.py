"""Test rig: small artifacts and deltas, agent and host processes (relay: firmware_bridge.relay)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from sdk import artifact


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


def make_delta(
    path: Path, base_fingerprint: str, size: int = 3000, counter: int = 0, param: str = "w"
) -> Path:
    """A valid delta (``size`` bytes of random float32 values) for a made-up parameter
    ``param`` (``size // 2`` elements) of a base with that fingerprint, with security
    counter ``counter``; no torch."""
    import numpy as np

    from sdk.delta import Delta, DeltaEntry, save_delta

    count = size // 4
    values = np.random.default_rng(1).standard_normal(count).astype(np.float32)
    entry = DeltaEntry(np.arange(count, dtype=np.int64), values, (2 * count,))
    extra = {"security_counter": str(counter)}
    delta = Delta("rotation", base_fingerprint, 0.5, {param: entry}, extra=extra)
    return save_delta(delta, path, "int32")


def make_update(
    path: Path,
    base_fingerprint: str,
    result_fingerprint: str,
    size: int = 3000,
    counter: int = 0,
    param: str = "u",
) -> Path:
    """A valid SLF update package (``size`` bytes of float32 values for a made-up ``param``;
    by default not the deltas' ``w``, so both can be active together) turning the base with
    ``base_fingerprint`` into ``result_fingerprint``; no torch."""
    import numpy as np

    from sdk.delta import Update, save_update

    values = np.random.default_rng(2).standard_normal(size // 4).astype(np.float32)
    extra = {"security_counter": str(counter)}
    update = Update("partner", base_fingerprint, result_fingerprint, {param: values}, extra=extra)
    return save_update(update, path)


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

    def popen(self, *args: str) -> subprocess.Popen:
        """Start ``semedge ARGS`` as a separate process (stdout, stderr piped)."""
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``semedge ARGS`` as a separate process to completion."""
        proc = self.popen(*args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
