"""``semedge quickstart``: train a small DeepJSCC on real image patches and evaluate it.

The whole job runs on a laptop CPU in a few minutes: it trains a DeepJSCC
(bandwidth ratio 1/6, i.e. 512 complex channel uses per 32x32x3 patch) over SNRs
0..20 dB on the scikit-image photos, then sweeps the channel SNR on held-out photos
and compares with two references at the same bandwidth (see
:class:`sdk.evaluate.Uncoded` and :class:`sdk.evaluate.MeanColour`).
Running it again with the same settings reuses the finished run in ``--out``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

SWEEP_DB = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
REPORT_DB = 10.0


@dataclass(frozen=True)
class Preset:
    epochs: int
    hidden: int
    train_patches: int | None  # None = all


FULL = Preset(epochs=6, hidden=32, train_patches=None)
FAST = Preset(epochs=1, hidden=16, train_patches=2000)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train and evaluate a small DeepJSCC on real image patches (minutes, CPU)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", help="output folder (default runs/quickstart, or -fast with --fast)")
    p.add_argument(
        "--fast", action="store_true", help="1 epoch on 2,000 patches, tiny model (a smoke test)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: all, or 1 if the CPU is busy)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from sdk.data import load_dataset
    from sdk.evaluate import MeanColour, Uncoded, evaluate, format_table, plot
    from sdk.models import DeepJSCC
    from sdk.train import TrainConfig, default_threads, history_table, train

    start = time.perf_counter()
    torch.set_num_threads(args.threads or default_threads())
    preset = FAST if args.fast else FULL
    out = Path(args.out or ("runs/quickstart-fast" if args.fast else "runs/quickstart"))
    train_set = load_dataset("patches", "train")
    if preset.train_patches:
        step = len(train_set) // preset.train_patches
        train_set = train_set.subset(range(0, len(train_set), step)[: preset.train_patches])
    test_set = load_dataset("patches", "test")
    print(
        f"semedge quickstart: DeepJSCC (R=1/6) on {len(train_set)} training patches from "
        f"scikit-image photos; testing on {len(test_set)} patches of a held-out photo"
    )
    torch.manual_seed(args.seed)
    model = DeepJSCC(bandwidth_ratio=1 / 6, hidden=preset.hidden)
    config = TrainConfig(epochs=preset.epochs, batch_size=32, lr=1e-3, seed=args.seed)
    history = train(model, train_set, config, out)
    print(history_table(history))

    rows = evaluate(model, test_set, SWEEP_DB, label="DeepJSCC")
    rows += evaluate(Uncoded(model.channel_uses), test_set, SWEEP_DB, label="uncoded")
    rows += evaluate(MeanColour(), test_set, [REPORT_DB], label="mean colour")
    print()
    print(format_table(rows))
    png = plot(rows, out / "quickstart.png", title="DeepJSCC vs references, R = 1/6, AWGN")
    at = {r["model"]: r["psnr"] for r in rows if r["snr_db"] == REPORT_DB}
    print(
        f"\nAt SNR {REPORT_DB:g} dB: DeepJSCC {at['DeepJSCC']:.2f} dB PSNR, uncoded "
        f"{at['uncoded']:.2f} dB, mean colour {at['mean colour']:.2f} dB "
        f"({time.perf_counter() - start:.0f} s)"
    )
    print(f"checkpoint: {out / 'checkpoint'}   plot: {png}")
    print(f"next: semedge eval {out / 'checkpoint'} --domain hue --snr 0,10,20")
    return 0
