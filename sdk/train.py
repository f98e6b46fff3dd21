"""Training over a range of channel SNRs, resumable, seeded, single-process or torchrun.

Every step draws one SNR per sample, uniformly in ``config.snr_db`` (dB), so one
model serves the whole range. The loss is :func:`task_loss` over whatever task
outputs the model produces (see ``docs/training.md``).

Output folder layout (``out_dir``):

* ``checkpoint/``: the model after the last finished epoch, a normal checkpoint
  (:mod:`sdk.checkpoint`) that ``semedge eval`` and the exporters read;
* ``train_state.pt``: model and optimizer state, finished epochs, history and the
  config, written atomically (resuming reads only this file, so a crash between the
  two writes cannot mix epochs).

Resuming is exact: data order comes from ``DistributedSampler(seed).set_epoch(e)``
and the global torch RNG (SNR draws, channel noise) is re-seeded at the start of
every epoch from ``(seed, epoch, rank)``, so the RNG state at an epoch boundary is a
function of those numbers and a resumed run repeats an uninterrupted one bit for bit.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank sees its shard of
the data, and only rank 0 writes files or shows the progress bar.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from sdk.checkpoint import RUN_CHECKPOINT, read_config, save_checkpoint
from sdk.data import DATASETS, ImageDataset
from sdk.errors import SemedgeError
from sdk.files import atomic_file
from sdk.models.channels import check_snr
from sdk.models.registry import build_model, model_class

STATE_FILE = "train_state.pt"
DEFAULT_WEIGHTS = {"recon": 1.0, "logits": 0.05, "mask_logits": 1.0, "aux": 1.0}
"""Task loss weights when none are given. ``logits`` is 1/20 because a pixel MSE is ~50x
smaller than a 10-class cross-entropy: at 1 each, MNIST's default DeepJSCC (recon +
logits) reached 13.3 dB after 3 epochs, barely above the mean image (11.6 dB); at 0.05
it reaches 16.8 dB with 53 % accuracy (recon only: 19.0 dB). Table in docs/training.md."""
SCHEDULES = ("cosine", "constant")


def scheduled_lr(lr: float, schedule: str, t: int, total: int) -> float:
    """The learning rate at (0-based) ``t`` of ``total`` epochs or steps under ``schedule``:
    ``constant``, or ``cosine`` decay from ``lr`` towards 0."""
    if schedule == "constant" or total <= 1:
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * t / total))


class TrainError(SemedgeError):
    """A bad training configuration or an output folder that cannot be (re)used."""


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (all JSON-serialisable; stored with each run).

    ``snr_db``: per-sample SNRs are drawn uniformly from this ``(lo, hi)`` range.
    ``loss_weights``: weight per task loss (``recon`` MSE, ``logits`` cross-entropy,
    ``mask_logits`` BCE) and ``aux`` for a model's own regulariser (VQ commitment).
    ``data``: the dataset's name, recorded so ``eval`` and ``adapt`` default to it
    (:func:`train` fills it in from a dataset of :func:`sdk.data.load_dataset`).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    snr_db: tuple[float, float] = (0.0, 20.0)
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    schedule: str = "cosine"
    data: str | None = None
    progress: bool = True

    def validate(self) -> None:
        lo, hi = self.snr_db
        check_snr(torch.tensor([lo, hi]))
        if lo > hi:
            raise TrainError(f"SNR range {lo},{hi} is reversed; give it as low,high in dB")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise TrainError(
                f"need epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, "
                f"{self.batch_size}, {self.lr}"
            )
        if self.schedule not in SCHEDULES:
            raise TrainError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        unknown = set(self.loss_weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise TrainError(
                f"unknown loss weight(s) {sorted(unknown)}; known: {', '.join(DEFAULT_WEIGHTS)}"
            )

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: a pure function, so resuming is exact."""
        return scheduled_lr(self.lr, self.schedule, epoch, self.epochs)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["snr_db"] = list(self.snr_db)
        data.pop("progress")
        return data


def task_losses(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One loss per task output that has a target in ``batch``.

    ``recon`` -> MSE against ``batch["image"]``; ``logits`` -> cross-entropy against
    ``batch["label"]``; ``mask_logits`` -> BCE-with-logits against ``batch["mask"]``.
    """
    losses = {}
    if "recon" in outputs:
        losses["recon"] = F.mse_loss(outputs["recon"], batch["image"])
    if "logits" in outputs and "label" in batch:
        losses["logits"] = F.cross_entropy(outputs["logits"], batch["label"])
    if "mask_logits" in outputs and "mask" in batch:
        losses["mask_logits"] = F.binary_cross_entropy_with_logits(
            outputs["mask_logits"], batch["mask"]
        )
    if not losses:
        raise TrainError(
            f"no task loss: outputs {sorted(outputs)} have no matching target in the batch "
            f"{sorted(batch)}; use a dataset with labels/masks or a model with a recon output"
        )
    return losses


def task_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Weighted sum of :func:`task_losses` (weights default to 1 per task)."""
    return weighted_sum(task_losses(outputs, batch), weights)


def weighted_sum(
    parts: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None
) -> torch.Tensor:
    """``sum(weights[k] * parts[k])``; a task missing from ``weights`` counts 1."""
    w = DEFAULT_WEIGHTS if weights is None else weights
    return torch.stack([w.get(k, 1.0) * v for k, v in parts.items()]).sum()


def training_losses(
    model: nn.Module, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Everything training minimises: :func:`task_losses` plus the model's ``aux`` regulariser.

    Call it right after ``outputs = model(...)`` (the regulariser is the one of that pass).
    Adaptation (ZFDA, SLF) uses the same parts, so it keeps every task the model learnt.
    """
    parts = task_losses(outputs, batch)
    aux = aux_loss(model)
    if aux is not None:
        parts["aux"] = aux
    return parts


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The regulariser a model computed in its last forward pass, if it has one.

    A model (e.g. the VQ transceiver's commitment loss) exposes it as an ``aux_loss``
    tensor attribute set during ``forward``, or an ``aux_loss()`` method.
    """
    aux = getattr(model, "aux_loss", None)
    if callable(aux):
        aux = aux()
    return aux if isinstance(aux, torch.Tensor) else None


def default_threads() -> int:
    """CPU threads for a training command: torch's default when idle, 1 when busy.

    Torch's OpenMP workers spin-wait; on the shared 2-core build machine, with other
    jobs already filling the cores, a 2-thread DeepJSCC step measured 5-11x slower than
    a 1-thread step (``tools/bench_train_threads.py``). "Busy" = 1-minute load average
    at least the core count.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= cores
    except OSError:  # not available on this platform
        busy = False
    return 1 if busy else torch.get_num_threads()


def build_for_data(name: str, args: Mapping[str, Any], dataset: ImageDataset) -> nn.Module:
    """Model ``name`` built with ``args``, sized for ``dataset`` where ``args`` is silent.

    ``in_channels``, ``image_size`` and ``pixel_mean`` come from the images, ``num_classes``
    from the labels (if the dataset has any), for each of them that the model's constructor
    takes.
    """
    takes = inspect.signature(model_class(name)).parameters
    c, h, _ = dataset.image_shape
    filled: dict[str, Any] = {
        "in_channels": c,
        "image_size": h,
        # kept off 0 and 1, where the head's starting logit would be infinite
        "pixel_mean": min(max(round(float(dataset.images.mean()), 4), 0.01), 0.99),
    }
    if dataset.labels is not None:
        filled["num_classes"] = dataset.num_classes
    return build_model(name, **{**{k: v for k, v in filled.items() if k in takes}, **args})


FOLDER_SHAPE = (3, 32, 32)
"""The image shape a folder of images is read at when ``--arg`` does not say."""


def folder_shape(args: Mapping[str, Any]) -> tuple[int, int, int]:
    """The ``[C, H, W]`` to read a folder of the user's images at, for a model built with
    ``args`` (its ``in_channels`` and ``image_size``, else :data:`FOLDER_SHAPE`)."""
    channels = int(args.get("in_channels", FOLDER_SHAPE[0]))
    size = int(args.get("image_size", FOLDER_SHAPE[1]))
    return (channels, size, size)


def train(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    val_set: Dataset | None = None,
    resume: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns one history row per epoch (all epochs so far).

    With ``out_dir`` a checkpoint and training state are written after each epoch; a
    folder that already holds a run of the same model and config is continued when
    ``resume`` is true (and refused otherwise, so nothing is overwritten by accident).
    """
    config = config or TrainConfig()
    config.validate()
    if config.data is None and isinstance(train_set, ImageDataset) and train_set.name in DATASETS:
        config = dataclasses.replace(config, data=train_set.name)
    world, rank = _distributed()
    device = _device(rank)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        try:  # fail now, not after the first epoch
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainError(
                f"cannot create the output folder {out} ({exc.strerror}); choose another --out"
            ) from None
        history = _restore(out, model, optimizer, config, resume)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler: DistributedSampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler)
    show = config.progress and rank == 0
    for epoch in range(len(history), config.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(config.seed, epoch, rank))
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        net.train()
        totals = _run_epoch(net, model, loader, optimizer, config, device, epoch, show)
        row = {"epoch": float(epoch + 1), **_mean_across_ranks(totals, world)}
        if val_set is not None:
            row["val_loss"] = validation_loss(model, val_set, config, device)
        history.append(row)
        if out is not None and rank == 0:
            _save(out, model, optimizer, config, history)
        if world > 1:
            torch.distributed.barrier()
    model.eval()
    return history


def validation_loss(
    model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device | None = None
) -> float:
    """Mean task loss at the middle of the SNR range with fixed noise (comparable by epoch)."""
    device = device or torch.device("cpu")
    snr = sum(config.snr_db) / 2
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for batch in DataLoader(dataset, batch_size=256):
            batch = {k: v.to(device) for k, v in batch.items()}
            n = batch["image"].shape[0]
            total += float(task_loss(model(batch["image"], snr), batch, config.loss_weights)) * n
            count += n
    return total / max(count, 1)


# --- one epoch ---------------------------------------------------------------------


def _run_epoch(
    net: nn.Module,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    show: bool,
) -> dict[str, float]:
    lo, hi = config.snr_db
    sums: dict[str, float] = {}
    seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False)
    for batch in bar:
        batch = {k: v.to(device) for k, v in batch.items()}
        x = batch["image"]
        snr = lo + (hi - lo) * torch.rand(x.shape[0], device=device)
        outputs = net(x, snr)
        parts = training_losses(model, outputs, batch)
        loss = weighted_sum(parts, config.loss_weights)
        if not torch.isfinite(loss):
            raise TrainError(
                f"loss became {float(loss)} in epoch {epoch + 1}; lower the learning rate (--lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = x.shape[0]
        seen += n
        for k, v in {"loss": loss, **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", refresh=False)
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2**63)


# --- distributed -------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    """``(world_size, rank)``; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1:
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _device(rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % torch.cuda.device_count())


def _mean_across_ranks(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return values
    keys = list(values)  # same order on every rank: the same code produced it
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t, strict=True)}


# --- output folder ---------------------------------------------------------------


def _restore(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    resume: bool,
) -> list[dict[str, float]]:
    """Load a previous run from ``out`` into ``model``/``optimizer``; its history, or []."""
    state_path = out / STATE_FILE
    if not state_path.exists():
        return []
    if not resume:
        raise TrainError(
            f"{out} already holds a training run; continue it with --resume or choose another --out"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/IO failure means the same thing to the user
        raise TrainError(
            f"{state_path} is unreadable ({exc}); delete {out} to start over"
        ) from None
    saved, wanted = dict(state["config"]), config.to_json()
    saved.pop("epochs")  # a finished run may be extended to more epochs
    model_saved, model_wanted = state["model"], _model_identity(model)
    same_model = model_saved["class"] == model_wanted["class"] and _recorded_match(
        model_saved["args"], model_wanted["args"]
    )
    if not (same_model and _recorded_match(saved, wanted)):
        differ = _differences(model_saved, model_wanted, saved, wanted)
        raise TrainError(
            f"{out} holds a run with other settings: {'; '.join(differ)}; resume with the "
            "run's settings, or choose another --out"
        )
    model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    return [dict(row) for row in state["history"]]


# how ``semedge train`` spells each recorded setting
_FLAGS = {"snr_db": "--snr", "loss_weights": "--weight", "batch_size": "--batch-size"}


def _differences(
    model_saved: Mapping[str, Any],
    model_wanted: Mapping[str, Any],
    saved: Mapping[str, Any],
    wanted: Mapping[str, Any],
) -> list[str]:
    """``--lr 0.001 (now 0.01)``-style notes on every recorded setting that differs."""
    notes = []
    if model_saved["class"] != model_wanted["class"]:
        notes.append(f"--model {model_saved['class']} (now {model_wanted['class']})")
    for key, value in model_saved["args"].items():
        if model_wanted["args"].get(key, "unset") != value:
            notes.append(f"--arg {key}={value} (now {model_wanted['args'].get(key, 'unset')})")
    for key, value in saved.items():
        if wanted.get(key, "unset") != value:
            flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
            notes.append(f"{flag} {_plain(value)} (now {_plain(wanted.get(key, 'unset'))})")
    return notes


def _plain(value: Any) -> str:
    """A recorded setting as it is typed: ``0,20`` for an SNR range, ``recon=1`` for weights."""
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    return str(value)


def _recorded_match(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Every setting the saved run recorded equals the wanted one. Settings added by later
    versions (``data``, ``pixel_mean``) are absent from older runs and not compared, so
    those runs stay resumable; ``pixel_mean`` only sets the initial weights anyway."""
    return all(key in wanted and wanted[key] == value for key, value in saved.items())


def _save(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    history: list[dict[str, float]],
) -> None:
    """The state file (atomic rename), then the checkpoint (atomic directory swap)."""
    epoch = len(history)
    state = {
        "epoch": epoch,
        "history": history,
        "config": config.to_json(),
        "model": _model_identity(model),
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    with atomic_file(out / STATE_FILE) as tmp:
        torch.save(state, tmp)
    save_checkpoint(model, out / RUN_CHECKPOINT, extra={"epoch": epoch, "train": config.to_json()})


def _model_identity(model: nn.Module) -> dict[str, Any]:
    return {"class": type(model).__name__, "args": getattr(model, "config", {})}


def dataset_of(checkpoint: str | Path, requested: str | None) -> str:
    """``requested``, else the dataset ``checkpoint`` was trained on, else ``patches``."""
    if requested:
        return requested
    trained = read_config(checkpoint).get("train", {})
    return str(trained.get("data") or "patches")


def loss_weights_of(checkpoint: str | Path) -> dict[str, float]:
    """The task loss weights ``checkpoint`` was trained with (the defaults if not recorded)."""
    trained = read_config(checkpoint).get("train", {})
    return {**DEFAULT_WEIGHTS, **trained.get("loss_weights", {})}


def history_table(history: list[dict[str, float]]) -> str:
    """The per-epoch losses as aligned text (what ``semedge train`` prints)."""
    if not history:
        return "(no epochs)"
    keys = ["epoch"] + [k for k in history[-1] if k != "epoch"]
    lines = ["  ".join(f"{k:>11s}" for k in keys)]
    for row in history:
        cells = [f"{int(row['epoch']):>11d}"]
        cells += [f"{row.get(k, math.nan):>11.5f}" for k in keys[1:]]
        lines.append("  ".join(cells))
    return "\n".join(lines)
