"""PSNR / SSIM / IoU against hand-computed cases and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdk.data import load_dataset
from sdk.evaluate import (
    MeanColour,
    Uncoded,
    format_table,
    grid_figure,
    iou,
    plot,
    psnr,
    ssim,
    sweep_figure,
)


def test_psnr_of_known_mse():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert float(psnr(a, b)) == pytest.approx(20.0, abs=1e-4)
    b[1] = 0.01  # MSE 1e-4 -> 40 dB; the mean is over per-image PSNRs
    assert psnr(a, b, reduce=False).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    assert float(psnr(a, b)) == pytest.approx(30.0, abs=1e-3)
    assert float(psnr(b * 255, a, data_range=255.0)) == pytest.approx(30.0, abs=1e-3)
    assert float(psnr(a, a)) == pytest.approx(100.0)  # MSE floor, not inf


def test_ssim_identity_constant_images_and_skimage_agreement():
    x = load_dataset("patches", "test").images[:4]
    assert torch.allclose(ssim(x, x, reduce=False), torch.ones(4))
    # Constant images: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.6, 0.01**2
    flat_a, flat_b = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(flat_a, flat_b)) == pytest.approx(expected, rel=1e-5)
    from skimage.metrics import structural_similarity

    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    for i in range(4):
        ref = structural_similarity(
            x[i].numpy().astype(np.float64),
            noisy[i].numpy().astype(np.float64),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ssim(x[i : i + 1], noisy[i : i + 1])) == pytest.approx(ref, abs=1e-5)


def test_iou_hand_cases():
    logits = torch.full((2, 1, 2, 2), -1.0)
    logits[0, 0, 0, :] = 1.0  # predicts the top row
    masks = torch.zeros(2, 1, 2, 2)
    masks[0, 0, :, 0] = 1.0  # target is the left column: 1 shared of 3 pixels
    assert iou(logits, masks, reduce=False).tolist() == pytest.approx([1 / 3, 1.0])


def test_reference_transmitters():
    x = load_dataset("patches", "test").images[:16]
    mean = MeanColour()(x, 10.0)["recon"]
    assert torch.allclose(mean[:, :, 5, 7], x.mean(dim=(2, 3)))
    uncoded = Uncoded(channel_uses=512)
    clean = uncoded(x, 60.0)["recon"]  # 60 dB: practically noise-free
    noisy = uncoded(x, 0.0)["recon"]
    assert float(psnr(clean, x)) > float(psnr(noisy, x)) + 10
    assert float(psnr(clean, x)) > float(psnr(mean, x))


def test_table_and_plot(tmp_path):
    rows = [
        {"model": "DeepJSCC", "snr_db": s, "psnr": 20 + s / 2, "ssim": 0.5, "accuracy": 0.9}
        for s in (0.0, 10.0)
    ] + [{"model": "mean colour", "snr_db": 10.0, "psnr": 15.0, "ssim": 0.3}]
    table = format_table(rows).splitlines()
    assert table[0].split()[:3] == ["model", "SNR", "dB"] and len(table) == 4
    assert "25.00" in table[2] and "90.0" in table[2] and table[3].rstrip().endswith("-")
    png = plot(rows, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _panels(fig) -> dict[str, object]:
    return {ax.get_ylabel(): ax for ax in fig.axes}


def test_bounded_metrics_span_their_whole_range():
    """A 0.4-point accuracy difference must not fill the panel: 0-100 %, as the table."""
    rows = [
        {"model": "m", "snr_db": s, "psnr": 20.0 + s / 1000, "ssim": 0.81, "accuracy": a}
        for s, a in ((0.0, 0.971), (10.0, 0.975))
    ]
    panels = _panels(sweep_figure(rows))
    assert panels["accuracy (%)"].get_ylim() == (0.0, 100.0)
    assert [round(y, 1) for y in panels["accuracy (%)"].lines[0].get_ydata()] == [97.1, 97.5]
    assert panels["SSIM"].get_ylim() == (0.0, 1.0)
    low, high = panels["PSNR (dB)"].get_ylim()  # hundredths of a dB do not fill it either
    assert high - low >= 2.0 and low < 20.0 < high
    spread = [{"model": "m", "snr_db": s, "psnr": p} for s, p in ((0.0, 10.0), (10.0, 30.0))]
    low, high = _panels(sweep_figure(spread))["PSNR (dB)"].get_ylim()
    assert low < 10.0 and 30.0 < high < 40.0  # a real spread is auto-scaled


def test_base_and_delta_curves_are_told_apart():
    rows = [
        {"model": name, "snr_db": s, "psnr": 20.0 + s / 4, "domain": "hue"}
        for name in ("DeepJSCC base", "DeepJSCC + hue delta")
        for s in (0.0, 10.0)
    ]
    fig = sweep_figure(rows, "run")
    ax = _panels(fig)["PSNR (dB)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [r["model"] for r in rows[::2]]
    base, delta = ax.lines
    assert (base.get_linestyle(), base.get_marker()) != (delta.get_linestyle(), delta.get_marker())
    assert fig._suptitle.get_text() == "run (domain: hue)"


def test_grid_captions_each_output_with_its_psnr():
    sent = torch.rand(3, 1, 8, 8)
    received = (sent + 0.1 * torch.randn_like(sent)).clamp(0, 1)
    fig = grid_figure({"sent": sent, "output": received}, targets={"output": "sent"})
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes[:3]] == ["", "", ""]
    expected = [f"{float(p):.1f} dB" for p in psnr(received, sent, reduce=False)]
    assert [ax.get_xlabel() for ax in axes[3:]] == expected
    assert axes[3].get_ylabel() == "output"
