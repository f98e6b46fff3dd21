"""A simulated device: the agent in its own process on a pty pair, with its own root.

The host talks to it through a :class:`firmware_bridge.relay.Relay` paced at a real
serial line rate, exactly as it would to a Jetson on a UART; the agent's root is a plain
folder, so the host can look at the slots it writes (as a person with a shell would), and
an app on the "device" follows it with :meth:`sdk.Runtime.open_device`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BAUD = 921_600
AGENT = (sys.executable, "-m", "sdk.cli", "agent")


@contextlib.contextmanager
def simulated_device(root: Path, log: Path, baud: int = BAUD) -> Iterator[Any]:
    """Start an agent rooted at ``root`` (logging to ``log``); yield a connected flasher."""
    from firmware_bridge.host import serial_flasher
    from firmware_bridge.relay import Faults, Relay

    with contextlib.ExitStack() as cleanup:
        relay = Relay(Faults(rate=baud / 10))  # 8N1: ten bits on the wire per byte
        cleanup.callback(relay.close)
        with open(log, "w") as agent_log:
            agent = subprocess.Popen(
                [*AGENT, "--port", relay.agent_port, "--root", str(root)],
                stdout=agent_log,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(stop, agent)
        flasher = serial_flasher(relay.host_port, baud, retries=1)
        cleanup.callback(flasher.link.close)
        yield flasher


@contextlib.contextmanager
def device_session(root: Path, log: Path) -> Iterator[Any]:
    """:func:`simulated_device`, with a protocol error naming the agent's last log line."""
    from firmware_bridge.protocol import ProtocolError

    try:
        with simulated_device(root, log) as flasher:
            yield flasher
    except ProtocolError as exc:
        raise ProtocolError(f"{exc} — the simulated device said: {last_words(log)}") from None


def running_weights(flasher: Any, model: str) -> dict[str, Any]:
    """What the device's LIST says ``model`` runs: the active slot's base fingerprint and
    the update active on it (file name and SHA-256; None when there is none)."""
    from firmware_bridge import remote

    entry = remote.inventory(flasher)["models"][model]
    update = entry["active_changes"]["update"]
    sha = next((c["sha256"] for c in entry["changes"] if c["file"] == update), None)
    base = entry["slots"][entry["active"]]["base_fingerprint"]
    return {"base_fingerprint": base, "update": update, "update_sha256": sha}


def wait_until_serving(app: Any, kind: str, name: str | None, timeout: float = 60.0) -> None:
    """Wait until the app following the device serves ``name`` as its ``kind`` (``"delta"``
    or ``"update"``; None: none)."""
    start = time.perf_counter()
    while app.info()[kind] != name:
        if time.perf_counter() - start > timeout:
            raise RuntimeError(
                f"the app did not pick up {kind} {name} within {timeout:g} s "
                f"(last error: {app.info()['last_error'] or 'none'})"
            )
        time.sleep(0.01)


def last_words(log: Path) -> str:
    """The agent log's last line, to name in an error."""
    said = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return said[-1] if said else "nothing"


def stop(process: Any) -> None:
    """Terminate ``process``, and kill it if it has not gone within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
