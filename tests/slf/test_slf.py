"""SLF fine-tuning: what is frozen stays bit-identical, the package is exactly the tuned layers,
and the receiver with the package computes exactly what the transmitter trained."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from sdk.adapt.slf import (
    SLFConfig,
    SLFError,
    SLFResult,
    adapt_slf,
    decoder_layers,
    pair,
    split_layers,
)
from sdk.delta import TorchDeltas
from sdk.fingerprint import model_fingerprint

from .conftest import TINY, tiny


@pytest.mark.parametrize("family", list(TINY))
def test_layers_cover_the_decoder_once(family):
    model = tiny(family, 0)
    layers = decoder_layers(model)
    names = [n for lay in layers for n in lay.params]
    decoder = [n for n, _ in model.named_parameters() if n.startswith("receiver.")]
    assert sorted(names) == sorted(decoder) and len(set(names)) == len(names)
    assert sum(lay.nbytes for lay in layers) == 4 * sum(
        p.numel() for p in model.receiver.parameters()
    )
    frozen, tuned = split_layers(layers, 2, "output")
    assert frozen == layers[-2:] and tuned == layers[:-2]
    frozen, tuned = split_layers(layers, 2, "input")
    assert frozen == layers[:2] and tuned == layers[2:]


def test_multitask_output_side_freezes_the_last_layer_of_every_task():
    layers = decoder_layers(tiny("GAITransceiver", 0))
    assert [lay.name for lay in layers[-2:]] == [
        "receiver.decoders.recon.net.5",
        "receiver.decoders.logits.net.2",
    ]


@pytest.mark.parametrize(
    ("family", "freeze", "side"),
    [
        ("DeepJSCC", 2, "output"),
        ("DeepJSCC", 3, "input"),
        ("VQTransceiver", 2, "output"),
        ("GAITransceiver", 3, "input"),
    ],
)
def test_frozen_untouched_and_package_is_exactly_the_tuned_layers(slf_run, family, freeze, side):
    tx, rx, result = slf_run(family, freeze, side)
    frozen, tuned = split_layers(decoder_layers(rx), freeze, side)
    rx_params = dict(rx.named_parameters())
    got = dict(result.pair.named_parameters())
    for layer in frozen:
        for name in layer.params:
            assert (
                got[name].detach().numpy().tobytes() == rx_params[name].detach().numpy().tobytes()
            )
    changed = [n for lay in tuned for n in lay.params if not torch.equal(got[n], rx_params[n])]
    assert changed  # the tuned layers did train
    assert sorted(result.update.entries) == sorted(n for lay in tuned for n in lay.params)
    encoder = [n for n in dict(tx.named_parameters()) if n.startswith("transmitter.")]
    assert any(not torch.equal(got[n], dict(tx.named_parameters())[n]) for n in encoder)
    assert result.update.base_fingerprint == model_fingerprint(rx)
    assert result.accounting["upload_bytes"] == result.update.nbytes
    assert result.accounting["steps"] == 4 and result.accounting["peak_memory_bytes"] > 0


def test_inputs_left_bit_identical(digits, bits):
    tx, rx = tiny("DeepJSCC", 1), tiny("DeepJSCC", 2)
    before = bits(tx), bits(rx)
    adapt_slf(tx, rx, digits, SLFConfig(freeze=1, steps=2, batch_size=16, progress=False))
    assert (bits(tx), bits(rx)) == before


def test_frozen_parameters_have_no_optimiser_state_or_decay(digits):
    """Weight decay on a frozen tensor would move it; with decay on, frozen stays identical."""
    tx, rx = tiny("DeepJSCC", 1), tiny("DeepJSCC", 2)
    config = SLFConfig(freeze=3, steps=3, batch_size=16, weight_decay=0.5, progress=False)
    result = adapt_slf(tx, rx, digits, config)
    frozen, _ = split_layers(decoder_layers(rx), 3, "output")
    got, want = dict(result.pair.named_parameters()), dict(rx.named_parameters())
    for name in (n for lay in frozen for n in lay.params):
        assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("family", ["DeepJSCC", "VQTransceiver", "GAITransceiver"])
def test_receiver_with_the_update_reproduces_the_transmitter_side_exactly(slf_run, family):
    _, rx, result = slf_run(family, 2, "output")
    symbols = result.pair.transmitter(torch.rand(5, *rx.input_shape))
    receiver = TorchDeltas(rx)
    try:
        receiver.activate(receiver.load(result.update))
        assert receiver.merge() == result.update.result_fingerprint
        with torch.no_grad():
            want, got = result.pair.receiver(symbols), rx.receiver(symbols)
        for task in want:
            assert torch.equal(want[task], got[task]), task
    finally:
        receiver.deactivate()


def test_receiver_with_the_update_on_onnxruntime(slf_run, tmp_path):
    from sdk.checkpoint import save_checkpoint
    from sdk.runtime import Runtime

    _, rx, result = slf_run("DeepJSCC", 2, "output")
    base = save_checkpoint(rx, tmp_path / "rx")
    merged = TorchDeltas(tiny("DeepJSCC", 2))
    merged.activate(merged.load(result.update))
    merged_ckpt = tmp_path / "merged"
    assert merged.merge(merged_ckpt) == result.update.result_fingerprint
    symbols = result.pair.transmitter(torch.rand(5, *rx.input_shape)).detach().numpy()
    with torch.no_grad():
        want = result.pair.receiver(torch.from_numpy(symbols))
    opts = dict(backend="onnxrt", part="receiver", delta_targets="decoder")
    with Runtime.load(base, **opts) as rt, Runtime.load(merged_ckpt, **opts) as ref:
        before = rt.infer(symbols)
        rt.activate(result.update)
        got, exact = rt.infer(symbols), ref.infer(symbols)
        for task in got:
            assert np.array_equal(got[task], exact[task]), task  # same graph, same weights
            np.testing.assert_allclose(got[task], want[task].numpy(), atol=1e-5)
        rt.deactivate()
        for task, out in rt.infer(symbols).items():
            assert np.array_equal(out, before[task])


def test_fp16_values_keep_the_outputs_close(slf_run):
    _, rx, exact = slf_run("DeepJSCC", 2, "output")
    _, _, half = slf_run("DeepJSCC", 2, "output", "float16")
    assert half.update.nbytes * 2 == exact.update.nbytes
    assert half.update.result_fingerprint != exact.update.result_fingerprint
    symbols = exact.pair.transmitter(torch.rand(5, *rx.input_shape))
    receiver = TorchDeltas(copy.deepcopy(rx))
    receiver.activate(receiver.load(half.update))
    with torch.no_grad():
        got, want = receiver.model.receiver(symbols), exact.pair.receiver(symbols)
    for task in want:
        np.testing.assert_allclose(got[task], want[task], atol=2e-3)


def test_bad_settings_are_one_line_errors(digits):
    tx, rx = tiny("DeepJSCC", 1), tiny("DeepJSCC", 2)
    layers = len(decoder_layers(rx))
    with pytest.raises(SLFError, match=f"decoder has {layers} layers"):
        adapt_slf(tx, rx, digits, SLFConfig(freeze=layers + 1, progress=False))
    with pytest.raises(SLFError, match="freeze side"):
        adapt_slf(tx, rx, digits, SLFConfig(freeze_side="middle", progress=False))
    with pytest.raises(SLFError, match="cannot feed"):
        pair(tx, tiny("VQTransceiver", 2))


def test_cosine_schedule_decays_the_steps_the_optimiser_takes(digits):
    """Cosine and constant agree on the first step (both at ``lr``) and part after it."""
    tx, rx = tiny("DeepJSCC", 1), tiny("DeepJSCC", 2)

    def run(schedule: str, steps: int) -> SLFResult:
        config = SLFConfig(
            freeze=2, steps=steps, batch_size=32, lr=1e-2, schedule=schedule, progress=False
        )
        return adapt_slf(tx, rx, digits, config)

    cosine = run("cosine", 4)
    assert [h["lr"] for h in cosine.history] == pytest.approx(
        [
            1e-2,
            1e-2 * 0.5 * (1 + math.cos(math.pi / 4)),
            0.5e-2,
            1e-2 * 0.5 * (1 - math.cos(math.pi / 4)),
        ]
    )
    constant = run("constant", 4)
    assert {h["lr"] for h in constant.history} == {1e-2}
    first = run("cosine", 1).update.entries, run("constant", 1).update.entries
    assert all(np.array_equal(first[0][n], first[1][n]) for n in first[0])
    assert not all(
        np.array_equal(cosine.update.entries[n], constant.update.entries[n])
        for n in cosine.update.entries
    )
    with pytest.raises(SLFError, match="schedule 'step' must be one of"):
        adapt_slf(tx, rx, digits, SLFConfig(schedule="step", progress=False))


def test_pairs_models_straight_out_of_training():
    """A VQ model keeps its last commitment loss (with its graph) after a training step."""
    tx, rx = tiny("VQTransceiver", 1), tiny("VQTransceiver", 2)
    for model in (tx, rx):
        model(torch.rand(2, 1, 16, 16), 10.0)["recon"].mean().backward()
        assert model.quantizer.loss.grad_fn is not None
    paired = pair(tx, rx)
    assert paired.transmitter.quantizer is paired.receiver.quantizer
    assert torch.equal(paired.quantizer.codebook, rx.quantizer.codebook)


def test_slf_from_the_decoder_download_alone(digits, tmp_path, bits):
    """The transmitter needs only the decoder: same package, base fingerprint of the receiver."""
    from sdk.adapt.slf import apply_update, load_download, save_download

    tx, rx = tiny("VQTransceiver", 1), tiny("VQTransceiver", 2)
    path = save_download(rx, tmp_path / "rx.decoder.safetensors")
    assert not any(n.startswith("transmitter.features") for n in load_file_names(path))
    download = load_download(path)
    config = SLFConfig(freeze=2, steps=2, batch_size=16, progress=False)
    full, partial = adapt_slf(tx, rx, digits, config), adapt_slf(tx, download, digits, config)
    assert partial.update.base_fingerprint == model_fingerprint(rx)
    assert partial.update.result_fingerprint == ""  # only the whole receiver can compute it
    for name, values in full.update.entries.items():
        assert values.tobytes() == partial.update.entries[name].tobytes()
    before = bits(rx)
    updated = apply_update(rx, partial.update)
    assert model_fingerprint(updated) == full.update.result_fingerprint and bits(rx) == before


def load_file_names(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return list(f.keys())
