"""Delta files: both index encodings round-trip, and every malformed file gets its own error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from sdk.delta import (
    Delta,
    DeltaDtypeError,
    DeltaEntry,
    DeltaError,
    DeltaFileError,
    DeltaFormatError,
    DeltaIndexOrderError,
    DeltaIndexRangeError,
    DeltaShapeError,
    DeltaValueError,
    _payload_sha256,
    decode_gap8,
    encode_gap8,
    load_delta,
    save_delta,
)


def assert_same(a: Delta, b: Delta) -> None:
    assert (a.domain, a.base_fingerprint, a.sparsity) == (b.domain, b.base_fingerprint, b.sparsity)
    assert a.entries.keys() == b.entries.keys()
    for name, ea in a.entries.items():
        eb = b.entries[name]
        assert ea.shape == eb.shape
        assert ea.indices.dtype == eb.indices.dtype == np.int64
        np.testing.assert_array_equal(ea.indices, eb.indices)
        assert ea.values.dtype == eb.values.dtype
        assert ea.values.tobytes() == eb.values.tobytes()


@pytest.mark.parametrize("encoding", ["gap8", "int32"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_round_trip(make_delta, tmp_path, encoding, dtype):
    delta = make_delta(dtype=dtype)
    path = save_delta(delta, tmp_path / "d.delta.safetensors", encoding)
    loaded = load_delta(path)
    assert loaded.index_encoding == encoding
    assert_same(delta, loaded)
    raw = load_file(str(path))
    name = next(iter(delta.entries))
    if encoding == "int32":
        assert raw[f"{name}.delta_indices"].dtype == np.int32
    else:
        assert raw[f"{name}.delta_gaps"].dtype == np.uint8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 70_000), max_size=300))
def test_gap8_round_trip(gaps):
    indices = np.cumsum(np.asarray(gaps, dtype=np.int64)) - 1
    small, escapes = encode_gap8(indices)
    assert small.dtype == np.uint8 and escapes.dtype == np.uint32
    assert len(escapes) == sum(g > 255 for g in gaps)
    np.testing.assert_array_equal(decode_gap8(small, escapes, "p"), indices)


def test_gap8_meets_the_size_goal_at_one_percent(tmp_path):
    """fp16 values + gap8 indices at γ = 1 % stay under 1 % of the fp32 weights' bytes."""
    rng = np.random.default_rng(0)
    size = 400_000
    idx = np.sort(rng.choice(size, size // 100, replace=False)).astype(np.int64)
    values = rng.standard_normal(len(idx)).astype(np.float16)
    delta = Delta("hue", "ab" * 32, 0.01, {"w": DeltaEntry(idx, values, (size,))})
    gap8 = save_delta(delta, tmp_path / "a.delta.safetensors", "gap8").stat().st_size
    int32 = save_delta(delta, tmp_path / "b.delta.safetensors", "int32").stat().st_size
    assert gap8 < 0.01 * 4 * size < int32


# ---- hand-written files: what another producer (or a corruption) might give us


def write_raw(path, tensors, **metadata):
    """A delta file written with plain safetensors; metadata overrides the valid defaults."""
    shapes = {k.rsplit(".delta_", 1)[0]: [4, 5] for k in tensors if k.endswith(".delta_values")}
    meta = {
        "format": "semedge.delta",
        "format_version": "1",
        "kind": "zfda",
        "base_fingerprint": "ab" * 32,
        "domain": "hue",
        "sparsity": "0.1",
        "shapes": json.dumps(shapes),
        "index_encoding": "int32",
        "payload_sha256": _payload_sha256(tensors),
    }
    meta.update(metadata)
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if v is not None})
    return path


def valid_tensors():
    return {
        "w.delta_indices": np.array([0, 3, 19], dtype=np.int32),
        "w.delta_values": np.array([1.0, -2.0, 0.5], dtype=np.float16),
    }


def test_hand_written_int32_file_is_readable(tmp_path):
    delta = load_delta(write_raw(tmp_path / "d.delta.safetensors", valid_tensors()))
    np.testing.assert_array_equal(delta.entries["w"].indices, [0, 3, 19])
    assert delta.entries["w"].shape == (4, 5)


def test_checksum_is_optional_but_verified(tmp_path):
    load_delta(write_raw(tmp_path / "a.delta.safetensors", valid_tensors(), payload_sha256=None))
    with pytest.raises(DeltaFileError, match="checksum"):
        load_delta(write_raw(tmp_path / "b.delta.safetensors", valid_tensors(), payload_sha256="0"))


BAD_TENSORS = [
    ("w.delta_indices", np.array([0, 3, 20], np.int32), DeltaIndexRangeError),
    ("w.delta_indices", np.array([-1, 3, 4], np.int32), DeltaIndexRangeError),
    ("w.delta_indices", np.array([0, 3, 3], np.int32), DeltaIndexOrderError),
    ("w.delta_indices", np.array([3, 0, 4], np.int32), DeltaIndexOrderError),
    ("w.delta_indices", np.array([0, 3, 4], np.int64), DeltaDtypeError),
    ("w.delta_indices", np.array([0, 3], np.int32), DeltaShapeError),
    ("w.delta_indices", np.array([[0, 3, 4]], np.int32), DeltaShapeError),
    ("w.delta_values", np.array([1, np.nan, 0], np.float16), DeltaValueError),
    ("w.delta_values", np.array([1, np.inf, 0], np.float32), DeltaValueError),
    ("w.delta_values", np.array([1, 2, 3], np.float64), DeltaDtypeError),
    ("w.delta_values", np.array([1, 2, 3], np.int32), DeltaDtypeError),
]


@pytest.mark.parametrize(("key", "array", "error"), BAD_TENSORS)
def test_bad_tensor_gets_specific_error(tmp_path, key, array, error):
    tensors = {**valid_tensors(), key: array}
    with pytest.raises(error):
        load_delta(write_raw(tmp_path / "d.delta.safetensors", tensors))


BAD_METADATA = [
    ({"format": "something.else"}, DeltaFormatError),
    ({"format_version": "2"}, DeltaFormatError),
    ({"kind": "lora"}, DeltaFormatError),
    ({"index_encoding": "bitmap"}, DeltaFormatError),
    ({"shapes": "{not json"}, DeltaFormatError),
    ({"shapes": '{"w": [4, -5]}'}, DeltaFormatError),
    ({"domain": None}, DeltaFormatError),
    ({"shapes": '{"w": [4, 5], "v": [3]}'}, DeltaFileError),
    ({"shapes": "{}"}, DeltaFileError),
]


@pytest.mark.parametrize(("metadata", "error"), BAD_METADATA)
def test_bad_metadata_gets_specific_error(tmp_path, metadata, error):
    with pytest.raises(error):
        load_delta(write_raw(tmp_path / "d.delta.safetensors", valid_tensors(), **metadata))


def test_no_metadata_is_not_a_delta(tmp_path):
    save_file(valid_tensors(), str(tmp_path / "d.safetensors"))
    with pytest.raises(DeltaFormatError, match="not a semedge delta"):
        load_delta(tmp_path / "d.safetensors")


def test_gap8_escape_count_mismatch(make_delta, tmp_path):
    path = save_delta(make_delta(density=0.01), tmp_path / "d.delta.safetensors", "gap8")
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.endswith(".delta_gap_escapes"))
    tensors[name] = np.append(tensors[name], np.uint32(7))
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    meta["payload_sha256"] = _payload_sha256(tensors)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(DeltaFileError, match="escape"):
        load_delta(path)


def test_missing_file(tmp_path):
    with pytest.raises(DeltaFileError, match="no such delta file"):
        load_delta(tmp_path / "nope.delta.safetensors")


def test_every_truncation_is_a_delta_error(make_delta, tmp_path):
    data = save_delta(make_delta(), tmp_path / "d.delta.safetensors").read_bytes()
    cut = tmp_path / "cut.delta.safetensors"
    for n in sorted({0, 1, 7, 8, 9, 100, len(data) // 2, len(data) - 1}):
        cut.write_bytes(data[:n])
        with pytest.raises(DeltaFileError):
            load_delta(cut)


def test_random_byte_flips_never_load_silently(make_delta, tmp_path):
    """A flipped byte is a DeltaError, or (inside free metadata text) changes no weight data."""
    original = make_delta()
    raw = save_delta(original, tmp_path / "d.delta.safetensors").read_bytes()
    path = tmp_path / "flipped.delta.safetensors"

    @settings(max_examples=80, deadline=None)
    @given(st.integers(0, len(raw) - 1), st.integers(1, 255))
    def check(pos: int, flip: int) -> None:
        data = bytearray(raw)
        data[pos] ^= flip
        path.write_bytes(bytes(data))
        try:
            loaded = load_delta(path)
        except DeltaError:
            return
        for name, entry in original.entries.items():
            np.testing.assert_array_equal(loaded.entries[name].indices, entry.indices)
            assert loaded.entries[name].values.tobytes() == entry.values.tobytes()

    check()


def test_in_memory_delta_is_validated_before_saving(make_delta, tmp_path):
    delta = make_delta()
    name = next(iter(delta.entries))
    entry = delta.entries[name]
    delta.entries[name] = DeltaEntry(entry.indices[::-1].copy(), entry.values, entry.shape)
    with pytest.raises(DeltaIndexOrderError):
        save_delta(delta, tmp_path / "d.delta.safetensors")
    assert not list(tmp_path.iterdir())
