"""``semedge adapt zfda`` (per-domain sparse delta, ZFDA/SAM) and ``semedge adapt slf``
(re-align a transmitter with a receiver: split learning with layer freezing)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdk.data import ImageDataset
    from sdk.models.base import Transceiver

DATA_HELP = (
    "a folder of your own images (PNG/JPEG/.npy, any size: centre-cropped and resized to the "
    "model's input, see docs/data.md) or patches | mnist | digits (default: what the "
    "checkpoint was trained on)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a checkpoint to a local domain",
        description="Adapt a trained transceiver to a local domain without touching its weights.",
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    z = methods.add_parser(
        "zfda",
        help="train a sparse additive delta (switchable, bit-exact restore)",
        description="Train sparse additive modifications (ZFDA/SAM) of CKPT on DATA's train "
        "split seen through DOMAIN, and write them as a delta file that `semedge eval "
        "--delta` and the runtimes switch on and off. The checkpoint is not modified.",
    )
    z.add_argument(
        "checkpoint", help="checkpoint folder (or semedge train --out folder) the delta is for"
    )
    z.add_argument(
        "--domain",
        help="synthetic shift of a dataset: rotation | perspective | contrast | hue; with a "
        "folder --data only the delta's name (default: the folder's name), nothing is shifted",
    )
    z.add_argument("--strength", type=float, help="domain shift strength (default: per domain)")
    z.add_argument("--data", metavar="DIR|NAME", help=DATA_HELP)
    z.add_argument(
        "--limit", type=int, help="use only N training images, spread evenly over the split"
    )
    z.add_argument(
        "--sparsity", type=float, default=0.01, help="γ, fraction of adapted weights, 0.0001-0.1"
    )
    z.add_argument(
        "--side",
        default="decoder",
        choices=("encoder", "decoder", "both"),
        help="which half of the model the delta adapts",
    )
    z.add_argument("--epochs", type=int, default=12, help="passes over the training images")
    z.add_argument("--batch-size", type=int, default=32, help="images per step")
    z.add_argument("--lr-scores", type=float, default=1.0, help="score learning rate (SGD)")
    z.add_argument("--lr-values", type=float, default=1e-2, help="value learning rate")
    z.add_argument(
        "--value-dtype",
        default="float16",
        choices=("float16", "float32"),
        help="how the delta values are stored",
    )
    zfda_options(z)
    z.add_argument(
        "--index-encoding", default="gap8", choices=("gap8", "int32"), help="see docs/formats.md"
    )
    z.add_argument("--seed", type=int, default=0, help="random seed")
    z.add_argument("--out", required=True, help="delta file to write (*.delta.safetensors)")
    add_device_options(z)
    z.set_defaults(func=run)
    _register_slf(methods)


def _register_slf(methods: argparse._SubParsersAction) -> None:
    s = methods.add_parser(
        "slf",
        help="re-align a transmitter with a receiver; writes an update package",
        description="Split learning with layer freezing: the transmitter (--tx) takes the "
        "receiver's decoder (--rx), freezes ℓ of its layers, fine-tunes its own encoder and "
        "the other decoder layers on its own data and channel, and writes the new values of "
        "the tuned layers as an update package for the receiver (semedge update apply) and "
        "the adapted transmitter as a checkpoint. Neither input checkpoint is modified.",
    )
    s.add_argument("--tx", help="the transmitter's checkpoint (its encoder is fine-tuned)")
    s.add_argument(
        "--rx",
        required=True,
        help="the receiver's checkpoint, or just its decoder download (*.decoder.safetensors)",
    )
    s.add_argument(
        "--save-download",
        metavar="FILE",
        help="only write the receiver's decoder download (what the transmitter needs) to FILE",
    )
    s.add_argument(
        "--list-layers",
        action="store_true",
        help="only list the receiver's decoder layers with their sizes (what ℓ counts)",
    )
    s.add_argument("--freeze", type=int, default=0, metavar="L", help="ℓ, decoder layers to freeze")
    s.add_argument(
        "--freeze-side",
        default="output",
        choices=("output", "input"),
        help="freeze the ℓ layers nearest the output (the seed's) or the input",
    )
    s.add_argument("--data", metavar="DIR|NAME", help=DATA_HELP)
    s.add_argument("--domain", help="the transmitter's data shift: rotation | contrast | ...")
    s.add_argument("--strength", type=float, help="domain shift strength (default: per domain)")
    s.add_argument(
        "--limit", type=int, help="use only N training images, spread evenly over the split"
    )
    s.add_argument(
        "--snr", default="10", help="the transmitter's channel SNR in dB: one value or LOW,HIGH"
    )
    s.add_argument(
        "--channel",
        choices=("awgn", "rayleigh"),
        help="the transmitter's channel (default: its own)",
    )
    s.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    s.add_argument("--batch-size", type=int, default=64, help="images per step")
    s.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    s.add_argument(
        "--schedule",
        default="cosine",
        choices=("constant", "cosine"),
        help="learning rate: constant, or cosine decay over the steps",
    )
    s.add_argument("--weight-decay", type=float, default=0.0, help="on tuned parameters only")
    s.add_argument(
        "--value-dtype",
        default="float32",
        choices=("float32", "float16"),
        help="package values: float32 (exact) or float16 (half the bytes)",
    )
    s.add_argument("--name", default="slf", help="name of the update")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument(
        "--threads", type=int, help="torch CPU threads (default: all, or 1 if the CPU is busy)"
    )
    s.add_argument("--out", help="update package to write (*.update.safetensors)")
    s.add_argument(
        "--tx-out", help="where to save the adapted transmitter (default: next to --out, .tx)"
    )
    add_device_options(s)
    s.set_defaults(func=run_slf)


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where the adaptation runs and which device root or port receives its result."""
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--install", metavar="ROOT", help="on the device: install the result into ROOT"
    )
    where.add_argument("--port", help="from a host: flash the result to the device on PORT")
    p.add_argument("--baud", type=int, default=921600, help="--port baud rate")
    p.add_argument("--model", help="device model the result is for (default: the one it fits)")
    p.add_argument(
        "--activate", action="store_true", help="switch the result on after --install/--port"
    )
    p.add_argument(
        "--security-counter",
        type=int,
        default=0,
        metavar="N",
        help="written into the result; a device refuses one below the highest it has",
    )
    p.add_argument(
        "--sign",
        metavar="KEY",
        help="sign the result with this private key (FILE.sig), as a device with a trusted "
        "key requires",
    )


def check_target(args: argparse.Namespace) -> None:
    """Refuse a bad --install/--activate before any training is done."""
    from firmware_bridge import signing
    from sdk.adapt.ondevice import check_root
    from sdk.errors import SemedgeError
    from sdk.runtime.trust import device_key

    if not 0 <= args.security_counter < 2**31:
        raise SemedgeError(f"security counter {args.security_counter} must be between 0 and "
                           "2**31 - 1")  # fmt: skip
    if args.install:
        check_root(args.install)
        if device_key() is not None and not args.sign:
            raise SemedgeError(
                "this device trusts a signing key, so it takes only signed files; add --sign "
                "KEY (the private key of the device's trusted.pub)"
            )
    elif args.activate and not args.port:
        raise SemedgeError("--activate needs --install ROOT or --port PORT")
    if args.sign:
        signing.sign_bytes(b"semedge", args.sign)  # a wrong key fails now, not after training


def deliver(args: argparse.Namespace, path: Path) -> None:
    """Sign the written delta/update (--sign) and hand it to the device named by --install
    or --port. A signature left beside ``path`` by an earlier run is removed: it signs
    other bytes."""
    from firmware_bridge import signing
    from sdk.adapt.ondevice import install_local, push
    from sdk.runtime.trust import device_key

    if args.sign:
        signing.sign(path, args.sign)
    else:
        Path(f"{path}.sig").unlink(missing_ok=True)
    if args.install:
        print(install_local(args.install, path, model=args.model, activate=args.activate,
                            trusted_key=device_key()))  # fmt: skip
    elif args.port:
        print(push(args.port, path, model=args.model, activate=args.activate, baud=args.baud))


def training_set(checkpoint: str | Path, data: str | None, model: Any) -> ImageDataset:
    """The training images for ``model``: a folder of the user's images or a dataset."""
    from sdk.data import sample_set
    from sdk.train import dataset_of

    return sample_set(model.input_shape, dataset_of(checkpoint, data), "train")


def run_slf(args: argparse.Namespace) -> int:
    from sdk.adapt.slf import (
        DOWNLOAD_SUFFIX,
        SLFConfig,
        SLFError,
        adapt_slf,
        decoder_layers,
        layer_table,
        load_download,
        save_download,
        split_layers,
    )
    from sdk.checkpoint import load_checkpoint, save_checkpoint
    from sdk.delta import UPDATE_SUFFIX, save_update

    if str(args.rx).endswith(DOWNLOAD_SUFFIX):
        rx = load_download(args.rx)
    else:
        rx = load_checkpoint(args.rx)  # type: ignore[assignment]
    if args.save_download:
        path = save_download(rx, args.save_download)
        print(f"wrote {path}: {path.stat().st_size} bytes (decoder of {args.rx})")
        return 0
    if args.list_layers:
        print(layer_table(rx, args.freeze, args.freeze_side))
        return 0
    if not args.tx or not args.out:
        raise SLFError("give --tx CKPT and --out FILE.update.safetensors (or --list-layers)")
    import torch

    from sdk.adapt.ondevice import torch_device
    from sdk.data.shifts import shift_dataset
    from sdk.evaluate import check_compatible
    from sdk.options import parse_snrs
    from sdk.train import default_threads

    snrs = parse_snrs(args.snr)
    config = SLFConfig(
        freeze=args.freeze,
        freeze_side=args.freeze_side,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        snr_db=(min(snrs), max(snrs)),
        channel=args.channel,
        value_dtype=args.value_dtype,
        seed=args.seed,
        name=args.name,
    )
    config.validate()
    split_layers(decoder_layers(rx), args.freeze, args.freeze_side)  # a bad ℓ fails before data
    device = torch_device(args.device)
    check_target(args)
    torch.set_num_threads(args.threads or default_threads())
    tx: Transceiver = load_checkpoint(args.tx)  # type: ignore[assignment]
    data = training_set(args.tx, args.data, tx)
    if args.limit:
        data = data.spread(args.limit)
    if args.domain:
        data = shift_dataset(data, args.domain, args.strength)
    check_compatible(tx, data)
    result = adapt_slf(tx.to(device), rx.to(device), data, config)
    result.update.extra["security_counter"] = str(args.security_counter)
    out = save_update(result.update, args.out)
    stem = str(out)[: -len(UPDATE_SUFFIX)] if str(out).endswith(UPDATE_SUFFIX) else str(out)
    tx_out = save_checkpoint(result.transmitter, args.tx_out or f"{stem}.tx")
    acc = result.accounting
    share = 100 * acc["upload_bytes"] / acc["decoder_bytes"]
    print(
        f"wrote {out}: {len(result.update.entries)} tensors of {len(acc['tuned_layers'])} tuned "
        f"layers, {out.stat().st_size} bytes ({share:.1f} % of the decoder's "
        f"{acc['decoder_bytes']}); downloaded {acc['download_bytes']} bytes"
    )
    print(
        f"{acc['steps']} steps in {acc['finetune_s']:.1f} s ({acc['step_ms']:.1f} ms/step), peak "
        f"memory {acc['peak_memory_bytes'] / 2**20:.1f} MiB, usable again after "
        f"{acc['usable_again_s']:.1f} s; loss {result.history[0]['loss']:.4f} -> "
        f"{result.history[-1]['loss']:.4f}"
    )
    print(f"adapted transmitter: {tx_out}; receiver: semedge update apply {args.rx} {out}")
    deliver(args, out)
    return 0


def zfda_options(z: argparse.ArgumentParser) -> None:
    """The SAM training choices studied in docs/zfda_repro.md.

    Literal defaults and choices (importing sdk.adapt.zfda would load torch for every
    command); tests/zfda/test_cli.py checks they equal ZFDAConfig's.
    """
    z.add_argument(
        "--score-init",
        default="weight",
        choices=("grad", "random", "weight"),
        help="initial mask scores: |dL/dW|, random, |W|",
    )
    z.add_argument(
        "--budget-rule",
        default="din+dout",
        choices=("din+dout", "uniform", "size"),
        help="per-layer share of the γ budget: ∝ d_in + d_out, equal, ∝ layer size",
    )
    z.add_argument(
        "--mask-update",
        default="ste",
        choices=("ste", "periodic", "fixed"),
        help="re-select the mask every step, every --mask-period steps, or never",
    )
    z.add_argument("--mask-period", type=int, default=50, help="steps between re-selections")
    z.add_argument(
        "--values-optimizer",
        default="adam",
        choices=("adam", "sgd"),
        help="optimiser of the delta values (SGD with momentum 0.9)",
    )


def run(args: argparse.Namespace) -> int:
    from sdk.adapt.ondevice import torch_device
    from sdk.adapt.zfda import ZFDAConfig, ZFDAError, adapt_zfda
    from sdk.checkpoint import WEIGHTS, load_checkpoint, resolve
    from sdk.data import names_folder
    from sdk.data.shifts import shift_dataset
    from sdk.delta import save_delta
    from sdk.evaluate import check_compatible
    from sdk.train import loss_weights_of

    config = ZFDAConfig(
        sparsity=args.sparsity,
        side=args.side,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_scores=args.lr_scores,
        lr_values=args.lr_values,
        value_dtype=args.value_dtype,
        seed=args.seed,
        score_init=args.score_init,
        budget_rule=args.budget_rule,
        mask_update=args.mask_update,
        mask_period=args.mask_period,
        values_optimizer=args.values_optimizer,
    )
    config.validate()
    device = torch_device(args.device)
    check_target(args)
    checkpoint = resolve(args.checkpoint)
    config.loss_weights = loss_weights_of(checkpoint)  # adapt with what it was trained with
    folder = names_folder(args.data)
    if not folder and not args.domain:
        raise ZFDAError("give --domain (the shift to adapt to), or --data DIR of your own images")
    model = load_checkpoint(checkpoint)
    data = training_set(checkpoint, args.data, model)
    if args.limit is not None:
        if args.limit < 1:
            raise ZFDAError(f"--limit {args.limit} must be at least 1 (training images to use)")
        data = data.spread(args.limit)  # every class: mnist's split is sorted by digit
    # a folder already is the domain; a dataset is shifted into it (a bad --domain fails fast)
    shifted = data if folder else shift_dataset(data, args.domain, args.strength)
    domain = args.domain or Path(args.data).resolve().name
    check_compatible(model, shifted)
    history: list[dict[str, float]] = []
    delta = adapt_zfda(model.to(device), shifted, domain, config, history)
    delta.extra["security_counter"] = str(args.security_counter)
    path = save_delta(delta, args.out, args.index_encoding)
    size = path.stat().st_size
    base = (checkpoint / WEIGHTS).stat().st_size
    summary = delta.summary()
    print(
        f"wrote {path}: domain {domain}, {delta.nnz} entries "
        f"({summary['percent_of_adapted']:.3f} % of {summary['adapted_parameters']} {args.side} "
        f"weights), {size} bytes ({100 * size / base:.2f} % of the checkpoint); "
        f"loss {history[0]['loss']:.5f} -> {history[-1]['loss']:.5f}"
    )
    deliver(args, path)
    return 0
