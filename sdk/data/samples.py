"""Model inputs from one place: an offline dataset or a user's folder of images.

``source`` names an offline dataset (``mnist``, ``patches``, ``digits``), or a directory
of a user's images: ``.png``/``.jpg``/``.jpeg``/``.bmp`` files of any size, or ``.npy``
arrays (``[C, H, W]`` or ``[N, C, H, W]``, float in ``[0, 1]``, any ``H x W``). Every
image is converted to the model's channel count (grey or RGB), centre-cropped to the
model's aspect ratio and then resized to its ``H x W`` (bilinear), so frames of mixed
sizes and shapes are fine and nothing is stretched. A folder with ``train/``, ``val/``
or ``test/`` subfolders gives that split from the subfolder; otherwise every split is
the whole folder. Files are read in sorted name order so the same folder always gives
the same samples. ``None`` picks the default dataset of the model's input shape.

:func:`sample_set` is the one loader behind ``train``, ``eval``, ``adapt`` and
calibration.
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
    try:
        names = list(folder.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list {folder} ({exc.strerror}); check its permissions") from None
    files = sorted(p for p in names if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy"))
    if not files:
        raise DataError(
            f"{folder} holds no {', '.join(IMAGE_SUFFIXES)} or .npy files; put images "
            "there or pass a dataset name (mnist, patches, digits)"
        )
    return files


def _fit(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[C, h, w]`` centre-cropped to the ``height : width`` aspect, then resized to it."""
    from PIL import Image

    h, w = arr.shape[1:]
    crop_h, crop_w = min(h, round(w * height / width)), min(w, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    arr = arr[:, top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (height, width):
        return np.ascontiguousarray(arr, dtype=np.float32)
    planes = [
        np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height)))
        for plane in arr
    ]
    return np.clip(np.stack(planes), 0.0, 1.0).astype(np.float32)


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove it from the folder") from None
    arr = arr[None] / 255.0 if channels == 1 else arr.transpose(2, 0, 1) / 255.0
    return _fit(arr, height, width)


def _read_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({exc}); save it with numpy.save") from None
    arr = arr[None] if arr.ndim == len(shape) else arr
    if arr.ndim != len(shape) + 1 or arr.shape[1] != shape[0] or 0 in arr.shape:
        raise DataError(
            f"{path} holds an array of shape {list(arr.shape)} but the model takes "
            f"{shape[0]} channel(s) as [C, H, W] or [N, C, H, W]; reshape it or use image files"
        )
    return np.stack([_fit(a.astype(np.float32), shape[1], shape[2]) for a in arr])


def load_folder(folder: str | Path, shape: tuple[int, ...], count: int | None = None) -> np.ndarray:
    """The first ``count`` samples of a folder of images or ``.npy`` files, ``[N, *shape]``."""
    folder = Path(folder)
    if len(shape) != 3:
        raise DataError(f"a folder gives images; this model takes input of shape {list(shape)}")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass a folder of images or a dataset name")
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


def names_folder(source: str | None) -> bool:
    """Whether ``source`` names a folder (existing or not) rather than a dataset."""
    return source is not None and (
        Path(source).is_dir() or "/" in source or bool(Path(source).suffix)
    )


def sample_set(
    shape: tuple[int, ...] | None, source: str | None, split: str = "train"
) -> ImageDataset:
    """Images (with labels where the dataset has them) for a model input ``shape``
    (``None``: a named dataset at its own shape, e.g. to size a new model)."""
    import torch

    if shape is None and source is not None and Path(source).is_dir():
        raise DataError(f"{source} is a folder; say the image shape to read it at")
    if shape is not None and source is not None and Path(source).is_dir():
        folder = Path(source) / split if (Path(source) / split).is_dir() else Path(source)
        return ImageDataset(str(folder), torch.from_numpy(load_folder(folder, shape)))
    if names_folder(source):
        raise DataError(f"{source} is not a directory; pass a folder of images or a dataset name")
    name = source or DATASET_FOR_SHAPE.get(tuple(shape or ()))
    if name is None:
        raise DataError(
            f"no default dataset for input shape {list(shape or ())}; pass --data "
            f"(one of {sorted(set(DATASET_FOR_SHAPE.values()))} or a folder)"
        )
    dataset = load_dataset(name, split)
    if shape is not None and tuple(dataset.image_shape) != tuple(shape):
        raise DataError(
            f"the model expects {'x'.join(map(str, shape))} images but dataset {name} has "
            f"{'x'.join(map(str, dataset.image_shape))}; choose a matching --data"
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
