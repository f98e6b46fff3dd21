"""The top-K memory kernel (run through the host emulation) against the numpy reference.

The emulation library is compiled with TOPK_BLOCK=32 and TOPK_SHARED_K=16, so small cases
cover n not a multiple of the block, several chunks, and both the shared-memory path
(topk <= 16) and the global-workspace fallback (topk > 16).
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.emulated import EmulatedKernels
from kernels.reference import REFERENCES, KernelInputError

TOLERANCE = {np.float32: 1e-6, np.float16: 1e-3}


def _check(emulated: EmulatedKernels, q: np.ndarray, k: np.ndarray, v: np.ndarray, topk: int):
    want, want_index = REFERENCES["topk_memory"](q, k, v, topk)
    got, index = emulated.topk_memory(q, k, v, topk)
    np.testing.assert_array_equal(np.sort(index, -1), np.sort(want_index, -1))
    assert got.dtype == q.dtype
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=TOLERANCE[q.dtype.type])


def _random(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float16)[seed % 3 == 0]
    b, L = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    n, d = int(rng.integers(1, 100)), int(rng.integers(1, 40))
    topk = int(rng.choice([1, n, int(rng.integers(1, n + 1))]))
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, L, d), (b, n, d), (b, n, d)))
    return q, k, v, topk


@pytest.mark.parametrize("seed", range(110))
def test_random_cases_match_reference(emulated: EmulatedKernels, seed: int) -> None:
    _check(emulated, *_random(seed))


@pytest.mark.parametrize("seed", range(10))
def test_ties_keep_the_lower_index(emulated: EmulatedKernels, seed: int) -> None:
    """Keys drawn from a few exact values: dot products are exact, so scores tie exactly."""
    rng = np.random.default_rng(1000 + seed)
    n, d = int(rng.integers(20, 90)), 8
    q = rng.integers(-2, 3, (1, 2, d)).astype(np.float32)
    k = rng.integers(-1, 2, (1, n, d)).astype(np.float32)
    v = rng.standard_normal((1, n, d)).astype(np.float32)
    topk = int(rng.integers(1, n))
    scores = REFERENCES["topk_memory"](q, k, v, n)[1]  # full order, to confirm there are ties
    assert len(np.unique(q[0] @ k[0].T)) < n
    assert scores.shape == (1, 2, n)
    _check(emulated, q, k, v, topk)


def test_all_scores_equal_keeps_the_first_topk(emulated: EmulatedKernels) -> None:
    q, k = np.ones((1, 1, 4), np.float32), np.ones((1, 70, 4), np.float32)
    v = np.arange(70 * 4, dtype=np.float32).reshape(1, 70, 4)
    out, index = emulated.topk_memory(q, k, v, 20)
    assert sorted(index.ravel()) == list(range(20))
    np.testing.assert_allclose(out[0, 0], v[0, :20].mean(0), rtol=1e-6)


def test_large_and_negative_scores(emulated: EmulatedKernels) -> None:
    rng = np.random.default_rng(7)
    q = (rng.standard_normal((1, 3, 16)) * 30).astype(np.float32)
    k = (rng.standard_normal((1, 200, 16)) * 30).astype(np.float32)
    v = rng.standard_normal((1, 200, 16)).astype(np.float32)
    for topk in (1, 5, 16, 17, 200):
        _check(emulated, q, k, v, topk)


def test_bad_topk_is_rejected(emulated: EmulatedKernels) -> None:
    q = np.zeros((1, 1, 4), np.float32)
    k = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(KernelInputError, match="topk=4"):
        emulated.topk_memory(q, k, k, 4)


@pytest.mark.parametrize("topk", [8, 300])
def test_n_65536(emulated: EmulatedKernels, topk: int) -> None:
    """The size the issue asks for, shared-memory path and fallback (small d keeps it fast)."""
    rng = np.random.default_rng(topk)
    q = rng.standard_normal((1, 1, 4)).astype(np.float32)
    k, v = (rng.standard_normal((1, 65536, 4)).astype(np.float32) for _ in range(2))
    _check(emulated, q, k, v, topk)
