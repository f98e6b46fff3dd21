"""Delta switching through the runtime: same as torch with the delta, base restored bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest

from sdk import Runtime
from sdk.delta import Delta, DeltaEntry, DeltaFingerprintError, save_delta
from sdk.runtime import DeltaTargetError


def _delta(checkpoint, names, domain, seed, tmp_path):
    from sdk.checkpoint import load_checkpoint
    from sdk.fingerprint import model_fingerprint

    model = load_checkpoint(checkpoint)
    params = dict(model.named_parameters())
    rng = np.random.default_rng(seed)
    entries = {}
    for name in names:
        size = params[name].numel()
        idx = np.sort(rng.choice(size, max(1, size // 10), replace=False)).astype(np.int64)
        vals = rng.normal(0, 0.05, len(idx)).astype(np.float32)
        entries[name] = DeltaEntry(idx, vals, tuple(params[name].shape))
    delta = Delta(domain, model_fingerprint(model), 0.9, entries)
    return save_delta(delta, tmp_path / f"{domain}.delta.safetensors")


TARGETS = ["receiver.features.2.0.weight", "receiver.to_image.weight", "receiver.to_image.bias"]


@pytest.fixture(scope="module")
def deltas(checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deltas")
    return [_delta(checkpoint, TARGETS, d, i, tmp) for i, d in enumerate(("hue", "rotation"))]


@pytest.fixture(scope="module")
def symbols(checkpoint, real_images):
    with Runtime.load(checkpoint, part="transmitter") as tx:
        return tx.infer(real_images)["symbols"]


@pytest.mark.parametrize("mode", ["inputs", "rebuild", "shared"])
def test_switching_matches_torch_and_restores_base(
    mode, checkpoint, onnx_artifact, deltas, symbols, rel
):
    rt = Runtime.load(onnx_artifact, delta_mode=None if mode == "inputs" else mode)
    ref = Runtime.load(checkpoint, part="receiver")
    assert rt.delta_mode == mode and ref.delta_mode == "inplace"
    base = rt.infer(symbols)
    for delta in (*deltas, deltas[0]):  # A, switch to B, back to A
        rt.activate_delta(delta)
        ref.activate_delta(delta)
        got, want = rt.infer(symbols), ref.infer(symbols)
        assert not np.array_equal(got["recon"], base["recon"])  # the delta took effect
        for key in want:
            assert rel(got[key], want[key]) < 1e-5
    assert rt.active_delta == "hue"
    rt.deactivate_delta()
    after = rt.infer(symbols)
    for key in base:
        assert np.array_equal(after[key], base[key])  # bit-exact
    assert rt.active_delta is None and rt.info()["last_switch_ms"] >= 0
    rt.close()
    ref.close()


def test_delta_outside_targets_changes_nothing(checkpoint, tmp_path, symbols):
    from sdk.build import build

    art = build(checkpoint, tmp_path / "a", "onnxrt", part="receiver", delta_targets=TARGETS[1:])
    wide = _delta(checkpoint, TARGETS, "wide", 3, tmp_path)
    with Runtime.load(art) as rt:
        base = rt.infer(symbols)["recon"]
        with pytest.raises(DeltaTargetError, match=r"features\.2\.0\.weight") as exc:
            rt.activate_delta(wide)
        assert "--delta-targets" in str(exc.value)
        assert np.array_equal(rt.infer(symbols)["recon"], base)


def test_delta_for_another_base_changes_nothing(tmp_path, onnx_artifact, symbols, small):
    from sdk.checkpoint import save_checkpoint

    other = small("DeepJSCC")
    for p in other.parameters():
        p.data.add_(0.01)
    other_ckpt = save_checkpoint(other, tmp_path / "other")
    foreign = _delta(other_ckpt, TARGETS, "foreign", 4, tmp_path)
    with Runtime.load(onnx_artifact) as rt:
        base = rt.infer(symbols)["recon"]
        with pytest.raises(DeltaFingerprintError):
            rt.activate_delta(foreign)
        assert np.array_equal(rt.infer(symbols)["recon"], base)


def test_rebuild_mode_reuses_a_deltas_session(onnx_artifact, deltas, symbols):
    with Runtime.load(onnx_artifact, delta_mode="rebuild") as rt:
        base_session = rt.runner._sess
        rt.preload_delta(deltas[0])
        assert rt.runner._sess is base_session and rt.active_delta is None
        rt.activate_delta(deltas[0])
        first = rt.runner._sess
        a = rt.infer(symbols)["recon"]
        rt.activate_delta(deltas[1])
        rt.activate_delta(deltas[0])
        assert rt.runner._sess is first  # cached, not rebuilt
        assert np.array_equal(rt.infer(symbols)["recon"], a)
        rt.deactivate_delta()
        assert rt.runner._sess is base_session


def test_a_change_file_is_known_by_its_bytes_not_its_path(
    checkpoint, onnx_artifact, deltas, symbols, tmp_path
):
    """The same bytes under two names are one change; new bytes at the same path (the file
    replaced in place, as the agent does: atomic rename) are another, and they run."""
    import shutil

    from sdk.files import write_bytes

    hue = deltas[0]
    newer = _delta(checkpoint, TARGETS, "hue", 7, tmp_path)  # same domain, other values
    with Runtime.load(onnx_artifact) as rt:
        rt.activate_delta(newer)
        want_newer = rt.infer(symbols)["recon"]
    path = tmp_path / "live.delta.safetensors"
    with Runtime.load(onnx_artifact) as rt:
        rt.activate_delta(hue)
        want_hue = rt.infer(symbols)["recon"]
        assert rt.load_change(shutil.copy(hue, tmp_path / "copy.delta.safetensors")) == "hue"
        write_bytes(path, hue.read_bytes())
        assert rt.load_change(path) == "hue" and rt.list() == ["hue"]
        write_bytes(path, newer.read_bytes())
        name = rt.load_change(path)
        assert name.startswith("hue@") and rt.list() == sorted(["hue", name])
        rt.activate(path)
        assert rt.active == [name]
        got = rt.infer(symbols)["recon"]
        assert np.array_equal(got, want_newer) and not np.array_equal(got, want_hue)
