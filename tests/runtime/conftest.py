"""Small checkpoints, exports and artifacts shared by the runtime tests (built once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SMALL = {
    "DeepJSCC": dict(image_size=32, hidden=8, num_classes=10),
    "GAITransceiver": dict(image_size=32, hidden=8),
    "KEMTransceiver": dict(image_size=32, hidden=8),
    "VQTransceiver": dict(image_size=32, hidden=8),
}
"""Small configs per family; keys a family's constructor does not take are dropped."""


def small_model(name: str, **extra: object) -> torch.nn.Module:
    import inspect

    from sdk.models.registry import MODELS, build_model

    params = inspect.signature(MODELS[name]).parameters
    args = {k: v for k, v in {**SMALL.get(name, {}), **extra}.items() if k in params}
    torch.manual_seed(0)
    return build_model(name, **args).eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    from sdk.checkpoint import save_checkpoint

    return save_checkpoint(small_model("DeepJSCC"), tmp_path_factory.mktemp("ck") / "jscc")


@pytest.fixture(scope="session")
def real_images():
    from sdk.data import sample_images

    return sample_images((3, 32, 32), "patches", 6)


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory, checkpoint):
    """An onnxrt artifact of the receiver with the decoder weights as graph inputs."""
    from sdk.build import build

    out = tmp_path_factory.mktemp("art") / "rx"
    return build(checkpoint, out, backend="onnxrt", part="receiver", delta_targets="decoder")


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the error relative to the output's scale."""
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


@pytest.fixture(scope="session")
def small():
    """``small(family)`` -> a small eval-mode model of that family."""
    return small_model


@pytest.fixture(scope="session")
def rel():
    """``rel(got, want)`` -> error relative to the output's scale."""
    return relative_error
