"""Every new family: contract outputs, checkpoint round-trip, ONNX export of both halves."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdk.checkpoint import load_checkpoint, save_checkpoint
from sdk.models.registry import available_models, build_model

FAMILIES = {
    "GAI": ("GAITransceiver", dict(hidden=8)),
    "GAI-w": ("GAITransceiver", dict(hidden=8, graph_update=False)),
    "sequential": ("GAITransceiver", dict(hidden=8, mode="sequential")),
    "KEM": ("KEMTransceiver", dict(hidden=8)),
    "sKEM": ("KEMTransceiver", dict(hidden=8, etf=True)),
    "VQ": ("VQTransceiver", dict(hidden=8, num_classes=10)),
    "GAI-mnist": (
        "GAITransceiver",
        dict(in_channels=1, image_size=28, hidden=8, tasks=["recon", "logits", "mask_logits"]),
    ),
    "KEM-mnist": (
        "KEMTransceiver",
        dict(in_channels=1, image_size=28, hidden=8, tasks=["recon", "mask_logits"]),
    ),
}
SHAPES = {
    "recon": lambda c, s: (c, s, s),
    "logits": lambda c, s: (10,),
    "mask_logits": lambda c, s: (1, s, s),
}


def _model(key):
    name, args = FAMILIES[key]
    torch.manual_seed(0)
    return build_model(name, **args)


def test_families_are_registered():
    assert {"DeepJSCC", "GAITransceiver", "KEMTransceiver", "VQTransceiver"} <= set(
        available_models()
    )


@pytest.mark.parametrize("key", FAMILIES)
def test_forward_returns_the_contract_keys_and_shapes(key):
    model = _model(key)
    c, s, _ = model.input_shape
    x = torch.rand(3, c, s, s)
    out = model(x, torch.tensor([0.0, 10.0, 20.0]))  # per-sample SNR
    assert tuple(out) == model.tasks
    for task, y in out.items():
        assert y.shape == (3, *SHAPES[task](c, s)), task
        assert torch.isfinite(y).all()
    assert ((out["recon"] >= 0) & (out["recon"] <= 1)).all()
    z = model.transmitter(x)
    assert z.dim() == 2 and z.shape[0] == 3 and z.shape[1] % 2 == 0
    if key != "VQ":  # analog: power-normalised symbols
        torch.testing.assert_close((z**2).sum(1) / (z.shape[1] // 2), torch.ones(3))
    assert set(model.sides()) == {"encoder", "decoder"}


@pytest.mark.parametrize("key", FAMILIES)
def test_checkpoint_round_trip_is_bit_exact(key, tmp_path):
    model = _model(key)
    with torch.no_grad():  # move away from the init so loading really restores values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(model, tmp_path / key)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.eval()
    c, s, _ = model.input_shape
    x = torch.rand(2, c, s, s)
    with torch.no_grad():
        z = model.transmitter(x)
        assert torch.equal(z, loaded.transmitter(x))
        want, got = model.receiver(z), loaded.receiver(z)
    assert all(torch.equal(want[k], got[k]) for k in want)


def _export(module, example):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=["input"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}},
        )
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("key", ["GAI", "sequential", "KEM", "sKEM", "VQ", "GAI-mnist"])
def test_both_halves_export_to_onnx_and_match_torch(key):
    model = _model(key).eval()
    c, s, _ = model.input_shape
    with torch.no_grad():
        x = torch.rand(2, c, s, s)
        tx = _export(model.transmitter, x)
        z = model.transmitter(x)
        rx = _export(model.receiver, z)
        x5 = torch.rand(5, c, s, s)  # another batch size: the batch axis is dynamic
        z5 = model.transmitter(x5)
        np.testing.assert_allclose(tx.run(None, {"input": x5.numpy()})[0], z5.numpy(), atol=1e-5)
        want = model.receiver(z5)
        got = rx.run(None, {"input": z5.numpy()})
    assert len(got) == len(want)
    for g, w in zip(got, want.values(), strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-5)
