"""SAM training: layer budget, straight-through gradients, a real short adaptation run."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sdk.adapt.zfda import (
    _SAM,
    ZFDAConfig,
    ZFDAError,
    adapt_zfda,
    adaptable_weights,
    allocate_budget,
)
from sdk.data import ImageDataset, load_dataset
from sdk.data.shifts import apply_shift
from sdk.delta import TorchDeltas
from sdk.fingerprint import model_fingerprint
from sdk.train import task_loss

layers = st.lists(st.tuples(st.integers(1, 5000), st.floats(0.5, 1000.0)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(layers, st.floats(1e-4, 0.1))
def test_budget_sums_to_gamma_p_and_respects_caps(spec, sparsity):
    sizes = {f"l{i}": n for i, (n, _) in enumerate(spec)}
    weights = {f"l{i}": w for i, (_, w) in enumerate(spec)}
    budget = allocate_budget(sizes, weights, sparsity)
    assert sum(budget.values()) == round(sparsity * sum(sizes.values()))
    assert all(0 <= budget[n] <= sizes[n] for n in sizes)
    # Uncapped layers get their proportional share of what the capped ones left (±1).
    free = [n for n in sizes if budget[n] < sizes[n]]
    left = sum(budget[n] for n in free)
    norm = sum(weights[n] for n in free)
    for n in free:
        assert abs(budget[n] - left * weights[n] / norm) < 1 + 1e-9


def test_budget_redistributes_a_capped_layer():
    budget = allocate_budget({"tiny": 10, "big": 10_000}, {"tiny": 1e6, "big": 1.0}, 0.01)
    assert budget == {"tiny": 10, "big": 90}  # round(0.01 * 10_010) = 100


def test_budget_is_proportional_to_din_plus_dout(model):
    dims = adaptable_weights(model, "both")
    params = dict(model.named_parameters())
    sizes = {n: params[n].numel() for n in dims}
    budget = allocate_budget(sizes, {n: float(sum(d)) for n, d in dims.items()}, 0.01)
    a, b = "transmitter.features.1.0.weight", "transmitter.features.0.0.weight"
    assert dims[a] == (8 * 25, 8) and dims[b] == (3 * 25, 8)
    assert budget[a] / budget[b] == pytest.approx((200 + 8) / (75 + 8), rel=0.2)


def test_sides_pick_conv_and_linear_weights(model):
    enc, dec = adaptable_weights(model, "encoder"), adaptable_weights(model, "decoder")
    assert enc and dec and not set(enc) & set(dec)
    assert all(n.startswith("transmitter.") for n in enc)
    assert all(n.startswith("receiver.") for n in dec)
    assert set(adaptable_weights(model, "both")) == set(enc) | set(dec)
    plain = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(8, 5), nn.LayerNorm(5))
    assert adaptable_weights(plain, "decoder") == {"0.weight": (6, 4), "2.weight": (8, 5)}
    with pytest.raises(ZFDAError, match="side"):
        adaptable_weights(model, "middle")
    with pytest.raises(ZFDAError, match="no Conv/Linear"):
        adaptable_weights(nn.Sequential(nn.ReLU()), "both")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sparsity": 0.5}, "sparsity"),
        ({"sparsity": 1e-5}, "sparsity"),
        ({"side": "left"}, "side"),
        ({"value_dtype": "int8"}, "value_dtype"),
        ({"score_init": "zeros"}, "score_init"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_config_errors(change, match):
    with pytest.raises(ZFDAError, match=match):
        ZFDAConfig(**change).validate()


def test_straight_through_gradient_reaches_the_scores(model):
    params = dict(model.named_parameters())
    name = "receiver.features.0.0.weight"
    sam = _SAM(model, {name: 40})
    with torch.no_grad():
        sam.scores[0].copy_(torch.rand(params[name].numel()))
        sam.values[0].copy_(torch.randn(params[name].numel()) * 0.1)
    x = torch.rand(2, 3, 16, 16)

    def loss_of(weights):
        torch.manual_seed(3)
        return task_loss(torch.func.functional_call(model, weights, (x, 10.0)), {"image": x})

    weights = sam.weights()
    mask = sam.masks()[0].detach()
    assert int(mask.sum()) == 40
    changed = (weights[name] != params[name]).flatten()
    assert changed.sum() <= 40 and not bool(changed[mask == 0].any())
    loss_of(weights).backward()
    # STE: dL/dS = dL/dW * V everywhere (also outside the mask); dL/dV = m * dL/dW.
    w = weights[name].detach().clone().requires_grad_(True)
    loss_of({name: w}).backward()
    grad_w = w.grad.flatten()
    torch.testing.assert_close(sam.scores[0].grad, grad_w * sam.values[0].detach())
    torch.testing.assert_close(sam.values[0].grad, grad_w * mask)
    assert bool((sam.scores[0].grad[mask == 0] != 0).any())


def test_short_sam_run_improves_the_shifted_domain(model):
    patches = load_dataset("patches", "train").images[:192]
    small = torch.nn.functional.avg_pool2d(patches, 2)  # 16x16 for the tiny model
    data = ImageDataset("patches@hue", apply_shift(small, "hue"))
    fingerprint = model_fingerprint(model)
    config = ZFDAConfig(
        sparsity=0.05, side="decoder", epochs=4, batch_size=32, lr_values=1e-2, progress=False
    )
    history: list[dict[str, float]] = []
    delta = adapt_zfda(model, data, "hue", config, history)
    assert model_fingerprint(model) == fingerprint  # training never touches the model
    assert len(history) == 4 and all(math.isfinite(h["loss"]) for h in history)
    assert delta.base_fingerprint == fingerprint and delta.domain == "hue"
    assert all(n.startswith("receiver.") for n in delta.entries)
    dims = adaptable_weights(model, "decoder")
    total = sum(dict(model.named_parameters())[n].numel() for n in dims)
    assert delta.nnz == round(0.05 * total)
    assert all(e.values.dtype.name == "float16" for e in delta.entries.values())

    def domain_loss() -> float:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            return float(task_loss(model(data.images, 10.0), {"image": data.images}))

    before = domain_loss()
    adapter = TorchDeltas(model)
    adapter.load(delta)
    adapter.activate("hue")
    adapted = domain_loss()
    adapter.deactivate()
    assert adapted < 0.95 * before
    assert domain_loss() == before
