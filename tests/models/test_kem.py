"""Top-K attention op, the KEM module and the simplex ETF."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels.cpu
from sdk.models.kem import (
    ETFProjection,
    KEMModule,
    KEMTransceiver,
    _score_scale,
    _top_keys,
    simplex_etf,
    topk_attention,
)


@pytest.fixture(params=["native", "torch.topk"])
def selection(request, monkeypatch):
    """Run the test with each top-K selection: the C++ one of kernels.cpu and torch.topk."""
    if request.param == "torch.topk":
        monkeypatch.setenv("SEMEDGE_NATIVE_TOPK", "0")
    elif kernels.cpu.topk_select() is None:
        pytest.skip("no C++ compiler: the CPU selection cannot be built")
    return request.param


def _dense(q, k, v):
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 16), rows=st.integers(1, 5), seed=st.integers(0, 99))
def test_topk_equals_dense_attention_when_k_is_n(n, d, rows, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, m, d, generator=g) for m in (rows, n, n))
    torch.testing.assert_close(topk_attention(q, k, v, n), _dense(q, k, v), rtol=1e-5, atol=1e-6)
    # topk larger than n is clamped to n
    torch.testing.assert_close(
        topk_attention(q, k, v, n + 7), _dense(q, k, v), rtol=1e-5, atol=1e-6
    )


def test_topk_keeps_the_k_best_keys_and_softmaxes_over_them():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(3, 4, 8, generator=g), torch.randn(3, 50, 8, generator=g)
    eye = torch.eye(50).expand(3, 50, 50).contiguous()  # output row = attention row
    att = topk_attention(q, k, eye, 6)
    assert ((att > 0).sum(-1) == 6).all()
    scores = q @ k.transpose(1, 2) / math.sqrt(8)
    best = scores.topk(6, dim=-1).indices
    assert torch.equal(att.gather(-1, best) > 0, torch.ones_like(best, dtype=torch.bool))
    want = torch.softmax(scores.gather(-1, best), -1)
    torch.testing.assert_close(att.gather(-1, best), want)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 4))


def test_ties_keep_the_lower_index(selection):
    # every key is identical: all scores tie, so the first K indices must be kept
    q = torch.randn(2, 3, 4)
    k = torch.ones(2, 40, 4)
    eye = torch.eye(40).expand(2, 40, 40).contiguous()
    att = topk_attention(q, k, eye, 5)
    assert torch.equal(att > 0, (torch.arange(40) < 5).expand(2, 3, 40))
    # a tie straddling the cut: index 2 beats two equal keys at 7 and 30, 7 wins the tie
    k = torch.zeros(1, 40, 1)
    k[0, [2, 7, 30], 0] = torch.tensor([3.0, 1.0, 1.0])
    att = topk_attention(torch.ones(1, 1, 1), k, torch.eye(40)[None], 2)
    assert (att[0, 0] > 0).nonzero().flatten().tolist() == [2, 7]


def test_kem_write_keeps_exactly_k_tokens_per_slot():
    torch.manual_seed(0)
    module = KEMModule(dim=16, slots=5, topk=7)
    x = torch.randn(3, 30, 16)
    att = module.write_attention(x)
    assert att.shape == (3, 5, 30)
    assert ((att != 0).sum(-1) == 7).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 5))
    assert module(x).shape == x.shape


def test_values_of_dropped_tokens_do_not_matter():
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(2, 4, 8, generator=g),
        torch.randn(2, 30, 8, generator=g),
        torch.randn(2, 30, 8, generator=g),
    )
    eye = torch.eye(30).expand(2, 30, 30).contiguous()
    kept = topk_attention(q, k, eye, 5) > 0  # [B, L, n]
    never_kept = ~kept.any(dim=1)  # tokens no query row keeps
    assert never_kept.sum() > 0
    v2 = v + 100.0 * never_kept[..., None]
    torch.testing.assert_close(topk_attention(q, k, v2, 5), topk_attention(q, k, v, 5))
    assert not torch.allclose(topk_attention(q, k, v2, 30), topk_attention(q, k, v, 30))


@pytest.mark.parametrize("dim,k", [(4, 5), (8, 8), (16, 4), (3, 2)])
def test_simplex_etf_gram_matrix(dim, k):
    etf = simplex_etf(dim, k)
    gram = etf.T @ etf
    assert etf.shape == (dim, k)
    torch.testing.assert_close(gram.diagonal(), torch.ones(k), atol=1e-6, rtol=0)
    off = gram[~torch.eye(k, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (k - 1)), atol=1e-6, rtol=0)
    torch.testing.assert_close(etf.sum(1), torch.zeros(dim), atol=1e-5, rtol=0)  # centred frame


def test_simplex_etf_needs_enough_dimensions():
    with pytest.raises(ValueError, match="dim >= k-1"):
        simplex_etf(3, 5)


def test_etf_is_a_fixed_buffer_not_a_parameter():
    model = KEMTransceiver(hidden=8, etf=True)
    proj = model.transmitter.project
    assert isinstance(proj, ETFProjection)
    assert "transmitter.project.etf" in model.state_dict()
    assert all("etf" not in name for name, _ in model.named_parameters())
    assert not proj.etf.requires_grad
    before = proj.etf.clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    out = model(torch.rand(2, 3, 32, 32), 10.0)
    out["recon"].mean().backward()
    opt.step()
    assert torch.equal(proj.etf, before)
    tokens = torch.randn(2, 5, 8)
    torch.testing.assert_close(proj(tokens), tokens @ simplex_etf(8, 8))


def test_skem_and_kem_differ_only_by_the_projection():
    kem, skem = KEMTransceiver(hidden=8), KEMTransceiver(hidden=8, etf=True)
    assert [n for n, _ in kem.named_parameters()] == [n for n, _ in skem.named_parameters()]
    assert set(skem.state_dict()) - set(kem.state_dict()) == {"transmitter.project.etf"}


def _kept_sets(q, k, topk):
    """Which keys each query keeps, read off the output with ``v`` = identity rows."""
    eye = torch.eye(k.shape[1]).expand(k.shape[0], -1, -1).contiguous()
    out = topk_attention(q, k, eye, topk)
    return [[set(torch.nonzero(row).flatten().tolist()) for row in batch] for batch in out]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(2, 60),
    topk=st.integers(1, 60),
    batch=st.sampled_from([1, 2]),  # one element and batches compute the dots differently
    seed=st.integers(0, 999),
)
def test_selection_matches_a_stable_descending_sort_under_heavy_ties(
    selection, n, topk, batch, seed
):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, 2, (batch, 3, 2), generator=g).float()
    k = torch.randint(-1, 2, (batch, n, 2), generator=g).float()  # few distinct scores: ties
    scores = q @ k.transpose(1, 2)
    kk = min(topk, n)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :kk]
    want = [[set(row.tolist()) for row in b] for b in order]
    assert _kept_sets(q, k, topk) == want


def test_a_nan_score_is_kept_as_torch_topk_and_onnx_topk_keep_it(selection):
    """NaN ranks first in torch.topk and ONNX TopK; a NaN row is not a tie."""
    _, index = _top_keys(torch.tensor([0.1, float("nan"), 0.5, 0.3, 0.2])[None, :, None], 2, 1.0)
    assert sorted(index.flatten().tolist()) == [1, 2]


def test_a_tie_at_the_cut_keeps_nan_and_the_lower_index(selection):
    dots = torch.tensor([0.5, float("nan"), 0.3, 0.5, 0.3])[None, :, None]
    _, index = _top_keys(dots, 4, 1.0)  # NaN, 0.5, 0.5, then one of the two 0.3s
    assert sorted(index.flatten().tolist()) == [0, 1, 2, 3]


def test_rows_are_selected_independently(selection):
    nan = float("nan")
    dots = torch.tensor([[1.0, 0.2, 0.2, 0.1], [nan, 2.0, nan, nan]]).T[None].contiguous()
    _, index = _top_keys(dots, 2, 1.0)
    assert sorted(index[0, 0].tolist()) == [0, 1]  # tie at the cut: the lower index
    assert sorted(index[0, 1].tolist()) in ([0, 2], [0, 3], [2, 3])  # NaN K-th: any NaNs


def test_dots_that_round_together_once_scaled_are_a_tie(selection):
    """Selecting on unscaled dots must still honour ties that only the scaled scores have."""
    scale = _score_scale(2)
    start = torch.tensor(1.5)
    bigger = next(
        a
        for a in (start + i * 2.0**-23 for i in range(1, 200))
        if float(a * scale) == float(torch.nextafter(a, start) * scale)
    )
    smaller = torch.nextafter(bigger, start)
    q = torch.tensor([[[1.0, 0.0]]])  # d = 2; the dots are exactly k[:, 0]
    k = torch.tensor([[[smaller, 0.0], [bigger, 0.0], [0.0, 0.0]]])
    assert bigger > smaller
    assert _kept_sets(q, k, 1) == [[{0}]]  # equal scores: the lower index, not the bigger dot
