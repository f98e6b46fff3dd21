"""Model inputs for calibration and comparison: real images from a dataset or a folder.

``source`` names an offline dataset (``mnist``, ``patches``, ``digits``), a directory
of a user's images (``.png``/``.jpg``/``.jpeg``/``.bmp``, converted to the model's
channel count and resized to its ``H x W``) or of ``.npy`` arrays (``[C, H, W]`` or
``[N, C, H, W]``, float in ``[0, 1]``, which must already have the model's shape), or
``None`` for the default dataset of the model's input shape. Folder files are read in
sorted name order so the same folder always gives the same samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdk.data.datasets import DataError, ImageDataset, load_dataset

DATASET_FOR_SHAPE: dict[tuple[int, ...], str] = {
    (3, 32, 32): "patches",
    (1, 28, 28): "mnist",
    (1, 16, 16): "digits",
}
"""Default dataset per model input shape (``--data``/``--calib-data`` overrides)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy"))
    if not files:
        raise DataError(
            f"{folder} holds no {', '.join(IMAGE_SUFFIXES)} or .npy files; put calibration "
            "images there or pass a dataset name (mnist, patches, digits)"
        )
    return files


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as img:
            fitted = img.convert("L" if channels == 1 else "RGB").resize((width, height))
            arr = np.asarray(fitted, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove it from the folder") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({exc}); save it with numpy.save") from None
    arr = arr[None] if arr.ndim == len(shape) else arr
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != tuple(shape):
        raise DataError(
            f"{path} holds an array of shape {list(arr.shape)} but the model takes "
            f"{list(shape)} (or [N, *{list(shape)}]); reshape it or use image files"
        )
    return arr.astype(np.float32)


def load_folder(folder: str | Path, shape: tuple[int, ...], count: int | None = None) -> np.ndarray:
    """The first ``count`` samples of a folder of images or ``.npy`` files, ``[N, *shape]``."""
    folder = Path(folder)
    if len(shape) != 3:
        raise DataError(f"a folder gives images; this model takes input of shape {list(shape)}")
    chunks, total = [], 0
    for path in _folder_files(folder):
        if path.suffix.lower() == ".npy":
            chunk = _read_npy(path, shape)
        else:
            chunk = _read_image(path, shape)[None]
        chunks.append(chunk)
        total += len(chunk)
        if count is not None and total >= count:
            break
    return np.concatenate(chunks)[:count]


def sample_set(shape: tuple[int, ...], source: str | None, split: str = "train") -> ImageDataset:
    """Images (with labels where the dataset has them) for a model input ``shape``."""
    import torch

    if source is not None and Path(source).is_dir():
        return ImageDataset(f"{source}", torch.from_numpy(load_folder(source, shape)))
    if source is not None and ("/" in source or Path(source).suffix):
        raise DataError(f"{source} is not a directory; pass a folder of images or a dataset name")
    name = source or DATASET_FOR_SHAPE.get(tuple(shape))
    if name is None:
        raise DataError(
            f"no default dataset for input shape {list(shape)}; pass --data "
            f"(one of {sorted(set(DATASET_FOR_SHAPE.values()))} or a folder)"
        )
    dataset = load_dataset(name, split)
    if tuple(dataset.image_shape) != tuple(shape):
        raise DataError(
            f"dataset {name} has images {list(dataset.image_shape)} but the model takes "
            f"{list(shape)}; choose a matching --data"
        )
    return dataset


def sample_images(
    shape: tuple[int, ...], source: str | None, count: int, split: str = "train"
) -> np.ndarray:
    """``count`` real images ``[N, *shape]`` float32 (spread over the set) for a model input."""
    dataset = sample_set(shape, source, split)
    if len(dataset) == 0:
        raise DataError(f"{source} gives no samples; add images to it")
    return dataset.spread(min(count, len(dataset))).images.numpy().astype(np.float32)
