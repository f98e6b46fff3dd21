"""``semedge inspect``: look inside a checkpoint (GAI task-node weights and graph attention)."""

from __future__ import annotations

import argparse

DATA_BY_SHAPE = {(1, 28, 28): "mnist", (3, 32, 32): "patches", (1, 16, 16): "digits"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a trained model attends to",
        description="With --gai-weights: print (and with --plot, draw) a GAI checkpoint's "
        "task-node weights (which encoder blocks each task sends) and its graph-attention "
        "coefficients, averaged over up to 256 test images, and warn when they collapsed "
        "to uniform values.",
    )
    p.add_argument("checkpoint", help="checkpoint folder, or the --out folder of semedge train")
    p.add_argument("--gai-weights", action="store_true", help="show GAI weights (required)")
    p.add_argument("--data", help="patches | mnist | digits (default: from the input shape)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--plot", metavar="PNG", help="also draw the weights as heatmaps to this file")
    p.add_argument("--json", action="store_true", help="print the weights as JSON instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from sdk.checkpoint import load_checkpoint
    from sdk.data import load_dataset
    from sdk.inspect import InspectError, format_gai_weights, gai_weights, plot_gai_weights

    if not args.gai_weights:
        raise InspectError("nothing to inspect: add --gai-weights")
    model = load_checkpoint(args.checkpoint)
    shape = tuple(getattr(model, "input_shape", ()))
    name = args.data or DATA_BY_SHAPE.get(shape)
    if name is None:
        raise InspectError(f"no built-in dataset has {list(shape)} images; give --data")
    info = gai_weights(model, load_dataset(name, args.split).spread(256).images)
    print(json.dumps(info, indent=1) if args.json else format_gai_weights(info))
    if args.plot:
        print(f"plot: {plot_gai_weights(info, args.plot)}")
    return 0
