"""The torch model op ``sdk.models.kem.topk_attention`` agrees with the numpy reference.

Selection is observed through the output: with ``v`` = identity rows (d = n), ``out[l]`` is
the softmax weight vector over the memory rows, so its support is the kept index set.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.reference import REFERENCES

torch = pytest.importorskip("torch")
kem = pytest.importorskip("sdk.models.kem", reason="sdk.models.kem has not landed yet")


@pytest.mark.parametrize("seed", range(20))
def test_torch_topk_attention_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 300)), int(rng.integers(1, 64))
    topk = int(rng.integers(1, n + 1))
    b = 1 + seed % 2  # one batch element and batches compute the scores differently
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((b, 3, d), (b, n, d), (b, n, d)))
    want, _ = REFERENCES["topk_memory"](q, k, v, topk)
    got = kem.topk_attention(*(torch.from_numpy(a) for a in (q, k, v)), topk).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_torch_selects_the_same_indices_ties_included(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(8, 64))
    q = rng.integers(-2, 3, (1, 4, n)).astype(np.float32)
    k = rng.integers(-1, 2, (1, n, n)).astype(np.float32)  # small integers: exact ties
    v = np.eye(n, dtype=np.float32)[None]
    topk = int(rng.integers(1, n))
    want, index = REFERENCES["topk_memory"](q, k, v, topk)
    got = kem.topk_attention(*(torch.from_numpy(a) for a in (q, k, v)), topk).numpy()
    for row in range(4):
        assert sorted(np.flatnonzero(got[0, row])) == sorted(index[0, row])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
