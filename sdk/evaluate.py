"""Metrics over an SNR sweep: PSNR/SSIM (recon), accuracy (logits), IoU (mask_logits).

* :func:`psnr` is computed per image (``10 log10(range^2 / MSE)``) and averaged over
  images, as DeepJSCC papers report it; an MSE of 0 counts as ``1e-10`` (100 dB).
* :func:`ssim` is the Wang et al. (2004) SSIM with an 11x11 Gaussian window
  (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, computed per channel over the valid
  region (no padding) and averaged over channels, then images. For images smaller
  than 11 pixels the window shrinks to the largest odd size that fits.
* IoU thresholds mask logits at 0 (probability 0.5) and is averaged over images; an
  image whose prediction and target are both empty counts as IoU 1.

Reference transmitters for comparison (:class:`MeanColour`, :class:`Uncoded`) behave
like a model (``m(x, snr_db) -> {"recon": ...}``) so the same :func:`evaluate` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sdk.data import DataError, ImageDataset
from sdk.data.shifts import shift_dataset
from sdk.files import save_figure
from sdk.models.channels import AWGN, check_snr, normalize_power

MIN_MSE = 1e-10
METRICS = ("psnr", "ssim", "accuracy", "iou")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, reduce: bool = True):
    """PSNR in dB of ``a`` vs ``b`` (``[B, ...]``), per image, mean over images if ``reduce``."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(dim=1).clamp_min(MIN_MSE)
    values = 10 * torch.log10(data_range**2 / mse)
    return values.mean() if reduce else values


def _gaussian_1d(size: int, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, reduce: bool = True):
    """Gaussian-window SSIM of ``a`` vs ``b`` (``[B, C, H, W]``); see the module docstring.

    Computed in float64 (the variance terms cancel badly in float32) with the 2-D
    Gaussian applied as two 1-D passes over all five local statistics at once.
    """
    _, c, h, w = a.shape
    size = min(11, h, w)
    size -= 1 - size % 2
    g = _gaussian_1d(size)
    x, y = a.double(), b.double()
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    n = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, size, 1).expand(n, 1, size, 1), groups=n)
    maps = F.conv2d(maps, g.view(1, 1, 1, size).expand(n, 1, 1, size), groups=n)
    mu_x, mu_y, xx, yy, xy = maps.split(c, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    values = (num / den).flatten(1).mean(dim=1).float()
    return values.mean() if reduce else values


def iou(mask_logits: torch.Tensor, masks: torch.Tensor, reduce: bool = True):
    """Intersection over union of ``mask_logits > 0`` and ``masks > 0.5``, per image."""
    pred, target = (mask_logits > 0).flatten(1), (masks > 0.5).flatten(1)
    inter = (pred & target).sum(dim=1).float()
    union = (pred | target).sum(dim=1).float()
    values = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return values.mean() if reduce else values


def check_compatible(model: nn.Module, dataset: ImageDataset) -> None:
    """One-line :class:`~sdk.data.DataError` if ``dataset`` images do not fit ``model``."""
    expected = tuple(getattr(model, "input_shape", dataset.image_shape))
    if expected != dataset.image_shape:
        raise DataError(
            f"{type(model).__name__} expects {'x'.join(map(str, expected))} images but "
            f"{dataset.name} has {'x'.join(map(str, dataset.image_shape))}; "
            "use the dataset it was trained on (--data)"
        )


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    snrs_db: Sequence[float],
    batch_size: int = 256,
    seed: int = 0,
    domain: str | None = None,
    strength: float | None = None,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """One row per SNR: ``{"model", "snr_db", "psnr", "ssim", "accuracy", "iou"}``.

    Only metrics whose output the model produces appear. Channel noise is seeded per
    SNR point (``seed``) so a table is reproducible, without touching the global RNG.
    With ``domain`` the images (and, for geometric domains, masks) are shifted first.
    """
    for snr in snrs_db:
        check_snr(float(snr))
    dataset = shift_dataset(dataset, domain, strength) if domain else dataset
    name = label or type(model).__name__
    model.eval()
    rows = []
    for snr in snrs_db:
        sums: dict[str, float] = {}
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            for batch in DataLoader(dataset, batch_size=batch_size):
                for k, v in _batch_metrics(model(batch["image"], float(snr)), batch).items():
                    sums[k] = sums.get(k, 0.0) + v
        n = len(dataset)
        row: dict[str, Any] = {"model": name, "snr_db": float(snr)}
        row.update({k: sums[k] / n for k in METRICS if k in sums})
        if domain:
            row["domain"] = domain
        rows.append(row)
    return rows


def with_and_without_delta(
    model: nn.Module, delta: str | Path | None
) -> Iterator[tuple[str, nn.Module]]:
    """``(label, model)`` pairs to evaluate: the model alone, or with a ``delta`` file the
    base model and then the model with the delta switched on (labels say which).

    The delta is validated before anything runs and switched off again (bit-exact) when
    the iteration ends, so comparing the two never leaves the model changed.
    """
    name = type(model).__name__
    if delta is None:
        yield name, model
        return
    from sdk.delta import TorchDeltas

    deltas = TorchDeltas(model)
    loaded = deltas.load(delta)
    yield f"{name} base", model
    deltas.activate(loaded)
    try:
        yield f"{name} + {loaded} delta", model
    finally:
        deltas.deactivate()


def reconstructions(
    model: nn.Module,
    dataset: ImageDataset,
    snrs_db: Sequence[float],
    count: int = 8,
    seed: int = 0,
    domain: str | None = None,
    strength: float | None = None,
    label: str = "output",
) -> dict[str, torch.Tensor]:
    """``count`` images spread over ``dataset`` (row ``"input"``, or ``"<domain> input"``)
    and the model's reconstruction of them at each SNR (rows ``"<label> @ <snr> dB"``),
    for :func:`image_grid`. Noise is seeded as in :func:`evaluate`, so the same ``seed``
    gives the same channel realisation."""
    picks = dataset.spread(count)
    images = shift_dataset(picks, domain, strength).images if domain else picks.images
    rows = {f"{domain} input" if domain else "input": images}
    model.eval()
    for snr in snrs_db:
        check_snr(float(snr))
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            outputs = model(images, float(snr))
        if "recon" not in outputs:
            raise DataError(f"{type(model).__name__} has no reconstruction output to show")
        rows[f"{label} @ {snr:g} dB"] = outputs["recon"]
    return rows


def _batch_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]):
    """Metric sums (not means) over one batch."""
    sums = {}
    if "recon" in outputs:
        sums["psnr"] = float(psnr(outputs["recon"], batch["image"], reduce=False).sum())
        sums["ssim"] = float(ssim(outputs["recon"], batch["image"], reduce=False).sum())
    if "logits" in outputs and "label" in batch:
        sums["accuracy"] = float((outputs["logits"].argmax(dim=1) == batch["label"]).sum())
    if "mask_logits" in outputs and "mask" in batch:
        sums["iou"] = float(iou(outputs["mask_logits"], batch["mask"], reduce=False).sum())
    return sums


# --- reference transmitters --------------------------------------------------------


class MeanColour(nn.Module):
    """Trivial baseline: every pixel reconstructed as the image's mean colour.

    Assumes the 3 means arrive noise-free (an upper bound for any 3-number scheme).
    """

    def forward(self, x: torch.Tensor, snr_db: float | torch.Tensor) -> dict[str, torch.Tensor]:
        return {"recon": x.mean(dim=(2, 3), keepdim=True).expand_as(x)}


class Uncoded(nn.Module):
    """Analog uncoded transmission at the same bandwidth: no learning, no coding.

    The image is area-downsampled to the largest ``s x s`` whose ``C s^2`` values fit in
    the ``2k`` real channel dimensions, centred at 0.5, power-normalised per image
    (the gain is assumed known at the receiver), sent over ``channel`` (default AWGN; a
    :class:`~sdk.models.channels.Rayleigh` with equalisation works the same way),
    de-normalised, bilinearly upsampled and clipped to ``[0, 1]``.
    """

    def __init__(self, channel_uses: int, channel: nn.Module | None = None) -> None:
        super().__init__()
        self.channel_uses = channel_uses
        self.channel = channel or AWGN()

    def forward(self, x: torch.Tensor, snr_db: float | torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        side = min(h, math.isqrt(2 * self.channel_uses // c))
        small = F.adaptive_avg_pool2d(x, side) - 0.5
        flat = small.flatten(1)
        if flat.shape[1] % 2:
            flat = F.pad(flat, (0, 1))
        sent = normalize_power(flat)
        gain = flat.norm(dim=1, keepdim=True) / sent.norm(dim=1, keepdim=True).clamp_min(1e-12)
        received = (self.channel(sent, snr_db) * gain)[:, : c * side * side]
        recon = F.interpolate(
            received.reshape(b, c, side, side) + 0.5, (h, w), mode="bilinear", align_corners=False
        )
        return {"recon": recon.clamp(0, 1)}


# --- presentation ------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table (model, SNR, then the metrics present)."""
    if not rows:
        return "(no results)"
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    domains = [str(r.get("domain", "clean")) for r in rows]
    show_domain = any("domain" in r for r in rows)
    width = max(len("model"), *(len(str(r["model"])) for r in rows))
    dwidth = max(len("domain"), *map(len, domains))
    head = [f"{'model':<{width}s}", f"{'SNR dB':>8s}"]
    head += [f"{'domain':>{dwidth}s}"] if show_domain else []
    head += [f"{_HEADERS[m]:>8s}" for m in metrics]
    lines = ["  ".join(head)]
    for r, domain in zip(rows, domains, strict=True):
        cells = [f"{r['model']:<{width}s}", f"{r['snr_db']:>8.1f}"]
        cells += [f"{domain:>{dwidth}s}"] if show_domain else []
        cells += [_format_metric(m, r.get(m)) for m in metrics]
        lines.append("  ".join(cells))
    return "\n".join(lines)


_HEADERS = {"psnr": "PSNR dB", "ssim": "SSIM", "accuracy": "acc %", "iou": "IoU"}
_AXIS_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "accuracy": "accuracy (%)", "iou": "IoU"}
_PLOT_SCALE = {"accuracy": 100.0}  # plotted in % as the table prints it
_AXIS_RANGE = {"accuracy": (0.0, 100.0), "ssim": (0.0, 1.0), "iou": (0.0, 1.0)}
"""Bounded metrics keep their whole range on the axis: auto-zoom would blow a 0.4-point
difference up to full height."""
MIN_PSNR_SPAN = 2.0
"""PSNR has no upper bound and is auto-scaled, but over at least this many dB."""


def _format_metric(name: str, value: float | None) -> str:
    if value is None:
        return f"{'-':>8s}"
    if name == "psnr":
        return f"{value:>8.2f}"
    if name == "accuracy":
        return f"{100 * value:>8.1f}"
    return f"{value:>8.4f}"


def plot(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """:func:`sweep_figure` saved as a PNG at ``path``."""
    return _save(sweep_figure(rows, title), path)


def sweep_figure(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """Each metric vs SNR (one panel per metric, one line per model, legend): a figure.

    Accuracy is drawn in % (as :func:`format_table` prints it); accuracy, SSIM and IoU
    axes span their whole range (:data:`_AXIS_RANGE`); the PSNR axis is auto-scaled but
    spans at least :data:`MIN_PSNR_SPAN` dB, so hundredths of a dB do not look like a gap.
    Rows of different domains are told apart in the legend; one shared domain goes into
    the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = [m for m in METRICS if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    domains = {r.get("domain") for r in rows}
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        shown = len(domains) > 1 and r.get("domain")
        key = r["model"] + (f" ({r['domain']})" if shown else "")
        series.setdefault(key, []).append(r)
    colours = [f"C{i}" for i in range(10)]  # the default colour cycle
    for ax, metric in zip(axes[0], metrics, strict=True):
        scale = _PLOT_SCALE.get(metric, 1.0)
        for i, (key, points) in enumerate(series.items()):
            pts = sorted((p["snr_db"], scale * p[metric]) for p in points if metric in p)
            colour = colours[i % len(colours)]
            if len(pts) == 1:
                at = f"{key} @ {pts[0][0]:g} dB"
                ax.axhline(pts[0][1], linestyle="--", linewidth=1, color=colour, label=at)
            elif pts:
                # line style and marker vary too, so a curve drawn over an equal one shows
                style = {"linestyle": "-:"[i % 2], "marker": "os^v"[i % 4], "fillstyle": "none"}
                ax.plot(*zip(*pts, strict=True), color=colour, label=key, **style)
        ax.set_xlabel("channel SNR (dB)")
        ax.set_ylabel(_AXIS_LABELS[metric])
        drawn = [scale * r[metric] for r in rows if metric in r]
        if metric in _AXIS_RANGE:
            lo, hi = _AXIS_RANGE[metric]
            ax.set_ylim(min(lo, *drawn), max(hi, *drawn))  # SSIM can dip below 0
        elif max(drawn) - min(drawn) < MIN_PSNR_SPAN:
            middle = (max(drawn) + min(drawn)) / 2
            ax.set_ylim(middle - MIN_PSNR_SPAN / 2, middle + MIN_PSNR_SPAN / 2)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    (domain,) = domains if len(domains) == 1 else (None,)
    if title or domain:
        fig.suptitle(" ".join(filter(None, [title, domain and f"(domain: {domain})"])))
    return fig


def image_grid(
    rows: Mapping[str, torch.Tensor],
    path: str | Path,
    title: str | None = None,
    targets: Mapping[str, str] | None = None,
) -> Path:
    """:func:`grid_figure` saved as a PNG at ``path``."""
    return _save(grid_figure(rows, title, targets), path)


def grid_figure(
    rows: Mapping[str, torch.Tensor],
    title: str | None = None,
    targets: Mapping[str, str] | None = None,
) -> Any:
    """One labelled row of images per entry (``[N, C, H, W]`` in [0, 1]): a figure.

    ``targets`` maps a row to the row it should reproduce (e.g. a reconstruction to the
    images that were sent); each of its tiles is captioned with its PSNR against the
    tile above it in that row.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    count = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(
        len(rows), count, figsize=(1.1 * count + 2.0, 1.3 * len(rows) + 0.3), squeeze=False
    )
    targets = targets or {}
    for ax_row, (label, images) in zip(axes, rows.items(), strict=True):
        scores = None
        if label in targets:
            reference = rows[targets[label]]
            scores = psnr(images.detach(), reference[: len(images)], reduce=False)
        for i, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(images):
                image = images[i].detach().clamp(0, 1).permute(1, 2, 0).squeeze(-1)
                ax.imshow(image.numpy(), cmap="gray" if image.dim() == 2 else None)
                if scores is not None:
                    ax.set_xlabel(f"{float(scores[i]):.1f} dB", fontsize=7, labelpad=1)
        ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)
