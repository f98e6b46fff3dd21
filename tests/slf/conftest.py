"""Tiny transmitter/receiver pairs, a short SLF run on real digits, and byte snapshots."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sdk.adapt.slf import SLFConfig, SLFResult, adapt_slf

TINY = {
    "DeepJSCC": dict(in_channels=1, image_size=16, hidden=8, num_classes=10),
    "VQTransceiver": dict(in_channels=1, image_size=16, hidden=8, num_classes=10),
    "GAITransceiver": dict(in_channels=1, image_size=16, hidden=8, tasks=("recon", "logits")),
}


def tiny(family: str, seed: int) -> torch.nn.Module:
    from sdk.models.registry import build_model

    torch.manual_seed(seed)
    return build_model(family, **TINY[family]).eval()


@pytest.fixture(scope="session")
def digits():
    """128 real 16x16 digits with labels (sklearn, offline)."""
    from sdk.data import load_dataset

    return load_dataset("digits", "train").subset(range(128))


@pytest.fixture(scope="session")
def slf_run(digits) -> Callable[..., SLFResult]:
    """``slf_run(family, freeze, side, dtype)``: a 4-step SLF run between two seeds (cached)."""
    cache: dict[tuple, tuple] = {}

    def run(
        family: str = "DeepJSCC", freeze: int = 2, side: str = "output", dtype: str = "float32"
    ):
        key = (family, freeze, side, dtype)
        if key not in cache:
            tx, rx = tiny(family, 1), tiny(family, 2)
            config = SLFConfig(
                freeze=freeze,
                freeze_side=side,
                steps=4,
                batch_size=32,
                lr=1e-2,
                value_dtype=dtype,
                progress=False,
            )
            cache[key] = (tx, rx, adapt_slf(tx, rx, digits, config))
        return cache[key]

    return run


@pytest.fixture
def bits() -> Callable[[torch.nn.Module], dict[str, bytes]]:
    """Every parameter and buffer as raw bytes."""

    def snapshot(model: torch.nn.Module) -> dict[str, bytes]:
        return {n: t.detach().numpy().tobytes() for n, t in model.state_dict().items()}

    return snapshot


def make_update(model: torch.nn.Module, names: list[str], seed: int = 0, name: str = "u"):
    """A valid update of ``model``: random new values for ``names`` (result fingerprint true)."""
    import copy

    import numpy as np

    from sdk.delta import TorchDeltas, Update
    from sdk.fingerprint import model_fingerprint

    rng = np.random.default_rng(seed)
    params = dict(model.named_parameters())
    entries = {n: rng.standard_normal(tuple(params[n].shape)).astype(np.float32) for n in names}
    base = model_fingerprint(model)
    update = Update(name, base, base, entries, 1, "output", {"steps": 0})
    adapters = TorchDeltas(copy.deepcopy(model))
    adapters.activate(adapters.load(update))
    update.result_fingerprint = adapters.merge()
    return update
