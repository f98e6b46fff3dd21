"""The same verbs on ``sdk.Runtime`` (torch, ONNX Runtime inputs and rebuild modes), and the
``semedge adapt slf`` / ``update`` / ``eval --tx --rx`` commands on real runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdk.checkpoint import save_checkpoint
from sdk.cli import main
from sdk.delta import Delta, DeltaEntry, DeltaOverlapError, load_update
from sdk.fingerprint import model_fingerprint
from sdk.runtime import Runtime

from .conftest import make_update, tiny

W = "receiver.to_image.weight"
F0 = "receiver.features.0.0.weight"


@pytest.fixture
def rx_ckpt(tmp_path):
    return save_checkpoint(tiny("DeepJSCC", 2), tmp_path / "rx")


def _delta(model, names, seed=0) -> Delta:
    rng = np.random.default_rng(seed)
    params = dict(model.named_parameters())
    entries = {}
    for n in names:
        idx = np.sort(rng.choice(params[n].numel(), 5, replace=False)).astype(np.int64)
        entries[n] = DeltaEntry(idx, rng.standard_normal(5).astype(np.float16), params[n].shape)
    return Delta("hue", model_fingerprint(model), 0.1, entries)


@pytest.mark.parametrize(
    "opts",
    [
        dict(backend="torch", part="receiver"),
        dict(backend="onnxrt", part="receiver", delta_targets="decoder"),
        dict(backend="onnxrt", part="receiver", delta_mode="rebuild"),
    ],
    ids=["torch", "onnxrt-inputs", "onnxrt-rebuild"],
)
def test_runtime_verbs_with_an_update_and_a_delta(rx_ckpt, opts):
    model = tiny("DeepJSCC", 2)
    update = make_update(model, [W], seed=1, name="slf")
    delta, clash = _delta(model, [F0]), _delta(model, [W], seed=2)
    symbols = model.transmitter(torch.rand(3, 1, 16, 16)).detach().numpy()
    with Runtime.load(rx_ckpt, **opts) as rt:
        base = rt.infer(symbols)["recon"]
        assert rt.load_change(update) == "slf" and rt.list() == ["slf"]
        rt.activate("slf")
        updated = rt.infer(symbols)["recon"]
        assert not np.array_equal(updated, base)
        rt.activate(delta)
        rt.activate(delta)  # the same object again: no second copy
        assert rt.list() == ["slf", "hue"]
        assert sorted(rt.active) == ["hue", "slf"] and rt.active_delta == "hue"
        both = rt.infer(symbols)["recon"]
        with pytest.raises(DeltaOverlapError, match=r"both change receiver\.to_image\.weight"):
            rt.activate(clash)
        assert np.array_equal(rt.infer(symbols)["recon"], both)
        with rt.disabled():
            assert np.array_equal(rt.infer(symbols)["recon"], base) and rt.active == []
        assert np.array_equal(rt.infer(symbols)["recon"], both)
        rt.deactivate_delta()
        assert rt.active == ["slf"] and np.array_equal(rt.infer(symbols)["recon"], updated)
        rt.unload("slf")
        assert rt.active == [] and np.array_equal(rt.infer(symbols)["recon"], base)


def test_runtime_merge_on_torch_and_a_clear_error_elsewhere(rx_ckpt, tmp_path):
    from sdk.runtime.base import RunnerError

    update = make_update(tiny("DeepJSCC", 2), [W], seed=1)
    with Runtime.load(rx_ckpt, backend="torch") as rt:
        rt.activate(update)
        assert rt.merge(tmp_path / "merged") == update.result_fingerprint
    with (
        Runtime.load(rx_ckpt, backend="onnxrt", part="receiver") as rt,
        pytest.raises(RunnerError, match="semedge update apply"),
    ):
        rt.merge(tmp_path / "nope")


def test_slf_cli_end_to_end(tmp_path, capsys):
    tx = save_checkpoint(tiny("DeepJSCC", 1), tmp_path / "tx")
    rx = save_checkpoint(tiny("DeepJSCC", 2), tmp_path / "rx")
    download = tmp_path / "rx.decoder.safetensors"
    assert main(["adapt", "slf", "--rx", str(rx), "--save-download", str(download)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["adapt", "slf", "--rx", str(download), "--list-layers", "--freeze", "2"]) == 0
    table = capsys.readouterr().out
    assert "receiver.classifier.2" in table and table.count("frozen") == 2
    pkg = tmp_path / "a.update.safetensors"
    argv = ["adapt", "slf", "--tx", str(tx), "--rx", str(rx), "--freeze", "3"]
    argv += ["--freeze-side", "input", "--data", "digits", "--limit", "64", "--steps", "2"]
    argv += ["--batch-size", "32", "--snr", "5,15", "--domain", "rotation", "--out", str(pkg)]
    argv += ["--schedule", "cosine"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usable again" in out and (tmp_path / "a.tx").is_dir()
    update = load_update(pkg)
    assert update.freeze == 3 and update.freeze_side == "input"
    assert update.accounting["snr_db"] == [5.0, 15.0]
    assert update.accounting["schedule"] == "cosine"
    assert main(["update", "inspect", str(pkg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["freeze"] == 3
    acc = {}
    for extra in ([], ["--update", str(pkg)]):
        pairing = ["eval", "--tx", str(tmp_path / "a.tx"), "--rx", str(rx), "--data", "digits"]
        assert main([*pairing, "--snr", "10", "--json", *extra]) == 0
        acc[bool(extra)] = json.loads(capsys.readouterr().out)[0]["psnr"]
    assert acc[True] != acc[False]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["adapt", "slf", "--rx", "RX", "--freeze", "9", "--tx", "TX", "--out", "o"], "ℓ = 9"),
        (["adapt", "slf", "--rx", "RX"], "give --tx"),
        (["adapt", "slf", "--rx", "RX", "--tx", "TX", "--out", "o", "--snr", "99"], "SNR"),
        (["eval", "--tx", "TX"], "--tx CKPT --rx CKPT"),
        (["update", "rollback", "RX"], "no rollback package"),
    ],
)
def test_cli_mistakes_are_one_line(tmp_path, capsys, argv, needle):
    tx = save_checkpoint(tiny("DeepJSCC", 1), tmp_path / "tx")
    rx = save_checkpoint(tiny("DeepJSCC", 2), tmp_path / "rx")
    argv = [str(rx) if a == "RX" else str(tx) if a == "TX" else a for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.skipif(
    not __import__("sdk.build", fromlist=["x"]).tensorrt_usable(),
    reason="needs TensorRT and a CUDA GPU (run on the Jetson)",
)
def test_tensorrt_refits_an_update_and_rolls_back(rx_ckpt, tmp_path):
    from sdk.build import build

    plan = build(rx_ckpt, tmp_path / "trt", backend="trt", part="receiver", delta_targets="decoder")
    update = make_update(tiny("DeepJSCC", 2), [W, F0], seed=1)
    symbols = tiny("DeepJSCC", 2).transmitter(torch.rand(3, 1, 16, 16)).detach().numpy()
    opts = dict(backend="onnxrt", part="receiver", delta_targets="decoder")
    with Runtime.load(plan) as trt, Runtime.load(rx_ckpt, **opts) as ort:
        base = trt.infer(symbols)["recon"]
        trt.activate(update)
        ort.activate(update)
        np.testing.assert_allclose(
            trt.infer(symbols)["recon"], ort.infer(symbols)["recon"], atol=1e-3
        )
        trt.deactivate()
        assert np.array_equal(trt.infer(symbols)["recon"], base)
