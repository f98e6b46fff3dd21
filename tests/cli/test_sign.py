"""``semedge sign`` never trades a good signature for one the devices would refuse."""

from __future__ import annotations

import shutil

import pytest

from firmware_bridge.signing import (
    keygen,
    read_public_key,
    read_signature,
    signed_message,
    verify_bytes,
)
from sdk.cli import main


@pytest.fixture
def signed(kinds, tmp_path):
    """A signed delta and a signed artifact directory in ``tmp_path``, with the fleet keys."""
    delta = tmp_path / "d.delta.safetensors"
    shutil.copy(kinds["delta"], delta)
    art = shutil.copytree(kinds["artifact"], tmp_path / "artifact")
    for key in ("key", "public key"):
        shutil.copy(kinds[key], tmp_path / kinds[key].name)
    key = tmp_path / kinds["key"].name
    assert main(["sign", str(delta), "--key", str(key)]) == 0
    assert main(["sign", str(art), "--key", str(key)]) == 0
    return delta, art, key, key.with_suffix(".pub")


def snapshot(*paths):
    return [read_signature(p) for p in paths]


@pytest.mark.parametrize("target", ["delta", "artifact"])
def test_a_public_key_is_refused_in_one_line_and_the_signature_stays(target, signed, capsys):
    delta, art, key, pub = signed
    path = delta if target == "delta" else art
    before = snapshot(delta, art)
    capsys.readouterr()
    assert main(["sign", str(path), "--key", str(pub)]) != 0
    err = capsys.readouterr().err
    assert "is a public key" in err and str(key) in err and len(err.strip().splitlines()) == 1
    assert snapshot(delta, art) == before
    verify_bytes(signed_message(path), read_signature(path), read_public_key(pub))


def test_a_public_key_renamed_to_key_is_refused_by_its_pair(signed, tmp_path, capsys):
    delta, art, _, pub = signed
    before = snapshot(delta, art)
    other = tmp_path / "other"
    keygen(other)
    shutil.copy(pub, other.with_suffix(".key"))  # the fleet's public key, beside other.pub
    capsys.readouterr()
    assert main(["sign", str(delta), "--key", str(other.with_suffix(".key"))]) != 0
    assert "is not the private key of" in capsys.readouterr().err
    assert snapshot(delta, art) == before


def test_the_right_key_still_signs_and_the_signature_verifies(signed):
    delta, art, _, pub = signed
    for path in (delta, art):
        verify_bytes(signed_message(path), read_signature(path), read_public_key(pub))
