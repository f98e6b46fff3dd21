"""GAI: task-node weights, the GAI-w and sequential variants, training on real MNIST."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sdk.data import load_dataset
from sdk.models.gai import GAITransceiver

TASKS = ("recon", "logits", "mask_logits")


def _mnist_model(**kw):
    torch.manual_seed(0)
    return GAITransceiver(in_channels=1, image_size=28, tasks=TASKS, hidden=8, **kw)


def test_task_weights_sum_to_one_per_task_and_depend_on_the_input():
    model = _mnist_model(blocks=4)
    x = torch.rand(5, 1, 28, 28)
    model(x, 10.0)
    w = model.transmitter.last_task_weights
    assert w is not None and w.shape == (5, 3, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, 3))
    assert (w > 0).all()
    assert (w[0] - w[1]).abs().max() > 1e-6  # input-dependent


def test_task_weights_differ_between_tasks_after_training_on_mnist():
    data = load_dataset("mnist", "train")
    x = data.images[:64]
    labels = data.labels[:64]
    masks = data.masks[:64]
    model = _mnist_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = 0.0
    for step in range(12):
        out = model(x, 10.0)
        loss = (
            F.mse_loss(out["recon"], x)
            + F.cross_entropy(out["logits"], labels)
            + F.binary_cross_entropy_with_logits(out["mask_logits"], masks)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if step == 0 else first
        last = float(loss.detach())
    assert last < first
    with torch.no_grad():
        model(x, 10.0)
    w = model.transmitter.last_task_weights
    assert w is not None
    torch.testing.assert_close(w.sum(-1), torch.ones(64, 3))
    mean = w.mean(0)  # [tasks, nodes]
    assert (mean[0] - mean[1]).abs().max() > 1e-3
    assert (mean[1] - mean[2]).abs().max() > 1e-3


def test_variants_run_and_differ_structurally():
    full = _mnist_model(iterations=2)
    gai_w = _mnist_model(graph_update=False)
    seq = _mnist_model(mode="sequential")
    names = {m: {n for n, _ in m.named_parameters()} for m in (full, gai_w, seq)}
    assert any(".attention.1." in n for n in names[full])
    assert not any(".attention." in n for n in names[gai_w])
    assert any(".relation." in n for n in names[gai_w])
    assert not any(".relation." in n or ".attention." in n for n in names[seq])
    assert len(seq.transmitter.transform) == 1 and len(full.transmitter.transform) == 4
    x = torch.rand(3, 1, 28, 28)
    for model in (full, gai_w, seq):
        out = model(x, 5.0)
        assert set(out) == set(TASKS)
        assert model.transmitter(x).shape == full.transmitter(x).shape
    assert seq.transmitter.last_task_weights is None


def test_graph_update_changes_the_nodes():
    model = _mnist_model()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        updated = model.transmitter.nodes(x)
        layers = model.transmitter.attention
        model.transmitter.attention = torch.nn.ModuleList()
        plain = model.transmitter.nodes(x)
        model.transmitter.attention = layers
    assert updated.shape == plain.shape == (2, 4, 8, 7, 7)
    assert (updated - plain).abs().max() > 1e-4


def test_budget_is_split_equally_between_tasks():
    model = GAITransceiver(image_size=32, bandwidth_ratio=1 / 6, tasks=TASKS)
    # k = 3072 / 6 = 512 complex uses, 512 // 3 = 170 per task
    assert model.channel_uses == 3 * 170
    z = model.transmitter(torch.rand(2, 3, 32, 32))
    segment_power = (z.reshape(2, 3, 340) ** 2).sum(-1) / 170  # each task: mean power 1
    torch.testing.assert_close(segment_power, torch.ones(2, 3))
