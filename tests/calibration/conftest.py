"""A small receiver exported with delta targets, and its INT8 calibration (built once)."""

from __future__ import annotations

import pytest

from tests.runtime.conftest import small_model

TARGETS = "decoder"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Calibration ranges go to a per-session cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SEMEDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    from sdk.checkpoint import save_checkpoint

    return save_checkpoint(small_model("DeepJSCC"), tmp_path_factory.mktemp("ck") / "jscc")


@pytest.fixture(scope="session")
def receiver_onnx(ckpt, tmp_path_factory):
    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "rx.onnx"
    return export_onnx(
        load_checkpoint(ckpt), out, "receiver", delta_targets=TARGETS, source=str(ckpt)
    )


@pytest.fixture(scope="session")
def settings():
    from calibration.calibrate import Settings

    return lambda **kw: Settings(**{"samples": 32, "heldout": 48, **kw})


@pytest.fixture(scope="session")
def int8(receiver_onnx, settings, tmp_path_factory):
    """(path, result) of the receiver calibrated with the defaults (entropy, heads float)."""
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("q") / "rx.int8.onnx"
    return out, calibrate(receiver_onnx, out, settings(), show=False)
