"""Fixtures of the firmware-bridge tests: processes killed at teardown, relays closed."""

from __future__ import annotations

import numpy as np
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


@pytest.fixture(scope="session")
def onnx_build(tmp_path_factory):
    """An onnxrt receiver artifact, a delta for it and reference outputs (torch side)."""
    from sdk import Runtime
    from sdk.build import build
    from sdk.checkpoint import save_checkpoint
    from tests.runtime.conftest import small_model
    from tests.runtime.test_delta_switching import TARGETS, _delta

    tmp = tmp_path_factory.mktemp("build")
    ckpt = save_checkpoint(small_model("DeepJSCC"), tmp / "jscc")
    art = build(ckpt, tmp / "rx", backend="onnxrt", part="receiver", delta_targets="decoder")
    delta = _delta(ckpt, TARGETS, "hue", 0, tmp)
    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with Runtime.load(ckpt, part="transmitter") as tx:
        symbols = tx.infer(images)["symbols"]
    with Runtime.load(art) as rt:
        base = rt.infer(symbols)["recon"]
        rt.activate_delta(delta)
        adapted = rt.infer(symbols)["recon"]
    np.save(tmp / "symbols.npy", symbols)
    np.savez(tmp / "want.npz", base=base, adapted=adapted)
    return art, delta, tmp
