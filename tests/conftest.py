"""Shared test setup: deterministic seeds, and tiny models built once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_jscc():
    from sdk.models import DeepJSCC

    return DeepJSCC(in_channels=3, image_size=16, bandwidth_ratio=1 / 6, hidden=8).eval()
