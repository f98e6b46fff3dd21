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
