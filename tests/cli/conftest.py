"""Fixtures for the CLI tests: one file of every kind a command reads, made once."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained DeepJSCC sized for ``digits`` (recorded as its training data)."""
    from sdk.checkpoint import save_checkpoint
    from sdk.data import load_dataset
    from sdk.train import build_for_data

    torch.manual_seed(0)
    model = build_for_data("DeepJSCC", {"hidden": 8}, load_dataset("digits", "val"))
    path = tmp_path_factory.mktemp("ck") / "checkpoint"
    return save_checkpoint(model, path, extra={"train": {"data": "digits"}})


@pytest.fixture(scope="session")
def kinds(tmp_path_factory, tiny_checkpoint):
    """One good file of every kind a command takes, by kind name (a directory for each)."""
    import numpy as np

    from firmware_bridge.signing import keygen, sign
    from sdk import artifact
    from sdk.build import build
    from sdk.checkpoint import load_checkpoint
    from sdk.delta import Delta, DeltaEntry, TorchDeltas, Update, save_delta, save_update
    from sdk.export import export_onnx
    from sdk.fingerprint import model_fingerprint

    root = tmp_path_factory.mktemp("kinds")
    model = load_checkpoint(tiny_checkpoint)
    name, param = next((n, p) for n, p in model.named_parameters() if n.startswith("receiver."))
    entry = DeltaEntry(np.arange(3, dtype=np.int64), np.ones(3, np.float16), tuple(param.shape))
    delta = save_delta(
        Delta("hue", model_fingerprint(model), 0.01, {name: entry}), root / "d.delta.safetensors"
    )
    new_values = param.detach().numpy() + np.float32(0.01)
    change = Update("partner", model_fingerprint(model), "", {name: new_values})
    adapters = TorchDeltas(load_checkpoint(tiny_checkpoint))
    adapters.activate(adapters.load(change))
    change.result_fingerprint = adapters.merge()
    update = save_update(change, root / "p.update.safetensors")
    onnx_path = export_onnx(model, root / "model.onnx", "receiver")  # type: ignore[arg-type]
    art = build(tiny_checkpoint, root / "artifact", backend="onnxrt", part="receiver")
    key, pub = keygen(root / "fleet")
    sig = sign(delta, key)
    images = root / "images"  # what a user's image folder would look like
    images.mkdir()
    for i in range(2):
        (images / f"{i}.npy").write_bytes(np.zeros(4).tobytes())
    return {
        "artifact tar": artifact.pack(art),
        "data folder": images,
        "checkpoint": tiny_checkpoint,
        "delta": delta,
        "update": update,
        "onnx": onnx_path,
        "artifact": art,
        "key": key,
        "public key": pub,
        "signature": sig,
    }
