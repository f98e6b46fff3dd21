"""The torch model op ``sdk.models.kem.topk_attention`` agrees with the numpy reference."""

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
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, d), (2, n, d), (2, n, d)))
    want, _ = REFERENCES["topk_memory"](q, k, v, topk)
    got = kem.topk_attention(*(torch.from_numpy(a) for a in (q, k, v)), topk).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_torch_ties_keep_the_lower_index() -> None:
    q = torch.ones(1, 1, 4)
    k = torch.ones(1, 50, 4)
    v = torch.arange(200, dtype=torch.float32).reshape(1, 50, 4)
    want, _ = REFERENCES["topk_memory"](q.numpy(), k.numpy(), v.numpy(), 7)
    np.testing.assert_allclose(kem.topk_attention(q, k, v, 7).numpy(), want, atol=1e-6)
