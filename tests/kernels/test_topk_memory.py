"""The top-K memory kernel (run through the host emulation) against the numpy reference.

The emulation library is compiled with TOPK_BLOCK=32, TOPK_SHARED_K=16 and
TOPK_CANDIDATES=16, so small cases cover n not a multiple of the block, several chunks, the
shared-memory kept list (topk <= 16) and the global-workspace fallback (topk > 16), and
selection on shared candidates as well as on the score row in global memory. The traffic
test uses the GPU's sizes (128 threads, 256, 2048) in the byte-counting build.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.build import build_emulation
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


@pytest.mark.parametrize("n", [20, 40])  # 20: candidates in shared memory; 40: too many
def test_both_selection_paths_keep_the_lowest_index_ties(emulated: EmulatedKernels, n: int):
    """Every score equal: the threshold's digit holds n candidates (capacity 16)."""
    q, k = np.ones((1, 2, 4), np.float32), np.ones((1, n, 4), np.float32)
    v = np.random.default_rng(n).standard_normal((1, n, 4)).astype(np.float32)
    for topk in (1, 7, n):
        out, index = emulated.topk_memory(q, k, v, topk)
        assert (np.sort(index, -1) == np.arange(topk)).all()
        np.testing.assert_allclose(out[0, 0], v[0, :topk].mean(0), rtol=1e-5, atol=1e-6)


def test_more_than_64_query_rows_is_a_one_line_error(emulated: EmulatedKernels) -> None:
    q, k = np.zeros((1, 65, 4), np.float32), np.zeros((1, 8, 4), np.float32)
    with pytest.raises(KernelInputError, match="at most 64 query rows"):
        emulated.topk_memory(q, k, k, 2)


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory) -> EmulatedKernels:
    """The GPU's compile-time sizes, with every global load and store counted."""
    folder = tmp_path_factory.mktemp("counting")
    return EmulatedKernels(build_emulation(folder, block=128, shared_k=256, count_bytes=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_global_traffic_is_within_twice_the_ideal(counting: EmulatedKernels, dtype) -> None:
    """L = 16, d = 128, K = 64 (the Orin roofline's case) at n = 1024; tools/bench_topk.py
    --traffic counts n = 1k, 4k and 16k the same way (docs/kernels.md)."""
    L, d, topk, n = 16, 128, 64, 1024
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, L, d), (1, n, d), (1, n, d)))
    _check(counting, q, k, v, topk)
    loaded, stored = counting.traffic()
    size = np.dtype(dtype).itemsize
    ideal = size * (n * d + L * topk * d + 2 * L * d)  # k once, kept v rows, q, out
    assert stored >= size * L * d + 4 * L * n  # out and the scores are written
    assert loaded >= size * n * d  # every key is read
    assert loaded + stored <= 2 * ideal


def test_traffic_needs_the_counting_build(emulated: EmulatedKernels) -> None:
    with pytest.raises(KernelInputError, match="count_bytes=True"):
        emulated.traffic()
