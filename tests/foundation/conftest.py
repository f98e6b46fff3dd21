"""One torch thread per test: on a shared 2-core CI box, spinning thread pools of
parallel jobs slow small models down ~3x (measured); restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
