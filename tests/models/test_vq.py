"""VQ: straight-through training signal, bits, BSC, SNR -> flip probability."""

from __future__ import annotations

import math

import pytest
import torch

from sdk.errors import ChannelError
from sdk.models.vq import (
    VectorQuantizer,
    VQTransceiver,
    bits_to_indices,
    bsc_flip_prob,
    indices_to_bits,
)


def test_straight_through_gradient_reaches_the_encoder_and_commitment_is_positive():
    torch.manual_seed(0)
    model = VQTransceiver(hidden=8)
    out = model(torch.rand(4, 3, 32, 32), 10.0)
    loss = out["recon"].mean() + model.aux_loss()
    assert float(model.aux_loss().detach()) > 0
    loss.backward()
    first = model.transmitter.features[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert (
        model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0
    )


def test_quantizer_snaps_to_the_nearest_codeword():
    vq = VectorQuantizer(8, 3)
    z = torch.randn(2, 3, 4, 4)
    zq, idx = vq(z)
    flat = z.flatten(2).transpose(1, 2)
    want = torch.cdist(flat, vq.codebook[None].expand(2, -1, -1)).argmin(-1)
    assert torch.equal(idx, want)
    torch.testing.assert_close(zq.flatten(2).transpose(1, 2), vq.codebook[idx])
    assert vq.loss > 0


@pytest.mark.parametrize("bits", [1, 3, 6, 10])
def test_bits_round_trip_to_indices(bits):
    idx = torch.randint(0, 2**bits, (5, 17))
    b = indices_to_bits(idx, bits)
    assert b.shape == (5, 17 * bits) and set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(bits_to_indices(b, bits), idx)
    assert indices_to_bits(torch.tensor([[5]]), 4).tolist() == [[0.0, 1.0, 0.0, 1.0]]  # MSB first


def test_bsc_without_flips_decodes_like_the_noiseless_link():
    torch.manual_seed(0)
    model = VQTransceiver(hidden=8, num_classes=10).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        direct = model.receiver(model.transmitter(x))
        via_bsc = model(x, flip_prob=0.0)
        noisy = model(x, flip_prob=0.3)
    for key in ("recon", "logits"):
        assert torch.equal(direct[key], via_bsc[key])
    assert not torch.equal(direct["recon"], noisy["recon"])


def test_snr_maps_to_bpsk_bit_error_rate():
    assert bsc_flip_prob(0.0) == pytest.approx(0.0786496, rel=1e-5)  # Q(sqrt(2))
    assert bsc_flip_prob(9.6) == pytest.approx(1.0e-5, rel=0.1)
    per_sample = bsc_flip_prob(torch.tensor([0.0, 9.6]))
    assert isinstance(per_sample, torch.Tensor)
    assert per_sample[0].item() == pytest.approx(0.0786496, rel=1e-5)


def test_measured_flip_rate_follows_the_snr():
    torch.manual_seed(0)
    model = VQTransceiver(hidden=4)
    bits = model.transmitter(torch.rand(64, 3, 32, 32))
    from sdk.models.vq import flip_bits

    flipped = flip_bits(bits.repeat(20, 1), bsc_flip_prob(0.0))
    rate = float((flipped != bits.repeat(20, 1)).float().mean())
    assert rate == pytest.approx(0.0786496, abs=0.003)
    per = flip_bits(bits[:2].repeat(1, 500), torch.tensor([0.0, 0.5]))
    assert torch.equal(per[0], bits[0].repeat(500))
    assert 0.45 < float((per[1] != bits[1].repeat(500)).float().mean()) < 0.55
    assert not math.isnan(rate)


def test_bad_channel_parameters_are_one_line_errors():
    model = VQTransceiver(hidden=4)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ChannelError, match="flip probability"):
        model(x, flip_prob=0.7)
    with pytest.raises(ChannelError, match="dB"):
        model(x, 1000.0)
    with pytest.raises(ValueError, match="power of two"):
        VQTransceiver(codebook_size=48)
