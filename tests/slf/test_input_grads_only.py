"""Frozen Conv/ConvTranspose/Linear units under :func:`input_grads_only`: no input kept for
backward, gradients bit-identical to plain autograd, frozen weights untouched, undo exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdk.adapt.slf import (
    SLFConfig,
    _loss,
    _saved_bytes,
    _trainable,
    decoder_layers,
    input_grads_only,
    pair,
    split_layers,
)

from .conftest import tiny

UNITS = {  # the strides, paddings and layouts our decoders use
    "conv stride 2": (lambda: nn.Conv2d(6, 8, 5, 2, padding=2), (4, 6, 16, 16), False),
    "conv 3x3 stride 2, odd size": (lambda: nn.Conv2d(6, 8, 3, 2, padding=1), (4, 6, 7, 7), False),
    "conv 1x1 stride 2 (residual shortcut)": (lambda: nn.Conv2d(6, 8, 1, 2), (4, 6, 8, 8), False),
    "convT 5x5 stride 2 output_padding 1 (DeepJSCC)": (
        lambda: nn.ConvTranspose2d(8, 6, 5, 2, padding=2, output_padding=1),
        (4, 8, 8, 8),
        False,
    ),
    "convT 4x4 stride 2 channels-last (VQ)": (
        lambda: nn.ConvTranspose2d(8, 1, 4, 2, padding=1),
        (4, 8, 8, 8),
        True,
    ),
    "linear": (lambda: nn.Linear(8, 10), (4, 8), False),
}


def _saved_storages(fn):
    seen = []

    def pack(t):
        seen.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, seen


@pytest.mark.parametrize("kind", list(UNITS))
def test_a_frozen_unit_keeps_no_input_and_passes_the_same_gradient(kind):
    make, shape, channels_last = UNITS[kind]
    torch.manual_seed(0)
    unit = make().requires_grad_(False)
    before = {n: p.detach().clone() for n, p in unit.named_parameters()}
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = unit(x)
    grad_out = torch.randn_like(out)
    # a nonlinearity after the unit, so that the gradient depends on its output
    (want,) = torch.autograd.grad(torch.tanh(out), x, grad_out)
    undo = input_grads_only(unit)
    lean, saved = _saved_storages(lambda: unit(x))
    (got,) = torch.autograd.grad(torch.tanh(lean), x, grad_out)
    undo()
    assert torch.equal(lean, out) and torch.equal(got, want)
    assert x.untyped_storage().data_ptr() not in saved  # the input is not kept
    assert all(p.grad is None for p in unit.parameters())
    assert all(torch.equal(p, before[n]) for n, p in unit.named_parameters())
    assert "forward" not in vars(unit)  # undone: the class's forward again


def test_a_unit_that_trains_is_left_to_autograd():
    unit = nn.Conv2d(3, 4, 3)
    input_grads_only(unit)
    assert "forward" not in vars(unit)


@pytest.mark.parametrize(
    ("family", "freeze", "side"),
    [
        ("DeepJSCC", 3, "output"),
        ("DeepJSCC", 6, "output"),
        ("DeepJSCC", 3, "input"),
        ("VQTransceiver", 2, "output"),
        ("VQTransceiver", 3, "input"),
        ("GAITransceiver", 3, "input"),
    ],
)
def test_a_step_has_the_same_gradients_and_keeps_less(digits, family, freeze, side):
    tx, rx = tiny(family, 1), tiny(family, 2)
    _, tuned = split_layers(decoder_layers(rx), freeze, side)
    paired = pair(tx, rx)
    params = _trainable(paired, tuned)
    batch = {
        "image": torch.stack([digits[i]["image"] for i in range(16)]),
        "label": torch.tensor([int(digits[i]["label"]) for i in range(16)]),
    }
    config = SLFConfig()

    def gradients():
        torch.manual_seed(1)
        _loss(paired, batch, config).backward()
        grads = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return grads

    want, plain_saved = gradients(), _saved_bytes(paired, batch, config)
    undo = input_grads_only(paired)
    got, lean_saved = gradients(), _saved_bytes(paired, batch, config)
    undo()
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert lean_saved < plain_saved
    assert not any("forward" in vars(m) for m in paired.modules())
