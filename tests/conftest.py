"""Shared test setup: deterministic seeds, one torch thread, and tiny models.

One torch thread per test: on a shared 2-core CI box, spinning thread pools of parallel
jobs slow small models down ~3x (measured); restored after each test.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_jscc():
    from sdk.models import DeepJSCC

    return DeepJSCC(in_channels=3, image_size=16, bandwidth_ratio=1 / 6, hidden=8).eval()
