"""Fixtures of the firmware-bridge tests: processes killed at teardown, relays closed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from .bridge_helpers import Processes

from firmware_bridge.relay import Relay


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.kill_all()


@pytest.fixture
def relays():
    made: list[Relay] = []

    def make(*args, **kwargs) -> Relay:
        made.append(Relay(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()
