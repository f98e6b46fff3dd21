import json
import os

import pytest
import torch

from sdk.checkpoint import load_checkpoint, save_checkpoint
from sdk.errors import CheckpointError, UnknownModelError
from sdk.fingerprint import model_fingerprint
from sdk.models import DeepJSCC, build_model


def test_checkpoint_round_trip_is_bit_exact(tmp_path, tiny_jscc):
    save_checkpoint(tiny_jscc, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    for (n1, a), (n2, b) in zip(
        tiny_jscc.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(a, b)
    assert model_fingerprint(loaded) == model_fingerprint(tiny_jscc)


def test_fingerprint_stable_and_sensitive(tiny_jscc):
    fp = model_fingerprint(tiny_jscc)
    assert fp == model_fingerprint(tiny_jscc)
    twin = DeepJSCC(**tiny_jscc.config)
    twin.load_state_dict(tiny_jscc.state_dict())
    assert model_fingerprint(twin) == fp
    with torch.no_grad():
        p = next(twin.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))
    assert model_fingerprint(twin) != fp


def test_corrupt_and_missing_checkpoints(tmp_path, tiny_jscc):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nope")
    ck = save_checkpoint(tiny_jscc, tmp_path / "ck")
    raw = bytearray((ck / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(ck)
    (ck / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(ck)


def test_unknown_model_name(tmp_path, tiny_jscc):
    ck = save_checkpoint(tiny_jscc, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"] = "NoSuchNet"
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownModelError, match="NoSuchNet"):
        load_checkpoint(ck)
    with pytest.raises(UnknownModelError):
        build_model("DeepJSCC", bogus=1)


def test_deepjscc_symbol_count_follows_bandwidth_ratio():
    m = DeepJSCC(in_channels=3, image_size=32, bandwidth_ratio=1 / 12, hidden=8)
    assert m.channel_uses == 256
    out = m(torch.rand(2, 3, 32, 32), 10.0)
    assert out["recon"].shape == (2, 3, 32, 32)
    m = DeepJSCC(in_channels=1, image_size=28, bandwidth_ratio=0.05, hidden=8, num_classes=10)
    assert m.channel_uses == round(784 * 0.05)
    out = m(torch.rand(2, 1, 28, 28), torch.tensor([0.0, 5.0]))
    assert out["logits"].shape == (2, 10)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, tiny_jscc, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(tiny_jscc, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    changed = DeepJSCC(**tiny_jscc.config)

    def power_cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", power_cut)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(changed, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staged leftovers
    monkeypatch.undo()
    save_checkpoint(changed, path)
    assert model_fingerprint(load_checkpoint(path)) == model_fingerprint(changed)


def test_a_failed_swap_puts_the_previous_checkpoint_back(tmp_path, tiny_jscc, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(tiny_jscc, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old one is already aside, the new one not yet in place
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("sdk.files.os.replace", second_rename_fails)
    with pytest.raises(CheckpointError, match="nothing changed"):
        save_checkpoint(DeepJSCC(**tiny_jscc.config), path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_training_output_folder_stands_for_its_checkpoint(tmp_path, tiny_jscc):
    save_checkpoint(tiny_jscc, tmp_path / "run" / "checkpoint")
    loaded = load_checkpoint(tmp_path / "run")  # what `semedge train --out run` made
    assert model_fingerprint(loaded) == model_fingerprint(tiny_jscc)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)  # a folder that holds neither
