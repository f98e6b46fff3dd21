"""Domain shifts: the local domains a deployed transceiver adapts to (ZFDA).

Each domain is one fixed, deterministic transform applied to every image of a batch
(a "domain" is a camera that is tilted, or has a colour cast, not per-image noise):

* ``rotation``: rotate by ``strength`` degrees (counter-clockwise) about the image
  centre; pixels that come from outside the frame are black (fill 0, as torchvision
  does), so the corners carry new, sharp edges the clean data never had.
* ``perspective``: a homography that moves each image corner by up to ``strength``
  times the half-width, in directions drawn from ``seed``; fill 0 outside the frame.
* ``contrast``: ``m + (1 + strength) (x - m)`` per image, ``m`` the image mean over all
  pixels and channels, clipped to ``[0, 1]``; ``strength > 0`` raises contrast,
  ``-1 < strength < 0`` lowers it.
* ``hue``: rotate the chroma plane of YIQ colour space by ``strength`` degrees (a hue
  shift that keeps luma), clipped to ``[0, 1]``; needs 3-channel RGB images.

Every domain is the identity at strength 0 (up to float rounding of the resampling).
The defaults in :data:`DEFAULT_STRENGTH` make a model trained on clean data clearly
worse on every dataset (DeepJSCC, measured in ``docs/data.md``). Resampling blurs, and
on MNIST a blurred or shrunken digit is *easier* to reconstruct: rotation by 30° and a
0.3 perspective raised PSNR there, so the geometric defaults are 60° and 0.8. Geometric
domains (:data:`GEOMETRIC`) also apply to masks; photometric ones do not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from sdk.data.datasets import ImageDataset
from sdk.errors import SemedgeError

DOMAINS = ("rotation", "perspective", "contrast", "hue")
GEOMETRIC = ("rotation", "perspective")
DEFAULT_STRENGTH: dict[str, float] = {
    "rotation": 60.0,
    "perspective": 0.8,
    "contrast": 1.0,
    "hue": 120.0,
}

# RGB -> YIQ (NTSC); the inverse is computed so the round trip is exact to float precision.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)


class ShiftError(SemedgeError):
    """An unknown domain, or images a shift cannot apply to."""


def apply_shift(
    images: torch.Tensor, domain: str, strength: float | None = None, seed: int = 0
) -> torch.Tensor:
    """``images [B, C, H, W]`` in ``[0, 1]`` as seen in ``domain`` (a new tensor)."""
    if domain not in DOMAINS:
        raise ShiftError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if images.dim() != 4:
        raise ShiftError(f"images must be [B, C, H, W], got shape {list(images.shape)}")
    s = DEFAULT_STRENGTH[domain] if strength is None else float(strength)
    if domain == "rotation":
        return _warp(images, _rotation(s))
    if domain == "perspective":
        return _warp(images, _perspective(s, seed))
    if domain == "contrast":
        if s <= -1:
            raise ShiftError(f"contrast strength {s} must be > -1 (-1 would erase the image)")
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + (1 + s) * (images - mean)).clamp(0, 1)
    return _hue(images, s)


def shift_dataset(
    dataset: ImageDataset, domain: str, strength: float | None = None, seed: int = 0
) -> ImageDataset:
    """``dataset`` as seen in ``domain``, with its labels and (moved along) masks.

    A domain shift changes what the camera sees, not what is in the picture: labels stay,
    and geometric shifts move the masks with the pixels (re-binarised at 0.5), so
    adaptation and evaluation under a shift keep every task the model was trained on.
    """
    images = apply_shift(dataset.images, domain, strength, seed)
    masks = dataset.masks
    if masks is not None and domain in GEOMETRIC:
        masks = (apply_shift(masks, domain, strength, seed) > 0.5).float()
    return ImageDataset(f"{dataset.name}@{domain}", images, dataset.labels, masks)


def _rotation(degrees: float) -> torch.Tensor:
    """Homography (output -> input, normalised coords) of a rotation by ``degrees``."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # Output pixel p samples input R(-a) p, which shows the content rotated by +a.
    # Image y grows downwards, so counter-clockwise on screen flips the sign of s.
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _perspective(strength: float, seed: int) -> torch.Tensor:
    """Homography (output -> input) moving the corners by up to ``strength`` half-widths."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    moved = corners + strength * np.random.default_rng(seed).uniform(-1, 1, size=(4, 2))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(corners, moved, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows), np.array(rhs))
    return torch.tensor(np.append(h, 1.0).reshape(3, 3), dtype=torch.float64)


def _warp(images: torch.Tensor, homography: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` so output pixel ``p`` reads input ``homography @ p``."""
    b, c, h, w = images.shape
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    grid = F.affine_grid(identity[None], [1, c, h, w], align_corners=False)[0]  # [H, W, 2]
    points = torch.cat([grid, torch.ones(h, w, 1, dtype=torch.float64)], dim=-1) @ homography.T
    source = (points[..., :2] / points[..., 2:]).to(images.dtype)
    source = source[None].expand(b, h, w, 2)
    return F.grid_sample(images, source, mode="bilinear", padding_mode="zeros", align_corners=False)


def _hue(images: torch.Tensor, degrees: float) -> torch.Tensor:
    if images.shape[1] != 3:
        raise ShiftError(f"hue needs RGB images (3 channels), got {images.shape[1]} channel(s)")
    a = math.radians(degrees)
    rotate = torch.tensor(
        [[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]],
        dtype=torch.float64,
    )
    matrix = (torch.linalg.inv(_YIQ) @ rotate @ _YIQ).to(images.dtype)
    return torch.einsum("ij,bjhw->bihw", matrix, images).clamp(0, 1)
