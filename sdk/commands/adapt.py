"""``semedge adapt zfda``: train a per-domain sparse delta for a checkpoint (ZFDA/SAM)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a checkpoint to a local domain",
        description="Adapt a trained transceiver to a local domain without touching its weights.",
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    z = methods.add_parser(
        "zfda",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train a sparse additive delta (switchable, bit-exact restore)",
        description="Train sparse additive modifications (ZFDA/SAM) of CKPT on DATA's train "
        "split seen through DOMAIN, and write them as a delta file that `semedge eval "
        "--delta` and the runtimes switch on and off. The checkpoint is not modified.",
    )
    z.add_argument(
        "checkpoint", help="checkpoint folder (or semedge train --out folder) the delta is for"
    )
    z.add_argument(
        "--domain", required=True, help="local domain: rotation | perspective | contrast | hue"
    )
    z.add_argument("--strength", type=float, help="domain shift strength (default per domain)")
    z.add_argument(
        "--data",
        help="patches | mnist | digits (default: what the checkpoint was trained on)",
    )
    z.add_argument("--limit", type=int, help="use only the first N training images")
    z.add_argument(
        "--sparsity", type=float, default=0.01, help="γ, fraction of adapted weights (0.0001-0.1)"
    )
    z.add_argument("--side", default="decoder", choices=("encoder", "decoder", "both"))
    z.add_argument("--epochs", type=int, default=12)
    z.add_argument("--batch-size", type=int, default=32)
    z.add_argument("--lr-scores", type=float, default=1.0, help="score learning rate (SGD)")
    z.add_argument("--lr-values", type=float, default=1e-2, help="value learning rate")
    z.add_argument("--value-dtype", default="float16", choices=("float16", "float32"))
    zfda_options(z)
    z.add_argument(
        "--index-encoding", default="gap8", choices=("gap8", "int32"), help="see docs/formats.md"
    )
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--out", required=True, help="delta file to write (*.delta.safetensors)")
    z.set_defaults(func=run)


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
    from sdk.adapt.zfda import ZFDAConfig, adapt_zfda
    from sdk.checkpoint import WEIGHTS, load_checkpoint, resolve
    from sdk.data import ImageDataset, load_dataset
    from sdk.data.shifts import apply_shift
    from sdk.delta import save_delta
    from sdk.train import dataset_of

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
    checkpoint = resolve(args.checkpoint)
    data = load_dataset(dataset_of(checkpoint, args.data), "train")
    images = data.images[: args.limit] if args.limit else data.images
    shifted = ImageDataset(  # before the model loads: a bad --domain fails fast
        f"{data.name}@{args.domain}", apply_shift(images, args.domain, args.strength)
    )
    model = load_checkpoint(checkpoint)
    history: list[dict[str, float]] = []
    delta = adapt_zfda(model, shifted, args.domain, config, history)
    path = save_delta(delta, args.out, args.index_encoding)
    size = path.stat().st_size
    base = (checkpoint / WEIGHTS).stat().st_size
    summary = delta.summary()
    print(
        f"wrote {path}: domain {args.domain}, {delta.nnz} entries "
        f"({summary['percent_of_adapted']:.3f} % of {summary['adapted_parameters']} {args.side} "
        f"weights), {size} bytes ({100 * size / base:.2f} % of the checkpoint); "
        f"loss {history[0]['loss']:.5f} -> {history[-1]['loss']:.5f}"
    )
    return 0
