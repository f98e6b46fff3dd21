"""Update packages: round trip, and every bad package is a specific one-line error that
leaves the receiver (in memory and on disk) bit-identical."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdk.checkpoint import WEIGHTS, save_checkpoint
from sdk.cli import main
from sdk.delta import (
    Delta,
    DeltaDtypeError,
    DeltaEntry,
    DeltaFileError,
    DeltaFingerprintError,
    DeltaFormatError,
    DeltaShapeError,
    DeltaUnknownParameterError,
    DeltaValueError,
    TorchDeltas,
    load_update,
    save_delta,
    save_update,
)
from sdk.fingerprint import model_fingerprint

from .conftest import make_update, tiny

W = "receiver.to_image.weight"
B = "receiver.to_image.bias"


@pytest.fixture
def rx():
    return tiny("DeepJSCC", 2)


@pytest.fixture
def good(rx):
    return make_update(rx, [W, B], seed=1, name="good")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(rx, good, tmp_path, dtype):
    update = replace(good, entries={n: v.astype(dtype) for n, v in good.entries.items()})
    path = save_update(update, tmp_path / "x.update.safetensors")
    back = load_update(path)
    assert back.summary() == update.summary()
    for name, values in update.entries.items():
        assert back.entries[name].tobytes() == values.tobytes()
    assert back.accounting == {"steps": 0} and back.freeze == 1 and back.freeze_side == "output"


def _raw(path: Path, tensors: dict, **metadata: str) -> Path:
    """Write a safetensors file as given (no validation, no checksum)."""
    save_file(tensors, str(path), metadata=metadata)
    return path


def bad_packages(good, tmp_path: Path) -> list[tuple[str, Path, type]]:
    """(label, bad package file, expected error) for every defect a package can have."""
    ok = save_update(good, tmp_path / "ok.update.safetensors")
    data = ok.read_bytes()
    meta = {
        "format": "semedge.update",
        "format_version": "1",
        "kind": "slf",
        "name": "bad",
        "base_fingerprint": good.base_fingerprint,
        "result_fingerprint": good.result_fingerprint,
        "freeze": "1",
        "freeze_side": "output",
        "parameters": json.dumps([W, B]),
        "shapes": json.dumps({n: list(v.shape) for n, v in good.entries.items()}),
        "value_dtype": "float32",
        "accounting": "{}",
    }
    tensors = dict(good.entries)

    def raw(label: str, tensors: dict = tensors, **change: str) -> Path:
        return _raw(tmp_path / f"{label}.update.safetensors", tensors, **{**meta, **change})

    def saved(label: str, **change) -> Path:
        update = replace(good, **change)
        return save_update(update, tmp_path / f"{label}.update.safetensors")

    truncated = tmp_path / "truncated.update.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    corrupt = tmp_path / "corrupt.update.safetensors"
    corrupt.write_bytes(bytes(flipped))
    nan, inf = dict(tensors), dict(tensors)
    nan[B] = np.where(np.arange(nan[B].size) == 0, np.nan, nan[B]).astype(np.float32)
    inf[W] = np.full_like(inf[W], np.inf)
    delta = Delta(
        "hue",
        good.base_fingerprint,
        0.1,
        {W: DeltaEntry(np.array([0, 3], np.int64), np.ones(2, np.float16), good.entries[W].shape)},
    )
    shapes_wrong = {W: [1, 2, 3], B: list(good.entries[B].shape)}
    return [
        ("wrong base", saved("base", base_fingerprint="0" * 64), DeltaFingerprintError),
        (
            "unknown parameter",
            saved("unknown", entries={**tensors, "receiver.nope": tensors[B]}),
            DeltaUnknownParameterError,
        ),
        (
            "wrong shape",
            saved("shape", entries={**tensors, W: tensors[W].reshape(-1)}),
            DeltaShapeError,
        ),
        ("missing parameter", raw("missing", {B: tensors[B]}), DeltaFileError),
        ("unlisted tensor", raw("unlisted", {**tensors, "x": tensors[B]}), DeltaFileError),
        ("metadata shape", raw("metashape", shapes=json.dumps(shapes_wrong)), DeltaShapeError),
        ("dtype vs declared", raw("declared", value_dtype="float16"), DeltaDtypeError),
        (
            "float64",
            raw(
                "f64", {n: v.astype(np.float64) for n, v in tensors.items()}, value_dtype="float64"
            ),
            DeltaDtypeError,
        ),
        ("nan", raw("nan", nan), DeltaValueError),
        ("inf", raw("inf", inf), DeltaValueError),
        ("future version", raw("future", format_version="2"), DeltaFormatError),
        ("other kind", raw("kind", kind="lora"), DeltaFormatError),
        ("not semedge", raw("foreign", format="other"), DeltaFormatError),
        (
            "no accounting",
            _raw(
                tmp_path / "noacc.update.safetensors",
                tensors,
                **{k: v for k, v in meta.items() if k != "accounting"},
            ),
            DeltaFormatError,
        ),
        ("bad freeze", raw("freeze", freeze="half"), DeltaFormatError),
        ("bad side", raw("side", freeze_side="middle"), DeltaFormatError),
        ("truncated", truncated, DeltaFileError),
        ("corrupt payload", corrupt, DeltaFileError),
        ("missing file", tmp_path / "absent.update.safetensors", DeltaFileError),
        ("a delta", save_delta(delta, tmp_path / "d.delta.safetensors"), DeltaFormatError),
    ]


@pytest.mark.parametrize("while_active", [False, True])
def test_every_bad_package_leaves_the_receiver_bit_identical(
    rx, good, bits, tmp_path, while_active
):
    adapters = TorchDeltas(rx)
    other = make_update(rx, ["receiver.features.0.0.weight"], seed=2, name="other")
    adapters.load(other)
    if while_active:
        adapters.activate("other")
    before, fingerprint = bits(rx), model_fingerprint(rx)
    for label, path, error in bad_packages(good, tmp_path):
        with pytest.raises(error) as info:
            from sdk.delta import load_update as read

            update = read(path)
            adapters.activate(adapters.load(update, label))
        assert len(str(info.value).splitlines()) == 1, label
        assert bits(rx) == before, label
        assert model_fingerprint(rx) == fingerprint, label
        assert adapters.list() == ["other"], label
        assert adapters.active == ("other" if while_active else None), label


def test_every_bad_package_leaves_the_checkpoint_files_identical(rx, good, tmp_path, capsys):
    ckpt = save_checkpoint(rx, tmp_path / "rx")
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    for label, path, _ in bad_packages(good, tmp_path):
        assert main(["update", "apply", str(ckpt), str(path)]) != 0, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (label, err)
        assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == files, label
        assert not list(tmp_path.glob("rx.rollback*")), label


def test_apply_and_rollback_restore_the_fingerprint(rx, good, tmp_path, capsys):
    ckpt = save_checkpoint(rx, tmp_path / "rx")
    weights = (ckpt / WEIGHTS).read_bytes()
    pkg = save_update(good, tmp_path / "good.update.safetensors")
    assert main(["update", "inspect", str(pkg), "--against", str(ckpt)]) == 0
    assert "compatible with" in capsys.readouterr().out
    assert main(["update", "apply", str(ckpt), str(pkg)]) == 0
    from sdk.checkpoint import read_config

    assert read_config(ckpt)["fingerprint"] == good.result_fingerprint
    rollback = (ckpt.parent / f"{ckpt.name}.rollback.update.safetensors").read_bytes()
    assert main(["update", "apply", str(ckpt), str(pkg)]) != 0  # the way back is never lost
    assert "roll it back first" in capsys.readouterr().err
    assert (ckpt.parent / f"{ckpt.name}.rollback.update.safetensors").read_bytes() == rollback
    assert main(["update", "rollback", str(ckpt)]) == 0
    assert read_config(ckpt)["fingerprint"] == good.base_fingerprint
    assert (ckpt / WEIGHTS).read_bytes() == weights
    assert main(["update", "rollback", str(ckpt)]) != 0  # nothing left to roll back
