"""Runtime on a device with a trusted key: only signed artifacts and delta files load."""

from __future__ import annotations

import json
import shutil

import pytest

from firmware_bridge import signing
from sdk import Runtime, artifact
from sdk.runtime import trust


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    return signing.keygen(tmp / "fleet"), signing.keygen(tmp / "other")


def prepared_artifact(kind, onnx_build, keys, tmp_path):
    """The artifact in state ``kind``; returns its path."""
    (fleet_key, _), (other_key, _) = keys
    art = shutil.copytree(onnx_build[0], tmp_path / "art")
    if kind in ("signed", "edited manifest", "signed tar"):
        signing.sign(art, fleet_key)
    if kind == "other key":
        signing.sign(art, other_key)
    if kind == "edited manifest":  # payload hashes still match; the signature does not
        manifest = json.loads((art / artifact.MANIFEST).read_text())
        manifest["model"]["version"] = "99"
        (art / artifact.MANIFEST).write_text(json.dumps(manifest))
    if kind == "signed tar":
        return artifact.pack(art, tmp_path / "art.tar")
    if kind == "bare onnx":
        return art / "model.onnx"
    return art


@pytest.mark.parametrize(
    ("kind", "refusal"),
    [
        ("signed", None),
        ("signed tar", None),
        ("unsigned", "unsigned"),
        ("edited manifest", "does not match the trusted key"),
        ("other key", "does not match the trusted key"),
        ("bare onnx", "not a signed artifact"),
    ],
)
def test_load_with_a_trusted_key(kind, refusal, onnx_build, keys, tmp_path):
    path = prepared_artifact(kind, onnx_build, keys, tmp_path)
    public = keys[0][1]
    if refusal is None:
        with Runtime.load(path, trusted_key=public) as rt:
            assert rt.trusted_key == signing.read_public_key(public)
        return
    with pytest.raises(signing.SignatureError, match=refusal) as err:
        Runtime.load(path, trusted_key=public)
    assert "\n" not in str(err.value)
    Runtime.load(path).close()  # the same file without a trusted key: loads


def test_key_from_the_environment(onnx_build, keys, tmp_path, monkeypatch):
    path = prepared_artifact("unsigned", onnx_build, keys, tmp_path)
    monkeypatch.setenv(trust.TRUSTED_KEY_ENV, str(keys[0][1]))
    with pytest.raises(signing.SignatureError, match="unsigned"):
        Runtime.load(path)
    monkeypatch.setenv(trust.TRUSTED_KEY_ENV, "")  # set but empty: no checks
    Runtime.load(path).close()


@pytest.mark.parametrize("kind", ["signed", "unsigned", "tampered", "other key"])
def test_delta_files_need_a_valid_signature(kind, onnx_build, keys, tmp_path):
    (fleet_key, public), (other_key, _) = keys
    art = prepared_artifact("signed", onnx_build, keys, tmp_path)
    delta = shutil.copy(onnx_build[1], tmp_path / onnx_build[1].name)
    if kind != "unsigned":
        signing.sign(delta, other_key if kind == "other key" else fleet_key)
    if kind == "tampered":
        data = bytearray(delta.read_bytes())
        data[-1] ^= 1
        delta.write_bytes(bytes(data))
    with Runtime.load(art, trusted_key=public) as rt:
        if kind == "signed":
            rt.activate_delta(delta)
            assert rt.active_delta == "hue"
            return
        with pytest.raises(signing.SignatureError, match=r"delta .* refused"):
            rt.activate_delta(delta)
        assert rt.active_delta is None


def test_the_delta_that_loads_is_the_one_whose_signature_was_checked(
    onnx_build, keys, tmp_path, monkeypatch
):
    """A file replaced right after the runtime read it (verify-then-load race): the signed
    bytes it read are what runs, not the replacement."""
    import pathlib

    import numpy as np

    from sdk.delta import load_delta, save_delta
    from sdk.files import write_bytes

    (fleet_key, public), _ = keys
    art = prepared_artifact("signed", onnx_build, keys, tmp_path)
    delta = shutil.copy(onnx_build[1], tmp_path / onnx_build[1].name)
    signing.sign(delta, fleet_key)
    forged = load_delta(delta)
    for entry in forged.entries.values():
        entry.values[:] *= 50
    forged_bytes = save_delta(forged, tmp_path / "forged.delta.safetensors").read_bytes()
    read_bytes = pathlib.Path.read_bytes

    def swapped_after_read(self: pathlib.Path) -> bytes:
        data = read_bytes(self)
        if self.name == delta.name:
            write_bytes(self, forged_bytes)  # whoever can write there, just too late
        return data

    symbols, want = np.load(onnx_build[2] / "symbols.npy"), np.load(onnx_build[2] / "want.npz")
    with Runtime.load(art, trusted_key=public) as rt:
        monkeypatch.setattr(pathlib.Path, "read_bytes", swapped_after_read)
        rt.activate_delta(delta)
        monkeypatch.undo()
        assert np.allclose(rt.infer(symbols)["recon"], want["adapted"], atol=1e-6)
        with pytest.raises(signing.SignatureError, match="does not match"):
            rt.activate_delta(delta)  # the file as it is now: refused
        assert rt.active_delta == "hue"


def _device_slot(onnx_build, keys, tmp_path):
    """An agent root running the signed artifact as model ``jscc``; returns (store, slot dir)."""
    from firmware_bridge.slots import SlotStore

    art = prepared_artifact("signed", onnx_build, keys, tmp_path)
    store = SlotStore(tmp_path / "root")
    slot = store.stage("jscc", artifact.pack(art, tmp_path / "art.tar"))
    store.activate("jscc", slot, test=False)
    return store, store.model_dir("jscc") / slot


def _signed_delta(onnx_build, keys, path, counter):
    from sdk.delta import load_delta, save_delta

    delta = load_delta(onnx_build[1])
    delta.extra["security_counter"] = str(counter)
    signing.sign(save_delta(delta, path), keys[0][0])
    return path


def test_a_signed_delta_below_the_models_change_counter_is_refused(
    onnx_build, keys, tmp_path, monkeypatch
):
    """Where the device trusts a key, the Runtime applies the agent's replay rule itself: a
    validly signed old delta put back beside the model (counter 1, the model is at 2) is
    refused in one line, also when it was loaded while it was still current."""
    from firmware_bridge.slots import Downgrade

    store, slot = _device_slot(onnx_build, keys, tmp_path)
    old = _signed_delta(onnx_build, keys, tmp_path / "old.delta.safetensors", 1)
    new = _signed_delta(onnx_build, keys, tmp_path / "new.delta.safetensors", 2)
    store.install_change("jscc", old, old.name, old.with_name(f"{old.name}.sig").read_bytes())
    public = keys[0][1]
    with Runtime.load(slot, trusted_key=public) as rt:
        assert rt.load_change(old) == "hue"
        store.install_change("jscc", new, new.name, new.with_name(f"{new.name}.sig").read_bytes())
        with pytest.raises(Downgrade, match=r"security counter 1, below .* \(2\) for jscc") as e:
            rt.activate_delta(old)
        assert "\n" not in str(e.value) and rt.active_delta is None
        with pytest.raises(Downgrade, match="security counter 1"):
            rt.activate("hue")  # by the name it was loaded under: the same rule
        assert rt.active_delta is None
        rt.activate_delta(new)
        assert rt.active_delta == "hue"
    monkeypatch.chdir(slot)
    with Runtime.load(".", trusted_key=public) as rt:  # the slot named relative to it
        with pytest.raises(Downgrade):
            rt.activate_delta(old)
        assert rt.list() == [] and rt.active_delta is None
    with Runtime.load(slot) as rt:  # no trusted key: no signatures, no counters checked
        rt.activate_delta(old)
        assert rt.active_delta == "hue"


def test_an_active_change_stays_valid_when_a_newer_file_raises_the_floor(
    onnx_build, keys, tmp_path
):
    """The agent checks the floor when a change is installed or activated, so a delta it
    activated at counter 1 stays active after a counter-2 file is installed: the app
    follows that state (open_device) instead of refusing what the agent runs, while the
    same old file is still refused anywhere it is not the active one."""
    from firmware_bridge.slots import Downgrade

    store, slot = _device_slot(onnx_build, keys, tmp_path)
    old = _signed_delta(onnx_build, keys, tmp_path / "old.delta.safetensors", 1)
    new = _signed_delta(onnx_build, keys, tmp_path / "new.delta.safetensors", 2)
    store.install_change("jscc", old, old.name, old.with_name(f"{old.name}.sig").read_bytes())
    store.apply_change("jscc", old.name)
    store.install_change("jscc", new, new.name, new.with_name(f"{new.name}.sig").read_bytes())
    public = keys[0][1]
    with Runtime.open_device(tmp_path / "root", trusted_key=public) as app:
        assert app.info()["delta"] == old.name
    with Runtime.load(slot, trusted_key=public) as rt:
        rt.activate_delta(store.change_path("jscc", old.name))
        assert rt.active_delta == "hue"
        with pytest.raises(Downgrade, match="security counter 1"):
            rt.activate_delta(old)  # the same bytes outside the model's folder
