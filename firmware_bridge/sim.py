"""A simulated device for trying the flasher without hardware: an agent on one end of a
pty relay, the other end's path printed for ``semedge flash --port`` / ``semedge device``.

The agent is the real one (same slots, checks and state files under ``root``); only the
cable is two pseudo-terminals joined by :class:`~firmware_bridge.relay.Relay` (no faults,
unpaced). Linux/macOS only (``os.openpty``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_bridge.agent import Agent
from firmware_bridge.relay import Relay
from firmware_bridge.transport import Link, open_serial


def simulate(root: str | Path, announce: Callable[[str], None], **agent_options: Any) -> None:
    """Serve ``root`` as a device until interrupted; ``announce(port)`` once it listens."""
    relay = Relay()
    try:
        agent = Agent(Link(open_serial(relay.agent_port, 921600), device=True), root,
                      **agent_options)  # fmt: skip
        announce(relay.host_port)
        agent.serve()
    finally:
        relay.close()
