"""Switching deltas on a live model: validation first, bit-exact restore, PEFT-like API."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.delta import (
    DeltaCore,
    DeltaDtypeError,
    DeltaFileError,
    DeltaFingerprintError,
    DeltaFormatError,
    DeltaIndexOrderError,
    DeltaIndexRangeError,
    DeltaNameError,
    DeltaShapeError,
    DeltaUnknownParameterError,
    DeltaValueError,
    TorchDeltas,
    save_delta,
)
from sdk.fingerprint import fingerprint_arrays, model_fingerprint

DECODER_W = "receiver.features.0.0.weight"


def with_entry(delta, name=DECODER_W, **change):
    entries = dict(delta.entries)
    entries[name] = replace(entries.get(name, delta.entries[DECODER_W]), **change)
    return replace(delta, entries=entries)


def bad_deltas(delta):
    """(label, bad delta, expected error) for every in-memory defect."""
    e = delta.entries[DECODER_W]
    size = e.size
    return [
        ("fingerprint", replace(delta, base_fingerprint="0" * 64), DeltaFingerprintError),
        ("unknown", with_entry(delta, "receiver.nope.weight"), DeltaUnknownParameterError),
        (
            "shape",
            with_entry(delta, shape=(e.shape[0], e.shape[1], 1, size // e.shape[0] // e.shape[1])),
            DeltaShapeError,
        ),
        ("range", with_entry(delta, indices=np.append(e.indices[:-1], size)), DeltaIndexRangeError),
        ("negative", with_entry(delta, indices=np.append(-1, e.indices[1:])), DeltaIndexRangeError),
        (
            "duplicate",
            with_entry(delta, indices=np.append(e.indices[:-1], e.indices[-2])),
            DeltaIndexOrderError,
        ),
        ("unsorted", with_entry(delta, indices=e.indices[::-1].copy()), DeltaIndexOrderError),
        (
            "nan",
            with_entry(delta, values=np.append(e.values[:-1], np.float16(np.nan))),
            DeltaValueError,
        ),
        (
            "inf",
            with_entry(delta, values=np.append(e.values[:-1], np.float16(np.inf))),
            DeltaValueError,
        ),
        ("value dtype", with_entry(delta, values=e.values.astype(np.float64)), DeltaDtypeError),
        ("index dtype", with_entry(delta, indices=e.indices.astype(np.int32)), DeltaDtypeError),
        ("counts", with_entry(delta, values=e.values[:-1]), DeltaShapeError),
    ]


@pytest.mark.parametrize("while_active", [False, True])
def test_every_bad_delta_leaves_the_model_bit_identical(model, make_delta, bits, while_active):
    adapter = TorchDeltas(model)
    good = make_delta("contrast", seed=1)
    adapter.load(good)
    if while_active:
        adapter.activate("contrast")
    before, fingerprint = bits(model), model_fingerprint(model)
    for label, bad, error in bad_deltas(make_delta("hue")):
        with pytest.raises(error):
            adapter.load(bad, label)
        with pytest.raises(error):  # the engine-level entry point validates too
            adapter.core.activate(bad)
        assert bits(model) == before, label
        assert model_fingerprint(model) == fingerprint, label
        assert adapter.active == ("contrast" if while_active else None)
        assert adapter.list() == ["contrast"]


def test_bad_files_leave_the_model_bit_identical(model, make_delta, bits, tmp_path):
    adapter = TorchDeltas(model)
    adapter.load(make_delta("contrast", seed=1))
    adapter.activate("contrast")
    before = bits(model)
    data = save_delta(make_delta(), tmp_path / "good.delta.safetensors").read_bytes()
    truncated = tmp_path / "truncated.delta.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    tampered = tmp_path / "version.delta.safetensors"
    tampered.write_bytes(data.replace(b'"format_version":"1"', b'"format_version":"9"'))
    assert tampered.read_bytes() != data
    other_base = save_delta(
        replace(make_delta(), base_fingerprint="1" * 64), tmp_path / "other.delta.safetensors"
    )
    cases = [
        (truncated, DeltaFileError),
        (tampered, DeltaFormatError),
        (tmp_path / "missing.delta.safetensors", DeltaFileError),
        (other_base, DeltaFingerprintError),
    ]
    for path, error in cases:
        with pytest.raises(error):
            adapter.load(path)
        assert bits(model) == before
        assert adapter.active == "contrast"


def applied(base: dict[str, np.ndarray], delta) -> dict[str, np.ndarray]:
    """``base`` with ``delta`` applied, computed independently in numpy."""
    out = {n: a.copy() for n, a in base.items()}
    for name, e in delta.entries.items():
        flat = out[name].reshape(-1)
        flat[e.indices] = base[name].reshape(-1)[e.indices] + e.values.astype(flat.dtype)
    return out


def test_random_switch_sequences_restore_exactly(model, make_delta):
    """1,000 random activate/switch/deactivate/disabled sequences: always the expected bits.

    After every step the weights equal base (+ the active delta, applied independently in
    numpy); after every sequence the base fingerprint is restored exactly.
    """
    base_state = {n: t.numpy().copy() for n, t in model.state_dict().items()}
    base_fp = model_fingerprint(model)
    decoder = [n for n in dict(model.named_parameters()) if n.startswith("receiver.")]
    deltas = {
        "a": make_delta("a", 0.05, seed=1),
        "b": make_delta("b", 0.2, seed=2, names=decoder, dtype=np.float32),
        "c": make_delta("c", 0.01, seed=3, names=decoder[:2]),
    }
    states = {None: base_state, **{k: applied(base_state, d) for k, d in deltas.items()}}
    assert fingerprint_arrays(base_state) == base_fp
    assert len({fingerprint_arrays(s) for s in states.values()}) == 4
    params = dict(model.named_parameters())
    expected = {k: b"".join(s[n].tobytes() for n in params) for k, s in states.items()}

    def current() -> bytes:
        return b"".join(p.detach().numpy().tobytes() for p in params.values())

    adapter = TorchDeltas(model)
    for name, delta in deltas.items():
        adapter.load(delta, name)
    op = st.sampled_from(["a", "b", "c", "off", "disabled"])

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(op, max_size=12))
    def run(ops: list[str]) -> None:
        for o in ops:
            if o == "off":
                adapter.deactivate()
            elif o == "disabled":
                active = adapter.active
                with adapter.disabled():
                    assert current() == expected[None]
                assert adapter.active == active
            else:
                adapter.activate(o)
            assert current() == expected[adapter.active]
        adapter.deactivate()
        assert model_fingerprint(model) == base_fp

    run()


def test_save_load_apply_gives_identical_outputs(model, make_delta, tmp_path):
    x = torch.rand(4, 3, 16, 16)

    def outputs() -> torch.Tensor:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(7)
            return model(x, 10.0)["recon"]

    base_out = outputs()
    delta = make_delta("hue", 0.05, dtype=np.float16)
    adapter = TorchDeltas(model)
    adapter.load(delta, "memory")
    for encoding in ("gap8", "int32"):
        adapter.load(
            save_delta(delta, tmp_path / f"{encoding}.delta.safetensors", encoding), encoding
        )
    adapter.activate("memory")
    reference = outputs()
    assert not torch.equal(reference, base_out)
    for name in ("gap8", "int32"):
        adapter.activate(name)
        assert torch.equal(outputs(), reference)
    adapter.deactivate()
    assert torch.equal(outputs(), base_out)


def test_numpy_engine_without_flat_buffer_matches_torch(model, make_delta):
    """The core over separate numpy buffers (as ONNX Runtime has them) gives the same bits."""
    delta = make_delta("hue", 0.1)
    arrays = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    core = DeltaCore(arrays, model_fingerprint(model))
    adapter = TorchDeltas(model)
    adapter.load(delta)
    adapter.activate("hue")
    core.activate(delta)
    assert core.active == "hue"
    for n, p in model.named_parameters():
        assert p.detach().numpy().tobytes() == arrays[n].tobytes(), n
    core.deactivate()
    adapter.deactivate()
    for n, p in model.named_parameters():
        assert p.detach().numpy().tobytes() == arrays[n].tobytes(), n


def test_core_refuses_non_contiguous_buffers():
    with pytest.raises(ValueError, match="contiguous"):
        DeltaCore({"w": np.zeros((4, 4), np.float32)[:, ::2]}, "0" * 64)


def test_peft_like_api(model, make_delta, bits):
    adapter = TorchDeltas(model)
    base = bits(model)
    assert adapter.load(make_delta("hue", seed=1)) == "hue"
    assert adapter.load(make_delta("rotation", seed=2), "rot") == "rot"
    assert adapter.list() == ["hue", "rot"]
    with pytest.raises(DeltaNameError, match="already loaded"):
        adapter.load(make_delta("hue", seed=3))
    with pytest.raises(DeltaNameError, match="loaded: hue, rot"):
        adapter.activate("contrast")
    adapter.activate("hue")
    info = adapter.inspect("hue")
    assert info["active"] and info["domain"] == "hue" and info["nnz"] > 0
    assert not adapter.inspect("rot")["active"]
    with adapter.disabled():
        assert adapter.active is None and bits(model) == base
    assert adapter.active == "hue"
    adapter.activate("rot")
    assert adapter.active == "rot"
    adapter.unload("rot")
    assert adapter.active is None and bits(model) == base and adapter.list() == ["hue"]
    with adapter.disabled():
        assert adapter.active is None
    assert adapter.active is None


def test_adapter_keeps_parameters_and_their_gradients(model, make_delta):
    params = list(model.parameters())
    TorchDeltas(model).load(make_delta())
    assert list(model.parameters()) == params
    model(torch.rand(2, 3, 16, 16), 10.0)["recon"].mean().backward()
    assert all(p.grad is not None for p in params if p.requires_grad)
