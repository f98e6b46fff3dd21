"""Fixtures of the on-device adaptation tests: a device root running a small receiver, and
folders of real images (scikit-image photos, MNIST digits) written as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..runtime.conftest import small_model


def write_frames(folder: Path, count: int = 12, sizes=((48, 64), (40, 40), (80, 60))) -> Path:
    """``count`` PNG crops of a real photo (chelsea) at mixed sizes, like camera frames."""
    from PIL import Image
    from skimage import data

    photo = np.asarray(data.chelsea())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        top, left = 10 * i, 15 * i
        Image.fromarray(photo[top : top + h, left : left + w]).save(folder / f"frame{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def device(tmp_path_factory):
    """(checkpoint, device root): the checkpoint's receiver built for ONNX Runtime with
    switchable decoder weights, installed and confirmed in slot A of model ``jscc``."""
    from firmware_bridge.slots import SlotStore
    from sdk import artifact
    from sdk.build import build
    from sdk.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("ondevice")
    ckpt = save_checkpoint(small_model("DeepJSCC"), tmp / "jscc")
    art = build(ckpt, tmp / "rx", backend="onnxrt", part="receiver", delta_targets="decoder",
                name="jscc")  # fmt: skip
    root = tmp / "root"
    store = SlotStore(root)
    store.activate("jscc", store.stage("jscc", artifact.pack(art, tmp / "rx.tar")), test=False)
    return ckpt, root


@pytest.fixture
def fresh_root(device, tmp_path):
    """A copy of the device root, so a test may change it."""
    import shutil

    return Path(shutil.copytree(device[1], tmp_path / "root"))
