"""GAI + (s)KEM: the memory at K = n is dense memory attention; task tokens keep their place."""

from __future__ import annotations

import pytest
import torch

from sdk.models.gai import GAITransceiver
from sdk.models.kem import KEMModule, dense_attention


@pytest.mark.parametrize("n", [5, 49, 147])
def test_kem_write_with_k_equal_to_n_is_dense_memory_attention(n):
    torch.manual_seed(n)
    kem = KEMModule(8, slots=4, topk=n)
    x = torch.randn(3, n, 8)
    memory, q, k = kem._write_inputs(x)
    dense = memory + kem.write_out(dense_attention(q, k, kem.write_v(kem.norm_tok(x))))
    torch.testing.assert_close(kem.write(x), dense, rtol=1e-5, atol=1e-6)
    # fewer kept keys is a different (sparser) read
    kem.topk = max(1, n // 4)
    assert (kem.write(x) - dense).abs().max() > 1e-4


def _gai(**kw):
    torch.manual_seed(0)
    tasks = ("recon", "logits", "mask_logits")
    return GAITransceiver(in_channels=1, image_size=28, tasks=tasks, hidden=8, **kw)


def test_kem_shares_across_task_tokens_and_keeps_each_task_in_its_slot():
    model = _gai(kem_slots=4, kem_topk=16)
    enc = model.transmitter
    feats = [torch.randn(2, 8, 7, 7) for _ in range(3)]
    kem, enc.kem = enc.kem, torch.nn.Identity()
    same = enc.share(feats)  # identity memory: every task gets its own map back
    assert all(torch.equal(a, b) for a, b in zip(same, feats, strict=True))
    enc.kem = kem
    with torch.no_grad():
        shared = enc.share(feats)
        bumped = enc.share([3 * feats[0] + torch.randn(2, 8, 7, 7), feats[1], feats[2]])
    assert (bumped[1] - shared[1]).abs().max() > 1e-5  # task 0's tokens reach task 1
    out = model(torch.rand(2, 1, 28, 28), 5.0)
    assert set(out) == {"recon", "logits", "mask_logits"}


def test_skem_adds_a_fixed_etf_buffer_and_no_parameters():
    kem, skem = _gai(kem_slots=4), _gai(kem_slots=4, kem_etf=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(kem) == count(skem)
    assert any(n.endswith("etf") for n, _ in skem.named_buffers())
    assert not any(n.endswith("etf") for n, _ in kem.named_buffers())


@pytest.mark.parametrize(
    "kw", [{"kem_slots": -1}, {"kem_slots": 2, "kem_topk": 0}, {"mode": "other"}, {"blocks": 1}]
)
def test_bad_gai_arguments_are_refused(kw):
    with pytest.raises(ValueError):
        _gai(**kw)


def test_attention_of_every_iteration_is_kept_for_inspection():
    model = _gai(iterations=3)
    model(torch.rand(4, 1, 28, 28), 5.0)
    att = model.transmitter.last_attention
    assert len(att) == 3 and all(a.shape == (4, 4, 4) for a in att)
    torch.testing.assert_close(att[0].sum(-1), torch.ones(4, 4))
