"""SLF: re-align a transmitter with a misaligned receiver by split learning with layer freezing.

The transmitter (its own data, its own channel) downloads the receiver's decoder,
freezes ℓ of its layers, fine-tunes its own encoder together with the remaining decoder
layers on the losses the model was trained with (:func:`sdk.train.training_losses`: its
task losses plus its own regulariser such as the VQ commitment), and uploads only the
tuned decoder layers as an update package (:class:`sdk.delta.Update`,
``*.update.safetensors``). The encoder update stays on the transmitter. Raw data never
leaves it.

Choices where the seed (arXiv 2310.09394) is silent, all written down in ``docs/slf.md``:

* **Layer** (:func:`decoder_layers`): a Conv/ConvTranspose/Linear together with the
  parameterised activation or normalisation that follows it (PReLU, GDN); a residual
  block is one layer; the classifier head is a layer like any other. DeepJSCC: 5 layers
  (+1 head); VQ: 3 (+1 head); multi-task receivers (GAI, KEM): the layers of every task
  decoder, ordered so that layer ``d`` from the output of every task sits together
  (freezing ℓ = T at the output freezes the last layer of each of the T tasks).
* **Freeze side**: ``output`` freezes the ℓ layers nearest the output (the seed's
  choice), ``input`` the ℓ nearest the decoder input.
* **Frozen means untouched**: frozen parameters get ``requires_grad=False`` and are not
  given to the optimiser, so they have no gradient, no optimiser state and no weight
  decay. Gradients still flow *through* frozen layers to the encoder, so freezing saves
  weight-gradient work and optimiser state, and (:func:`input_grads_only`) the inputs
  that frozen Conv/ConvTranspose/Linear units would keep only for weight gradients.
* **VQ over the BSC**: the codebook is the pair's shared "language"; the receiver owns
  it, the transmitter downloads it with the decoder and quantises against it (in the
  misaligned pair too, so the comparison is fair). The codebook is never tuned.
* **Pairing**: :func:`pair` is the transmitter's model with the receiver's decoder, on
  the transmitter's channel (``channel`` overrides it), producing the receiver's tasks.
* **Accounting**: download = the decoder's float32 bytes (+ the VQ codebook), upload =
  the package's value bytes, peak memory = parameters + gradients + optimiser state +
  tensors saved for backward in one step (``torch.cuda.max_memory_allocated`` on a GPU),
  usable again = wall time from start until the receiver runs the update (training,
  packaging and applying it; the link's transfer time is bytes / rate and not included).
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sdk.checkpoint import load_checkpoint, read_config, resolve, save_checkpoint
from sdk.delta import FREEZE_SIDES, UPDATE_SUFFIX, TorchDeltas, Update, load_update, save_update
from sdk.errors import SemedgeError
from sdk.fingerprint import model_fingerprint
from sdk.models.base import Transceiver
from sdk.models.channels import check_snr, make_channel
from sdk.models.tasks import _Residual
from sdk.train import DEFAULT_WEIGHTS, SCHEDULES, scheduled_lr, training_losses, weighted_sum

DOWNLOAD_FORMAT = "semedge.download"
DOWNLOAD_SUFFIX = ".decoder.safetensors"
WEIGHT_UNITS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


class SLFError(SemedgeError):
    """An invalid SLF setting, or a transmitter and receiver that cannot be paired."""


@dataclass(frozen=True)
class Layer:
    """One decoder layer: its module path, its parameters (full names), their size."""

    name: str
    params: tuple[str, ...]
    numel: int
    nbytes: int


@dataclass
class SLFConfig:
    """SLF settings: ℓ (``freeze``), the side it freezes from, and the fine-tuning budget.

    ``schedule``: ``constant`` learning rate, or ``cosine`` decay over ``steps``.
    """

    freeze: int = 0
    freeze_side: str = "output"
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    snr_db: tuple[float, float] = (10.0, 10.0)
    channel: str | None = None
    value_dtype: str = "float32"
    seed: int = 0
    name: str = "slf"
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    progress: bool = True

    def validate(self) -> None:
        if self.freeze_side not in FREEZE_SIDES:
            raise SLFError(f"freeze side {self.freeze_side!r} must be output or input")
        if self.freeze < 0:
            raise SLFError(f"ℓ = {self.freeze} must be >= 0 (the number of frozen decoder layers)")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise SLFError("need steps >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0")
        if self.schedule not in SCHEDULES:
            raise SLFError(f"schedule {self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        if self.value_dtype not in ("float32", "float16"):
            raise SLFError(f"value dtype {self.value_dtype!r} must be float32 or float16")
        lo, hi = self.snr_db
        check_snr(torch.tensor([lo, hi]))
        if lo > hi:
            raise SLFError(f"SNR range {lo},{hi} is reversed; give it as low,high in dB")


@dataclass
class SLFResult:
    """The update for the receiver, the adapted transmitter, and what it cost."""

    update: Update
    transmitter: Transceiver
    pair: Transceiver
    accounting: dict[str, Any]
    history: list[dict[str, float]]


# ------------------------------------------------------------------ layers


def decoder_layers(model: Transceiver) -> list[Layer]:
    """The receiver's layers, ordered from its input to its output (module docstring)."""
    receiver = getattr(model, "receiver", None)
    if not isinstance(receiver, nn.Module):
        raise SLFError(f"{type(model).__name__} has no receiver (decoder) to split")
    decoders = getattr(receiver, "decoders", None)
    if isinstance(decoders, nn.ModuleDict):
        branches = [(f"receiver.decoders.{n}", m) for n, m in decoders.items()]
    else:
        branches = [("receiver", receiver)]
    chains = [_branch_layers(prefix, module) for prefix, module in branches]
    ranked = [
        (-(len(chain) - 1 - depth), b, layer)
        for b, chain in enumerate(chains)
        for depth, layer in enumerate(chain)
    ]
    return [layer for *_, layer in sorted(ranked, key=lambda r: (r[0], r[1]))]


def _branch_layers(prefix: str, branch: nn.Module) -> list[Layer]:
    """Layers of one chain, named by their weight unit's module (or residual block's) path."""
    groups: list[tuple[str, list[tuple[str, nn.Parameter]]]] = []
    block: str | None = None
    for name, module in branch.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        own = [(f"{full}.{n}", p) for n, p in module.named_parameters(recurse=False)]
        if block is not None and full.startswith(block + "."):
            groups[-1][1].extend(own)
            continue
        block = None
        if isinstance(module, _Residual):
            block = full
            groups.append((full, own))
        elif own and (isinstance(module, WEIGHT_UNITS) or not groups):
            groups.append((full, own))
        elif own:
            groups[-1][1].extend(own)
    return [
        Layer(
            name,
            tuple(n for n, _ in group),
            sum(p.numel() for _, p in group),
            sum(p.numel() * p.element_size() for _, p in group),
        )
        for name, group in groups
    ]


def split_layers(layers: list[Layer], freeze: int, side: str) -> tuple[list[Layer], list[Layer]]:
    """``(frozen, tuned)``: the ℓ = ``freeze`` layers nearest ``side``, and the rest."""
    if side not in FREEZE_SIDES:
        raise SLFError(f"freeze side {side!r} must be output or input")
    if not 0 <= freeze <= len(layers):
        raise SLFError(
            f"ℓ = {freeze} but the decoder has {len(layers)} layers; choose 0..{len(layers)} "
            "(list them with: semedge adapt slf --rx CKPT --list-layers)"
        )
    if side == "output":
        cut = len(layers) - freeze
        return layers[cut:], layers[:cut]
    return layers[:freeze], layers[freeze:]


def layer_table(model: Transceiver, freeze: int | None = None, side: str = "output") -> str:
    """The decoder's layers with parameter counts and bytes (what ``--list-layers`` prints)."""
    layers = decoder_layers(model)
    frozen = {lay.name for lay in split_layers(layers, freeze, side)[0]} if freeze else set()
    width = max(len(lay.name) for lay in layers)
    total = sum(lay.nbytes for lay in layers)
    lines = [f"{'ℓ':>3}  {'layer':<{width}}  {'params':>9}  {'bytes':>10}  {'share':>6}"]
    for i, lay in enumerate(layers):
        mark = "  frozen" if lay.name in frozen else ""
        lines.append(
            f"{i + 1:>3}  {lay.name:<{width}}  {lay.numel:>9}  {lay.nbytes:>10}  "
            f"{100 * lay.nbytes / total:>5.1f}%{mark}"
        )
    lines.append(f"{'':>3}  {'decoder':<{width}}  {sum(la.numel for la in layers):>9}  {total:>10}")
    return "\n".join(lines)


# ------------------------------------------------------------------ pairing


def clone(module: nn.Module) -> Any:
    """A deep copy, also of a module that keeps a tensor of its last graph (VQ's ``.loss``),
    which ``copy.deepcopy`` refuses; such tensors are copied detached."""
    memo: dict[int, Any] = {}
    pending, seen = [module], set()
    while pending:
        m = pending.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        pending.extend(m.children())
        for value in vars(m).values():  # also modules held in a tuple (VQ's shared codebook)
            items = value if isinstance(value, tuple | list) else (value,)
            pending.extend(v for v in items if isinstance(v, nn.Module))
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach()
    return copy.deepcopy(module, memo)


def pair(tx: Transceiver, rx: Transceiver, channel: str | None = None) -> Transceiver:
    """The transmitter's model with the receiver's decoder (copies; inputs untouched).

    For the VQ family the transmitter quantises against the receiver's codebook.
    """
    paired = clone(tx)
    paired.receiver = clone(rx.receiver)
    paired.tasks = rx.tasks
    shared = getattr(paired.receiver, "quantizer", None)
    if shared is not None and hasattr(paired.transmitter, "quantizer"):
        paired.transmitter.quantizer = shared
    if channel is not None:
        paired.channel_name, paired.channel = channel, make_channel(channel)
    try:
        with torch.no_grad():
            paired(torch.zeros(1, *paired.input_shape), 10.0)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise SLFError(
            f"the {type(tx).__name__} transmitter cannot feed the {type(rx).__name__} receiver "
            f"({reason}); both must send/expect the same symbols (family and bandwidth ratio)"
        ) from None
    return paired


def download_bytes(rx: Transceiver) -> int:
    """What the transmitter downloads: the decoder (+ the VQ codebook it decodes with)."""
    decoder = sum(p.numel() * p.element_size() for p in rx.receiver.parameters())
    book = getattr(getattr(rx.receiver, "quantizer", None), "codebook", None)
    return decoder + (book.numel() * book.element_size() if book is not None else 0)


# ------------------------------------------------------------------ fine-tuning


def _trainable(paired: Transceiver, tuned: list[Layer]) -> list[nn.Parameter]:
    """Encoder parameters (not a shared codebook) and the tuned decoder layers; the rest frozen."""
    names = {n for lay in tuned for n in lay.params}
    book = getattr(getattr(paired.receiver, "quantizer", None), "codebook", None)
    chosen = []
    for name, p in paired.named_parameters():
        train = (name.startswith("transmitter.") and p is not book) or name in names
        p.requires_grad_(train)
        if train:
            chosen.append(p)
    return chosen


class _InputGradOnly(torch.autograd.Function):
    """A frozen Conv/ConvTranspose/Linear that keeps only its weight for backward.

    Autograd's conv and linear save their input whether or not the weight needs a
    gradient; the input is only needed for the weight gradient. A frozen unit's backward
    needs the weight and the output gradient alone, and gives the same bits as autograd
    (tested on the CPU; cuDNN may choose other algorithms): for a contiguous input, the
    transposed convolution of the output gradient with the same weight (and the other way
    round), as autograd's kernels compute it; for another layout (VQ's decoder runs
    channels-last, and the kernel follows the input's layout) autograd's own
    ``convolution_backward`` with an empty stand-in of the input's strides, allocated
    only for that call.
    """

    @staticmethod
    def forward(ctx: Any, unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        ctx.unit, ctx.input_size = unit, x.shape
        ctx.input_strides = None if x.is_contiguous() else x.stride()
        ctx.save_for_backward(unit.weight)  # a parameter: version-checked, no activation
        return type(unit).forward(unit, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (weight,) = ctx.saved_tensors
        unit = ctx.unit
        if isinstance(unit, nn.Linear):
            return None, grad @ weight
        conv = (unit.stride, unit.padding, unit.dilation)
        if ctx.input_strides is not None:
            stand_in = grad.new_empty_strided(ctx.input_size, ctx.input_strides)
            masks = (True, False, False)
            return None, torch.ops.aten.convolution_backward(
                grad,
                stand_in,
                weight,
                None,
                *conv,
                unit.transposed,
                unit.output_padding,
                unit.groups,
                masks,
            )[0]
        # output padding that makes the transposed convolution give back the input's size
        sizes = zip(ctx.input_size[2:], grad.shape[2:], *conv, unit.kernel_size, strict=True)
        restore = [
            0 if unit.transposed else n_in - ((n_out - 1) * s - 2 * p + d * (k - 1) + 1)
            for n_in, n_out, s, p, d, k in sizes
        ]
        return None, torch.convolution(
            grad, weight, None, *conv, not unit.transposed, restore, unit.groups
        )


def _frozen_units(model: nn.Module) -> list[nn.Module]:
    """The Conv/ConvTranspose/Linear units of ``model`` whose parameters are all frozen and
    whose input gradient :class:`_InputGradOnly` can compute."""
    return [
        m
        for m in model.modules()
        if isinstance(m, WEIGHT_UNITS)
        and not any(p.requires_grad for p in m.parameters())
        and getattr(m, "padding_mode", "zeros") == "zeros"  # padded inside forward otherwise
        and not isinstance(getattr(m, "padding", 0), str)  # "same"/"valid": no explicit sizes
    ]


def input_grads_only(model: nn.Module) -> Callable[[], None]:
    """Make every frozen Conv/ConvTranspose/Linear of ``model`` (all its parameters
    ``requires_grad=False`` now) save no input activation for backward; returns the undo.

    Such a unit still passes input gradients on (to the encoder) but computes no weight
    gradient, the only thing its input is kept for. PReLU/GDN keep what their own backward
    needs (docs/slf.md).
    """
    units = _frozen_units(model)
    for unit in units:
        unit.forward = functools.partial(_InputGradOnly.apply, unit)

    def undo() -> None:
        for unit in units:
            del unit.forward

    return undo


def _loss(paired: Transceiver, batch: dict[str, torch.Tensor], config: SLFConfig) -> torch.Tensor:
    """The training losses (:func:`sdk.train.training_losses`) at a random SNR in range."""
    x = batch["image"]
    lo, hi = config.snr_db
    snr = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device)
    return weighted_sum(training_losses(paired, paired(x, snr), batch), config.loss_weights)


def _saved_bytes(paired: Transceiver, batch: dict[str, torch.Tensor], config: SLFConfig) -> int:
    """Bytes of the tensors autograd keeps for backward in one step (storage-deduplicated)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.random.fork_rng():
        _loss(paired, batch, config)
    params = {p.untyped_storage().data_ptr() for p in paired.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def adapt_slf(
    tx: Transceiver,
    rx: Transceiver,
    train_set: Dataset,
    config: SLFConfig | None = None,
) -> SLFResult:
    """Fine-tune ``tx``'s encoder with ``rx``'s partly frozen decoder on ``train_set``.

    ``tx`` and ``rx`` are left bit-identical; the result holds the update for ``rx``, the
    adapted transmitter model and the accounting (module docstring).
    """
    start = time.perf_counter()
    config = config or SLFConfig()
    config.validate()
    base = getattr(rx, "download_fingerprint", None) or model_fingerprint(rx)
    frozen, tuned = split_layers(decoder_layers(rx), config.freeze, config.freeze_side)
    paired = pair(tx, rx, config.channel)
    torch.manual_seed(config.seed)
    params = _trainable(paired, tuned)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    device = next(paired.parameters()).device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    history: list[dict[str, float]] = []
    paired.train()
    batches = _forever(loader, device)
    first = next(batches)
    restore = input_grads_only(paired)  # frozen layers keep no activation they do not need
    saved = _saved_bytes(paired, first, config)
    tuning = time.perf_counter()
    bar = tqdm(
        range(config.steps),
        desc=f"slf ℓ={config.freeze} {config.freeze_side}",
        disable=not config.progress,
    )
    for step in bar:
        batch = first if step == 0 else next(batches)
        loss = _loss(paired, batch, config)
        if not torch.isfinite(loss):
            raise SLFError(f"loss became {float(loss)} at step {step + 1}; lower the learning rate")
        lr = scheduled_lr(config.lr, config.schedule, step, config.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": float(step + 1), "loss": float(loss.detach()), "lr": lr})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", refresh=False)
    tune_s = time.perf_counter() - tuning
    restore()
    paired.eval()
    for p in paired.parameters():
        p.requires_grad_(True)
    state = dict(paired.named_parameters())
    entries = {
        n: state[n].detach().cpu().numpy().astype(config.value_dtype, copy=True)
        for lay in tuned
        for n in lay.params
    }
    param_bytes = sum(p.numel() * p.element_size() for p in paired.parameters())
    trained_bytes = sum(p.numel() * p.element_size() for p in params)
    accounting: dict[str, Any] = {
        "download_bytes": download_bytes(rx),
        "upload_bytes": int(sum(v.nbytes for v in entries.values())),
        "decoder_bytes": sum(p.numel() * p.element_size() for p in rx.receiver.parameters()),
        "frozen_layers": [lay.name for lay in frozen],
        "tuned_layers": [lay.name for lay in tuned],
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": config.schedule,
        "finetune_s": tune_s,
        "step_ms": 1e3 * tune_s / config.steps,
        "peak_memory_bytes": int(
            torch.cuda.max_memory_allocated(device)
            if cuda
            else param_bytes + 3 * trained_bytes + saved
        ),
        "peak_memory_kind": "cuda_max_allocated" if cuda else "params+grads+adam+saved",
        "final_loss": history[-1]["loss"],
        "snr_db": list(config.snr_db),
        "channel": "bsc" if hasattr(paired, "quantizer") else paired.channel_name,
    }
    update = Update(config.name, base, "", entries, config.freeze, config.freeze_side, accounting)
    if not hasattr(rx, "download_fingerprint"):  # the whole receiver is here: check and time
        adapters = TorchDeltas(clone(rx).cpu())
        applying = time.perf_counter()
        adapters.activate(adapters.load(update))
        accounting["apply_ms"] = 1e3 * (time.perf_counter() - applying)
        update.result_fingerprint = adapters.merge()
    accounting["usable_again_s"] = time.perf_counter() - start
    transmitter = clone(tx)
    transmitter.transmitter = clone(paired.transmitter)
    return SLFResult(update, transmitter, paired, accounting, history)


def _forever(loader: DataLoader, device: torch.device) -> Any:
    """Batches on ``device``, epoch after epoch."""
    while True:
        for batch in loader:
            yield {k: v.to(device) for k, v in batch.items()}


def apply_update(rx: nn.Module, update: Update) -> nn.Module:
    """A copy of ``rx`` with ``update`` baked in, checked against its resulting fingerprint
    (empty when SLF ran on a decoder download: the transmitter could not compute it)."""
    receiver = clone(rx)
    adapters = TorchDeltas(receiver)
    adapters.activate(adapters.load(update))
    if update.result_fingerprint and adapters.merge() != update.result_fingerprint:
        raise SLFError(
            f"applying update {update.name!r} gives a fingerprint other than the "
            f"{update.result_fingerprint[:12]}… it promises; the package is corrupt"
        )
    return receiver


# ------------------------------------------------------------------ receiver side


def rollback_path(checkpoint: str | Path) -> Path:
    """Where :func:`apply_to_checkpoint` keeps the inverse update of ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".rollback" + UPDATE_SUFFIX)


def _carried_config(checkpoint: Path) -> dict[str, Any]:
    config = read_config(checkpoint)
    own = ("format", "format_version", "model", "args", "fingerprint")
    return {k: v for k, v in config.items() if k not in own}


def apply_to_checkpoint(
    checkpoint: str | Path, package: str | Path, out: str | Path | None = None
) -> tuple[Path, Path]:
    """Bake an update into a checkpoint (``out``, default in place); returns (out, rollback).

    Everything is validated (package, base fingerprint, the resulting fingerprint) before
    anything is written; the inverse update (the replaced values, bit-exact) is written
    next to ``out`` first, so :func:`rollback_checkpoint` can restore it.
    """
    source = resolve(checkpoint)
    target = Path(out) if out is not None else source
    if rollback_path(target).exists():  # the way back to the first base must not be lost
        raise SLFError(
            f"{target} already holds an applied update (its rollback package "
            f"{rollback_path(target).name} is there); roll it back first: semedge update "
            f"rollback {target}, or apply to another --out"
        )
    update = load_update(package)
    rx = load_checkpoint(source)
    applied = apply_update(rx, update)  # validates everything before anything is written
    current = dict(rx.named_parameters())
    inverse = Update(
        f"rollback-{update.name}",
        update.result_fingerprint,
        update.base_fingerprint,
        {n: current[n].detach().numpy().copy() for n in update.entries},
        update.freeze,
        update.freeze_side,
        {"rolls_back": update.name},
    )
    undo = save_update(inverse, rollback_path(target))
    extra = _carried_config(source)
    extra["updates"] = [*extra.get("updates", []), update.name]
    save_checkpoint(applied, target, extra=extra)
    return target, undo


def rollback_checkpoint(checkpoint: str | Path, package: str | Path | None = None) -> str:
    """Undo :func:`apply_to_checkpoint` bit-exactly; returns the restored fingerprint."""
    target = resolve(checkpoint)
    path = Path(package) if package is not None else rollback_path(target)
    if not path.is_file():
        raise SLFError(f"{target} has no rollback package {path}; it was not updated by semedge")
    inverse = load_update(path)
    restored = apply_update(load_checkpoint(target), inverse)
    extra = _carried_config(target)
    extra["updates"] = extra.get("updates", [])[:-1]
    save_checkpoint(restored, target, extra=extra)
    if package is None:
        path.unlink()
    return inverse.result_fingerprint


def load_pair(
    tx: str | Path, rx: str | Path, update: str | Path | None = None, channel: str | None = None
) -> Transceiver:
    """The pairing of two checkpoints' encoder and decoder, the receiver updated first."""
    receiver = load_checkpoint(rx)
    if update is not None:
        adapters = TorchDeltas(receiver)
        adapters.activate(adapters.load(update))
    return pair(load_checkpoint(tx), receiver, channel)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the download


def save_download(rx: Transceiver, path: str | Path) -> Path:
    """Write what the transmitter downloads: the decoder (+ VQ codebook), the model's
    config and the receiver's fingerprint — not its encoder (``*.decoder.safetensors``)."""
    from sdk.delta import _write_safetensors

    book = getattr(getattr(rx.receiver, "quantizer", None), "codebook", None)
    tensors = {
        n: t.detach().cpu().numpy()
        for n, t in rx.named_parameters()
        if n.startswith("receiver.") or t is book
    }
    metadata = {
        "format": DOWNLOAD_FORMAT,
        "format_version": "1",
        "model": type(rx).__name__,
        "args": json.dumps(getattr(rx, "config", {})),
        "base_fingerprint": model_fingerprint(rx),
    }
    return _write_safetensors(tensors, metadata, Path(path))


def load_download(path: str | Path) -> Transceiver:
    """The receiver's model rebuilt from a download; its encoder is a placeholder and its
    ``download_fingerprint`` names the real receiver (what an update applies to)."""
    from sdk.delta import _read_safetensors
    from sdk.models.registry import build_model

    if not Path(path).is_file():
        raise SLFError(f"no such download {path}; the receiver writes it with --save-download")
    metadata, tensors = _read_safetensors(Path(path))
    if not metadata or metadata.get("format") != DOWNLOAD_FORMAT:
        raise SLFError(f"{path} is not a decoder download; write one with: --save-download")
    if metadata.get("format_version") != "1":
        raise SLFError(
            f"{path}: download format_version {metadata.get('format_version')!r}"
            " is not supported; upgrade semedge"
        )
    model = build_model(metadata["model"], **json.loads(metadata["args"]))
    params = dict(model.named_parameters())
    wanted = {n for n in params if n.startswith("receiver.")} | {n for n in tensors if n in params}
    shapes_fit = all(tuple(params[n].shape) == v.shape for n, v in tensors.items() if n in params)
    if set(tensors) != wanted or not shapes_fit:
        raise SLFError(f"{path} does not hold exactly the decoder of {metadata['model']}")
    with torch.no_grad():
        for name, values in tensors.items():
            params[name].copy_(torch.from_numpy(values))
    model.__dict__["download_fingerprint"] = metadata["base_fingerprint"]
    return model.eval()  # type: ignore[return-value]
