"""Numpy references of every custom kernel, in a registry keyed by op name.

The pattern of polygraphy's ``backend/pluginref``: the CUDA kernels, their CPU emulation,
the TensorRT plugin and the torch model code are all checked against these functions.
They favour clarity and exactness over speed (float64 accumulation, stable selection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sdk.errors import SemedgeError


class KernelInputError(SemedgeError):
    """Inputs a kernel (or its reference) cannot take: wrong shapes, dtypes or ``topk``."""


def topk_select(scores: np.ndarray, topk: int) -> np.ndarray:
    """Indices of the ``topk`` largest scores per row, largest first; ties → lower index first."""
    n = scores.shape[-1]
    position = np.broadcast_to(np.arange(n), scores.shape)
    order = np.lexsort((position, -scores.astype(np.float64)), axis=-1)
    return np.asarray(order[..., :topk])


def _check_topk(q: np.ndarray, k: np.ndarray, v: np.ndarray, topk: int) -> None:
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise KernelInputError("topk_memory takes q[B,L,d], k[B,n,d], v[B,n,d]; reshape the inputs")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise KernelInputError(
            f"topk_memory shapes q{q.shape} k{k.shape} v{v.shape} disagree; "
            "need q[B,L,d], k[B,n,d], v[B,n,d]"
        )
    if not 1 <= topk <= k.shape[1]:
        raise KernelInputError(f"topk={topk} must be in [1, n={k.shape[1]}]")


def topk_scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """q·kᵀ/√d as the kernels compute it: fp32 dot product times the fp32 scale 1/√d."""
    d = q.shape[-1]
    dots = np.einsum("bld,bnd->bln", q.astype(np.float64), k.astype(np.float64))
    return dots.astype(np.float32) * np.float32(1.0 / np.sqrt(np.float32(d)))


def topk_memory(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, topk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K memory attention → (out[B,L,d] float32, selected indices[B,L,topk]).

    Scores q·kᵀ/√d; keep the ``topk`` largest per query row (lower index wins ties);
    softmax over the kept scores; weighted sum of the kept rows of ``v``. fp16 inputs are
    widened to fp32 first (the kernels accumulate in fp32).
    """
    _check_topk(q, k, v, topk)
    scores = topk_scores(q, k)
    index = topk_select(scores, topk)
    kept = np.take_along_axis(scores, index, axis=-1).astype(np.float64)
    weights = np.exp(kept - kept.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    rows = np.take_along_axis(
        v.astype(np.float64)[:, None, :, :], index[..., None], axis=2
    )  # [B, L, topk, d]
    out = np.einsum("blk,blkd->bld", weights, rows)
    return out.astype(np.float32), index


def _check_delta(w: np.ndarray, idx: np.ndarray, other: np.ndarray) -> None:
    if w.ndim != 1 or idx.ndim != 1 or other.shape != idx.shape or other.dtype != w.dtype:
        raise KernelInputError(
            "sparse delta takes a flat buffer, 1-D indices and same-length values of its dtype"
        )


def sparse_delta_apply(
    w: np.ndarray, idx: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (new buffer, saved base values): ``W[idx] = base[idx] + values``.

    The sum is computed in fp32 and rounded once to the buffer dtype (for fp16 that equals
    numpy's fp16 addition). The saved base values are what restore writes back.
    """
    _check_delta(w, idx, values)
    saved = w[idx].copy()
    out = w.copy()
    out[idx] = (saved.astype(np.float32) + values.astype(np.float32)).astype(w.dtype)
    return out, saved


def sparse_delta_restore(w: np.ndarray, idx: np.ndarray, saved: np.ndarray) -> np.ndarray:
    """Return the buffer with ``W[idx] = base[idx]`` written back from ``saved`` (bit-exact)."""
    _check_delta(w, idx, saved)
    out = w.copy()
    out[idx] = saved
    return out


REFERENCES: dict[str, Callable[..., Any]] = {
    "topk_memory": topk_memory,
    "sparse_delta_apply": sparse_delta_apply,
    "sparse_delta_restore": sparse_delta_restore,
}
