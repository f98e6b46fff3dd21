"""Fixtures of the firmware-bridge tests: processes killed at teardown, relays closed."""

from __future__ import annotations

import pytest

from firmware_bridge.relay import Relay

from .bridge_helpers import Processes


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
