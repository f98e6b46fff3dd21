"""Fixtures for the ZFDA tests: a tiny transceiver and a factory of random deltas for it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from sdk.delta import Delta, DeltaEntry
from sdk.fingerprint import model_fingerprint

DeltaFactory = Callable[..., Delta]


@pytest.fixture
def model() -> torch.nn.Module:
    from sdk.models import DeepJSCC

    torch.manual_seed(0)
    return DeepJSCC(in_channels=3, image_size=16, bandwidth_ratio=1 / 6, hidden=8).eval()


@pytest.fixture
def make_delta(model: torch.nn.Module) -> DeltaFactory:
    """``make_delta(domain, density, seed, names, dtype)``: a random valid delta for ``model``."""
    fingerprint = model_fingerprint(model)
    params = dict(model.named_parameters())

    def make(
        domain: str = "hue",
        density: float = 0.05,
        seed: int = 0,
        names: list[str] | None = None,
        dtype: type = np.float16,
    ) -> Delta:
        rng = np.random.default_rng(seed)
        entries = {}
        for name in names or [n for n, p in params.items() if p.dim() > 1]:
            size = params[name].numel()
            k = max(1, int(density * size))
            idx = np.sort(rng.choice(size, k, replace=False)).astype(np.int64)
            values = rng.standard_normal(k).astype(dtype)
            entries[name] = DeltaEntry(idx, values, tuple(params[name].shape))
        return Delta(domain, fingerprint, density, entries)

    return make


@pytest.fixture
def bits() -> Callable[[torch.nn.Module], dict[str, bytes]]:
    """Every parameter as raw bytes (so -0.0 vs 0.0 or NaN payloads would count as different)."""

    def snapshot(model: torch.nn.Module) -> dict[str, bytes]:
        return {n: p.detach().numpy().tobytes() for n, p in model.named_parameters()}

    return snapshot
