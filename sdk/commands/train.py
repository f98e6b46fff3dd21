"""``semedge train``: train a transceiver on an offline dataset over a range of SNRs."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a transceiver on real offline data",
        description="Train a model family on a dataset over a range of channel SNRs. Writes "
        "OUT/checkpoint (for semedge eval/export) and OUT/train_state.pt (for --resume). "
        "Works the same under torchrun (DistributedDataParallel, rank 0 writes).",
    )
    p.add_argument("--model", default="DeepJSCC", help="model family (see: semedge models)")
    p.add_argument(
        "--data",
        default="patches",
        metavar="NAME|DIR",
        help="patches | mnist | digits, or a folder of your own images (read at in_channels x "
        "image_size² from --arg, default 3 x 32²; train/ and val/ subfolders if present)",
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--snr", default="0,20", help="training SNR range LO,HI in dB (uniform)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: all, or 1 if the CPU is busy)"
    )
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor argument, repeatable (e.g. hidden=32, bandwidth_ratio=1/12); "
        "in_channels, image_size and num_classes default to what the data provides",
    )
    p.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TASK=W",
        help="loss weight per task: recon, logits, mask_logits, aux "
        "(default recon=1, logits=0.05, mask_logits=1, aux=1; see docs/training.md)",
    )
    p.set_defaults(func=run, on_interrupt=how_to_continue)


def how_to_continue(args: argparse.Namespace, argv: list[str]) -> str:
    """After Ctrl-C: the command that continues from the last saved epoch."""
    import shlex
    from pathlib import Path

    from sdk.train import STATE_FILE

    if not (Path(args.out) / STATE_FILE).is_file():
        return f"no epoch had finished, nothing was saved; start again: semedge {shlex.join(argv)}"
    again = argv if "--resume" in argv else [*argv, "--resume"]
    return f"finished epochs are saved; resume with: semedge {shlex.join(again)}"


def run(args: argparse.Namespace) -> int:
    import torch

    from sdk.data import names_folder, sample_set
    from sdk.options import parse_pairs, parse_snrs
    from sdk.train import (
        TrainConfig,
        TrainError,
        build_for_data,
        default_threads,
        folder_shape,
        history_table,
        train,
    )

    lo_hi = parse_snrs(args.snr)
    if len(lo_hi) != 2:
        raise TrainError(f"--snr takes a range LO,HI in dB (e.g. 0,20), got {args.snr!r}")
    weights = {k: float(v) for k, v in parse_pairs(args.weight, "--weight").items()}
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        snr_db=(lo_hi[0], lo_hi[1]),
        seed=args.seed,
        data=args.data,
        loss_weights={**TrainConfig().loss_weights, **weights},
    )
    config.validate()
    torch.set_num_threads(args.threads or default_threads())
    model_args = parse_pairs(args.arg, "--arg")
    shape = folder_shape(model_args) if names_folder(args.data) else None
    train_set, val_set = sample_set(shape, args.data, "train"), sample_set(shape, args.data, "val")
    torch.manual_seed(args.seed)
    model = build_for_data(args.model, model_args, train_set)
    history = train(model, train_set, config, args.out, val_set=val_set, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(history_table(history))
        print(f"checkpoint: {args.out}/checkpoint  (try: semedge eval {args.out}/checkpoint)")
    return 0
