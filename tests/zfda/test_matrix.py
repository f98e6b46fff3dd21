"""ZFDA on every model family x dataset x side x domain, on a tiny budget.

Each case builds the model as ``semedge train`` would for the dataset (classification
head where there are labels), adapts it on the shifted data with the training losses and
checks the delta: it is for this base and side, the base stays bit-identical, and
switching it on changes every output that a trained task supervises on the adapted side.
"""

from __future__ import annotations

import math

import pytest
import torch

from sdk.adapt.zfda import ZFDAConfig, adapt_zfda, adaptable_weights
from sdk.data import load_dataset
from sdk.data.shifts import DOMAINS, shift_dataset
from sdk.delta import TorchDeltas
from sdk.fingerprint import model_fingerprint
from sdk.train import build_for_data

ALL_TASKS = ["recon", "logits", "mask_logits"]
FAMILIES = {  # tiny sizes: a case takes a fraction of a second
    "deepjscc": ("DeepJSCC", {"hidden": 4}),
    "gai": ("GAITransceiver", {"hidden": 4, "blocks": 2, "relation_hidden": 8}),
    "kem": ("KEMTransceiver", {"hidden": 8, "slots": 2, "topk": 4}),
    "skem": ("KEMTransceiver", {"hidden": 8, "slots": 2, "topk": 4, "etf": True}),
    "vq": ("VQTransceiver", {"hidden": 4, "latent_dim": 4, "codebook_size": 8}),
}
MULTI_TASK = ("gai", "kem", "skem")
CHANNELS = {"mnist": 1, "digits": 1, "patches": 3}
CASES = [
    (family, data, side, domain)
    for family in FAMILIES
    for data in CHANNELS
    for side in ("encoder", "decoder", "both")
    for domain in DOMAINS
    if domain != "hue" or CHANNELS[data] == 3  # hue needs colour
]


@pytest.fixture(scope="module")
def datasets():
    return {name: load_dataset(name, "val").spread(16) for name in CHANNELS}


def build(family: str, data) -> torch.nn.Module:
    name, args = FAMILIES[family]
    if family in MULTI_TASK and data.labels is not None:
        args = {**args, "tasks": ALL_TASKS}  # every head the family has
    torch.manual_seed(0)
    return build_for_data(name, args, data).eval()


def outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        return model(images, 10.0)


@pytest.mark.parametrize(("family", "data", "side", "domain"), CASES)
def test_zfda_adapts_every_family_dataset_side_and_domain(datasets, family, data, side, domain):
    shifted = shift_dataset(datasets[data], domain)
    model = build(family, shifted)
    fingerprint = model_fingerprint(model)
    before = outputs(model, shifted.images)
    config = ZFDAConfig(
        sparsity=0.1,
        side=side,
        epochs=1,
        batch_size=8,
        lr_values=1e-2,
        score_init_batches=1,
        progress=False,
    )
    history: list[dict[str, float]] = []
    delta = adapt_zfda(model, shifted, domain, config, history)

    assert model_fingerprint(model) == fingerprint
    assert delta.base_fingerprint == fingerprint and delta.domain == domain
    assert math.isfinite(history[-1]["loss"])
    on_side = adaptable_weights(model, side)
    assert delta.entries and set(delta.entries) <= set(on_side)
    params = dict(model.named_parameters())
    assert 0 < delta.nnz <= round(0.1 * sum(params[n].numel() for n in on_side))
    deltas = TorchDeltas(model)
    deltas.activate(deltas.load(delta))
    adapted = outputs(model, shifted.images)
    deltas.deactivate()
    restored = outputs(model, shifted.images)
    assert all(torch.equal(restored[k], before[k]) for k in before)
    if side != "encoder":  # an encoder change may vanish in VQ's quantiser, not a head's
        supervised = set(ALL_TASKS) if shifted.labels is not None else {"recon"}
        for task in supervised & set(before):
            assert not torch.equal(adapted[task], before[task]), f"{task} was not adapted"


@pytest.mark.parametrize("data", ["mnist", "digits"])
def test_a_shift_keeps_labels_and_moves_masks(datasets, data):
    clean = datasets[data]
    turned = shift_dataset(clean, "rotation", 90.0)
    assert torch.equal(turned.labels, clean.labels)
    assert torch.equal(turned.masks, (torch.rot90(clean.masks, 1, (2, 3)) > 0.5).float())
    brighter = shift_dataset(clean, "contrast")
    assert torch.equal(brighter.masks, clean.masks)  # photometric: the digit stays put
    assert not torch.equal(brighter.images, clean.images)


def test_unlabelled_data_leaves_an_unreachable_head_alone(datasets):
    """No labels: nothing can train the classifier, so it gets no budget (and no crash)."""
    digits = datasets["digits"]
    model = build("deepjscc", digits)  # has a classification head
    images_only = shift_dataset(digits, "rotation").subset(range(16))
    images_only.labels = images_only.masks = None
    config = ZFDAConfig(sparsity=0.1, epochs=1, batch_size=8, score_init_batches=1, progress=False)
    delta = adapt_zfda(model, images_only, "rotation", config)
    assert delta.entries and not any(n.startswith("receiver.classifier") for n in delta.entries)
    labelled = adapt_zfda(model, shift_dataset(digits, "rotation"), "rotation", config)
    assert "receiver.classifier.2.weight" in labelled.entries
