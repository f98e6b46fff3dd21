import math

import pytest
import torch

from sdk.errors import ChannelError
from sdk.models.channels import (
    AWGN,
    BSC,
    Rayleigh,
    bandwidth_ratio,
    bandwidth_symbols,
    check_snr,
    normalize_power,
)


def _complex_power(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(z.shape[0], -1, 2).pow(2).sum(-1).mean(-1)


def test_normalize_power_gives_unit_power_per_complex_symbol():
    z = torch.randn(16, 256) * 7 + 3
    p = _complex_power(normalize_power(z))
    assert torch.allclose(p, torch.ones(16), atol=1e-5)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_awgn_measured_snr_matches_target(snr_db):
    z = normalize_power(torch.randn(64, 2 * 16384, dtype=torch.float64))  # 1e6 complex symbols
    noise = AWGN()(z, snr_db) - z
    sigma2 = _complex_power(noise).mean().item()
    measured = 10 * math.log10(1.0 / sigma2)
    assert abs(measured - snr_db) < 0.1
    # each real component carries half the complex variance
    assert abs(noise.var().item() - sigma2 / 2) / (sigma2 / 2) < 0.01


def test_awgn_per_sample_snr():
    z = normalize_power(torch.randn(2, 2 * 200000, dtype=torch.float64))
    noise = AWGN()(z, torch.tensor([0.0, 20.0], dtype=torch.float64)) - z
    p = _complex_power(noise)
    assert abs(10 * math.log10(1 / p[0].item())) < 0.1
    assert abs(10 * math.log10(1 / p[1].item()) - 20) < 0.1


def test_per_sample_snr_wrong_shape_is_rejected():
    with pytest.raises(ChannelError, match="shape"):
        AWGN()(torch.zeros(4, 8), torch.zeros(3))


def test_rayleigh_gain_has_unit_mean_power_and_mmse_recovers_signal():
    ch = Rayleigh(equalizer=None)
    z = normalize_power(torch.randn(200000, 2, dtype=torch.float64))
    ch(z, 60.0)
    assert ch.last_h is not None
    h2 = ch.last_h.pow(2).sum(-1).flatten()
    assert abs(h2.mean().item() - 1.0) < 0.02
    # with perfect CSI at high SNR, ZF equalisation returns the transmitted symbols
    zf = Rayleigh(equalizer="zf")
    z = normalize_power(torch.randn(8, 64, dtype=torch.float64))
    assert torch.allclose(zf(z, 60.0), z, atol=0.05)


def test_bsc_flip_rate_and_gradient():
    bits = torch.randint(0, 2, (1_000_000,)).double().requires_grad_()
    out = BSC(0.1)(bits)
    rate = (out != bits).double().mean().item()
    assert abs(rate - 0.1) < 0.002
    out.sum().backward()
    assert set(bits.grad.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ChannelError):
        BSC(0.7)


def test_bandwidth_helpers():
    assert bandwidth_symbols(3 * 32 * 32, 1 / 6) == 512
    assert bandwidth_ratio(512, 3072) == pytest.approx(1 / 6)
    with pytest.raises(ChannelError):
        bandwidth_symbols(100, 0)


@pytest.mark.parametrize("bad", [100.0, -50.0, float("nan")])
def test_snr_out_of_range(bad):
    with pytest.raises(ChannelError, match="dB"):
        check_snr(bad)
