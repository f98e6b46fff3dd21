"""``semedge eval``: metrics of a checkpoint over an SNR sweep, as a table and a plot."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint over an SNR sweep",
        description="Print PSNR/SSIM (reconstruction), accuracy (classification) and IoU "
        "(foreground mask) per channel SNR for a checkpoint on a dataset split.",
    )
    p.add_argument(
        "checkpoint", nargs="?", help="checkpoint folder, or the --out folder of semedge train"
    )
    p.add_argument("--tx", metavar="CKPT", help="evaluate this encoder with --rx's decoder instead")
    p.add_argument("--rx", metavar="CKPT", help="the decoder's checkpoint of a --tx pairing")
    p.add_argument("--update", metavar="PKG", help="apply this SLF update to --rx first")
    p.add_argument(
        "--data",
        help="patches | mnist | digits (default: what the checkpoint was trained on)",
    )
    p.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="dataset split"
    )
    p.add_argument("--snr", default="-5,0,5,10,15,20", help="comma-separated SNRs in dB")
    p.add_argument(
        "--domain", help="evaluate under a domain shift: rotation | perspective | contrast | hue"
    )
    p.add_argument("--strength", type=float, help="domain shift strength (default: per domain)")
    p.add_argument("--seed", type=int, default=0, help="channel-noise seed")
    p.add_argument(
        "--delta",
        metavar="FILE",
        help="also evaluate with this ZFDA delta (semedge adapt zfda) switched on: rows, "
        "curves and example rows for the base model and with the delta",
    )
    p.add_argument("--plot", metavar="PNG", help="also plot the metrics vs SNR to this file")
    p.add_argument(
        "--examples",
        metavar="PNG",
        help="also save 8 test images and their reconstructions at each SNR to this file",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    p.set_defaults(func=run)


def load_model(args: argparse.Namespace) -> Any:
    """The model to evaluate (the one place to change what ``eval`` loads)."""
    from sdk.checkpoint import load_checkpoint
    from sdk.options import OptionError

    if args.tx or args.rx or args.update:
        from sdk.adapt.slf import load_pair

        if not (args.tx and args.rx) or args.checkpoint:
            raise OptionError("evaluate a pairing with --tx CKPT --rx CKPT [--update PKG] only")
        args.checkpoint = args.tx  # titles and the default dataset: the transmitter's
        return load_pair(args.tx, args.rx, args.update)
    if not args.checkpoint:
        raise OptionError("give a CHECKPOINT, or a pairing with --tx CKPT --rx CKPT")
    return load_checkpoint(args.checkpoint)


def run(args: argparse.Namespace) -> int:
    import json

    from sdk.data import sample_set
    from sdk.evaluate import (
        check_compatible,
        evaluate,
        format_table,
        image_grid,
        plot,
        reconstructions,
        with_and_without_delta,
    )
    from sdk.options import check_figure_path, parse_snrs
    from sdk.train import dataset_of

    snrs = parse_snrs(args.snr)
    for figure in (args.plot, args.examples):
        check_figure_path(figure)
    model = load_model(args)
    dataset = sample_set(model.input_shape, dataset_of(args.checkpoint, args.data), args.split)
    check_compatible(model, dataset)
    shift = {"domain": args.domain, "strength": args.strength}
    rows: list[dict[str, Any]] = []
    shown: dict[str, Any] = {}
    for label, variant in with_and_without_delta(model, args.delta):
        rows += evaluate(variant, dataset, snrs, seed=args.seed, label=label, **shift)
        if args.examples:
            tag = "output" if args.delta is None else label
            shown.update(
                reconstructions(variant, dataset, snrs, seed=args.seed, label=tag, **shift)
            )
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    figures = []
    if args.plot:
        figures.append(plot(rows, args.plot, title=f"{args.checkpoint} on {dataset.name}"))
    if args.examples:
        sent = next(iter(shown))
        targets = {row: sent for row in shown if row != sent}
        title = f"{args.checkpoint}: outputs with their PSNR against the input"
        figures.append(image_grid(shown, args.examples, title=title, targets=targets))
    if not args.json:
        for path in figures:
            print(f"figure: {path}")
    return 0
