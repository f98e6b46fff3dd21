"""ZFDA: train sparse additive modifications (SAM) of a frozen model for one domain.

For every adapted weight ``W0`` (frozen) there are trainable scores ``S`` and values
``V``; the forward pass uses ``W0 + m * V`` with ``m = top-k(S)`` (a binary mask of the
``k`` highest scores). The mask is not differentiable, so the straight-through
estimator passes ``dL/dm = dL/dW * V`` to ``S`` unchanged; ``V`` gets ``m * dL/dW``.
The result is a :class:`sdk.delta.Delta` holding ``V`` at the mask positions, which
:class:`sdk.delta.TorchDeltas` switches on and off with bit-exact restoration.

Choices where the seed (arXiv 2411.19385) is vague, all parameters of :class:`ZFDAConfig`:

* Loss: the losses the model was trained with (:func:`sdk.train.training_losses`: every
  task output that has a target in the batch, plus the model's regulariser) weighted by
  ``loss_weights`` (``semedge adapt zfda`` passes the checkpoint's training weights). A
  domain shift does not remove labels, so a classifier head keeps being supervised.
* Adapted layers: the ``weight`` of every Conv*/ConvTranspose*/Linear module on the
  chosen ``side`` that the loss reaches (biases and norms stay frozen). A weight the
  loss does not reach, e.g. a classifier head when the data has no labels, gets no
  budget: nothing could train it.
* Layer budget ``k_l`` proportional to ``d_in + d_out``, where ``d_out`` is the output
  channel/feature count and ``d_in = weight.numel() / d_out`` (the fan-in of one output:
  ``c_in/groups * kernel area`` for convolutions); it sums exactly to ``round(γ·P)``
  (``P`` = adapted weights), is capped by the layer size, and capped layers' leftovers
  are redistributed proportionally (largest-remainder rounding).
  ``budget_rule="uniform"`` gives every layer the same count, ``"size"`` the same density.
* Scores start at ``|dL/dW0|`` averaged over a few in-domain batches (``score_init="grad"``:
  with ``V = 0`` the straight-through gradient of ``S`` is zero, so a random start would
  keep a random mask); ``"random"`` and ``"weight"`` (``|W0|``) are the alternatives.
  Scores use plain SGD with ``lr_scores`` (paper: 1), values Adam (``values_optimizer``,
  or SGD with momentum 0.9) with ``lr_values`` (paper: 1e-4).
* ``mask_update="ste"`` re-selects the top-k mask before every step (the paper);
  ``"periodic"`` only every ``mask_period`` steps (the scores still learn in between),
  ``"fixed"`` keeps the initial mask. The delta holds the values at the final mask.
* The effective weights are passed with :func:`torch.func.functional_call`, so the
  model itself is never modified during training.
* Values are stored as float16 by default (``value_dtype``); the fp16 rounding error
  is reported in ``docs/zfda.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sdk.delta import Delta, DeltaEntry
from sdk.errors import SemedgeError
from sdk.fingerprint import model_fingerprint
from sdk.train import DEFAULT_WEIGHTS, training_losses, weighted_sum

SIDES = ("encoder", "decoder", "both")
SCORE_INITS = ("grad", "random", "weight")
BUDGET_RULES = ("din+dout", "uniform", "size")
MASK_UPDATES = ("ste", "periodic", "fixed")
VALUE_OPTIMIZERS = ("adam", "sgd")
SPARSITY_RANGE = (1e-4, 0.1)
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ADAPTABLE_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ZFDAError(SemedgeError):
    """An invalid ZFDA setting (sparsity, side) or a model with nothing to adapt."""


@dataclass
class ZFDAConfig:
    """SAM training settings.

    γ, side, α_s and the d_in + d_out budget follow the paper; values lr 1e-2 for 12
    epochs (paper: 1e-4 for 30), batch 32 and ``|W0|`` scores are what the factor study in
    ``docs/zfda_repro.md`` found best within ~4 min per 1,000 images on a loaded 2-core CPU.
    """

    sparsity: float = 0.01
    side: str = "decoder"
    epochs: int = 12
    lr_scores: float = 1.0
    lr_values: float = 1e-2
    batch_size: int = 32
    snr_db: tuple[float, float] = (0.0, 20.0)
    score_init: str = "weight"
    score_init_batches: int = 8
    budget_rule: str = "din+dout"
    mask_update: str = "ste"
    mask_period: int = 50
    values_optimizer: str = "adam"
    value_dtype: str = "float16"
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    progress: bool = True

    def validate(self) -> None:
        lo, hi = SPARSITY_RANGE
        if not lo <= self.sparsity <= hi:
            raise ZFDAError(
                f"sparsity {self.sparsity:g} is outside [{lo:g}, {hi:g}] "
                "(0.01 % to 10 % of the adapted weights); e.g. --sparsity 0.01"
            )
        if self.side not in SIDES:
            raise ZFDAError(f"side {self.side!r} must be one of {', '.join(SIDES)}")
        for option, allowed in (
            ("score_init", SCORE_INITS),
            ("budget_rule", BUDGET_RULES),
            ("mask_update", MASK_UPDATES),
            ("values_optimizer", VALUE_OPTIMIZERS),
        ):
            if getattr(self, option) not in allowed:
                raise ZFDAError(
                    f"{option} {getattr(self, option)!r} must be one of {', '.join(allowed)}"
                )
        if self.value_dtype not in ("float16", "float32"):
            raise ZFDAError(f"value_dtype {self.value_dtype!r} must be float16 or float32")
        if self.epochs < 1 or self.batch_size < 1 or self.mask_period < 1:
            raise ZFDAError("epochs, batch_size and mask_period must be at least 1")


def adaptable_weights(model: nn.Module, side: str) -> dict[str, tuple[int, int]]:
    """Full parameter name -> ``(d_in, d_out)`` of every adapted weight on ``side``.

    A model without ``sides()`` (not a :class:`~sdk.models.base.Transceiver`) is adapted whole.
    """
    if side not in SIDES:
        raise ZFDAError(f"side {side!r} must be one of {', '.join(SIDES)}")
    sides_of = getattr(model, "sides", None)
    sides: dict[str, nn.Module] = (
        sides_of() if callable(sides_of) else {"encoder": model, "decoder": model}
    )
    chosen = [sides[s] for s in ("encoder", "decoder") if side in (s, "both")]
    roots = {id(m) for m in chosen}
    prefixes = [name for name, m in model.named_modules() if id(m) in roots]
    dims: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if not any(name == p or name.startswith(p + ".") or p == "" for p in prefixes):
            continue
        if isinstance(module, ADAPTABLE):
            d_out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        elif isinstance(module, ADAPTABLE_TRANSPOSED):
            d_out = module.out_channels
        else:
            continue
        dims[f"{name}.weight" if name else "weight"] = (module.weight.numel() // d_out, d_out)
    if not dims:
        raise ZFDAError(f"the {side} side of {type(model).__name__} has no Conv/Linear weights")
    return dims


def allocate_budget(
    sizes: Mapping[str, int], weights: Mapping[str, float], sparsity: float
) -> dict[str, int]:
    """Split ``round(sparsity * sum(sizes))`` over layers ∝ ``weights``, capped by ``sizes``.

    Layers whose proportional share exceeds their size are filled completely and their
    leftover is shared among the others; integer rounding is by largest remainder, so
    the result sums exactly to the total.
    """
    total = min(round(sparsity * sum(sizes.values())), sum(sizes.values()))
    budget: dict[str, int] = {}
    free = dict(weights)
    remaining = total
    while True:
        norm = sum(free.values())
        capped = [n for n, w in free.items() if norm and remaining * w / norm >= sizes[n]]
        if not capped:
            break
        for n in capped:
            budget[n] = sizes[n]
            remaining -= sizes[n]
            del free[n]
    norm = sum(free.values())
    shares = {n: remaining * w / norm if norm else 0.0 for n, w in free.items()}
    for n, s in shares.items():
        budget[n] = math.floor(s)
    leftover = remaining - sum(budget[n] for n in free)
    for n in sorted(free, key=lambda n: shares[n] - budget[n], reverse=True)[:leftover]:
        budget[n] += 1
    return {n: budget[n] for n in sizes}


def budget_weights(
    dims: Mapping[str, tuple[int, int]], sizes: Mapping[str, int], rule: str
) -> dict[str, float]:
    """Per-layer weights for :func:`allocate_budget` under ``rule`` (see :data:`BUDGET_RULES`).

    ``din+dout`` (the paper) favours small layers, ``size`` gives every layer density γ,
    ``uniform`` the same count (capped by the layer size).
    """
    if rule not in BUDGET_RULES:
        raise ZFDAError(f"budget_rule {rule!r} must be one of {', '.join(BUDGET_RULES)}")
    if rule == "size":
        return {n: float(sizes[n]) for n in sizes}
    if rule == "uniform":
        return {n: 1.0 for n in sizes}
    return {n: float(sum(dims[n])) for n in sizes}


class _SAM(nn.Module):
    """Scores and values for each adapted weight, and the masked effective weights."""

    def __init__(self, model: nn.Module, budget: Mapping[str, int]) -> None:
        super().__init__()
        params = dict(model.named_parameters())
        self.names = [n for n, k in budget.items() if k > 0]
        self.k = dict(budget)
        self.base = {n: params[n].detach() for n in self.names}
        self.scores = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(params[n].numel(), device=params[n].device))
                for n in self.names
            ]
        )
        self.values = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(params[n].numel(), device=params[n].device))
                for n in self.names
            ]
        )
        self.hard: list[torch.Tensor] = []

    def select(self) -> None:
        """Re-select each layer's binary mask: the top-k of its current scores."""
        self.hard = []
        for name, s in zip(self.names, self.scores, strict=True):
            hard = torch.zeros_like(s)
            hard[torch.topk(s.detach(), self.k[name], sorted=False).indices] = 1.0
            self.hard.append(hard)

    def masks(self) -> list[torch.Tensor]:
        """The selected binary masks with a straight-through gradient to the scores."""
        if not self.hard:
            self.select()
        return [h + (s - s.detach()) for h, s in zip(self.hard, self.scores, strict=True)]

    def weights(self) -> dict[str, torch.Tensor]:
        return {
            n: self.base[n] + (m * v).view_as(self.base[n])
            for n, m, v in zip(self.names, self.masks(), self.values, strict=True)
        }


def _batches(dataset: Dataset, config: ZFDAConfig) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)


def _loss(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    config: ZFDAConfig,
) -> torch.Tensor:
    device = next(model.parameters()).device  # CPU or a GPU
    batch = {k: v.to(device) for k, v in batch.items()}
    x = batch["image"]
    lo, hi = config.snr_db
    snr = lo + (hi - lo) * torch.rand(x.shape[0], device=device)
    outputs = torch.func.functional_call(model, weights, (x, snr))
    return weighted_sum(training_losses(model, outputs, batch), config.loss_weights)


def _gradient_magnitudes(
    model: nn.Module, names: list[str], loader: DataLoader, config: ZFDAConfig
) -> dict[str, torch.Tensor]:
    """Mean flat ``|dL/dW0|`` of each named weight that the loss reaches.

    Over ``score_init_batches`` batches (one when the scores start at random: then only
    which weights the loss reaches is needed). Unreached weights are left out.
    """
    params = dict(model.named_parameters())
    base = {n: params[n].detach().clone().requires_grad_(True) for n in names}
    batches = config.score_init_batches if config.score_init == "grad" else 1
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in loader:
        if count == batches:
            break
        loss = _loss(model, dict(base), batch, config)
        grads = torch.autograd.grad(loss, list(base.values()), allow_unused=True)
        for name, grad in zip(base, grads, strict=True):
            if grad is not None:
                sums[name] = sums.get(name, 0) + grad.abs().flatten()
        count += 1
    return {n: g / max(count, 1) for n, g in sums.items()}


def _init_scores(sam: _SAM, magnitudes: Mapping[str, torch.Tensor], config: ZFDAConfig) -> None:
    with torch.no_grad():
        for name, s in zip(sam.names, sam.scores, strict=True):
            if config.score_init == "random":
                nn.init.uniform_(s, 0.0, 1.0)
            elif config.score_init == "weight":
                s.copy_(sam.base[name].abs().flatten())
            else:
                s.copy_(magnitudes[name])


def adapt_zfda(
    model: nn.Module,
    train_set: Dataset,
    domain: str,
    config: ZFDAConfig | None = None,
    history: list[dict[str, float]] | None = None,
) -> Delta:
    """Train SAM on ``train_set`` (images already in ``domain``) and return the delta.

    ``model`` is left bit-identical (it is only read through ``functional_call``). If
    ``history`` is given, one row per epoch (mean loss, mask changes) is appended to it.
    """
    config = config or ZFDAConfig()
    config.validate()
    fingerprint = model_fingerprint(model)
    dims = adaptable_weights(model, config.side)
    params = dict(model.named_parameters())
    torch.manual_seed(config.seed)
    was_training = model.training
    flags = {n: p.requires_grad for n, p in params.items()}
    model.eval()
    for p in params.values():
        p.requires_grad_(False)
    try:
        loader = _batches(train_set, config)
        magnitudes = _gradient_magnitudes(model, list(dims), loader, config)
        if not magnitudes:
            raise ZFDAError(
                f"no task loss reaches the {config.side} side of {type(model).__name__}; "
                "adapt another --side"
            )
        sizes = {n: params[n].numel() for n in dims if n in magnitudes}
        weights = budget_weights({n: dims[n] for n in sizes}, sizes, config.budget_rule)
        sam = _SAM(model, allocate_budget(sizes, weights, config.sparsity))
        _init_scores(sam, magnitudes, config)
        opt_s = torch.optim.SGD(sam.scores.parameters(), lr=config.lr_scores)
        opt_v = _values_optimizer(sam, config)
        sam.select()
        previous = [m.detach().clone() for m in sam.masks()]
        step = 0
        bar = tqdm(range(config.epochs), desc=f"zfda {domain}", disable=not config.progress)
        for epoch in bar:
            total, seen = 0.0, 0
            for batch in loader:
                if _reselect(config, step):
                    sam.select()
                step += 1
                loss = _loss(model, sam.weights(), batch, config)
                opt_s.zero_grad(set_to_none=True)
                opt_v.zero_grad(set_to_none=True)
                loss.backward()
                opt_s.step()
                opt_v.step()
                total += float(loss.detach()) * batch["image"].shape[0]
                seen += batch["image"].shape[0]
            masks = [m.detach() for m in sam.masks()]
            changed = sum(int((a != b).sum()) // 2 for a, b in zip(masks, previous, strict=True))
            previous = masks
            bar.set_postfix(loss=f"{total / seen:.5f}", mask_moves=changed)
            if history is not None:
                history.append({"epoch": epoch + 1, "loss": total / seen, "mask_moves": changed})
        if config.mask_update == "ste":
            sam.select()  # the scores' last step may still move the mask
        delta = _to_delta(sam, params, domain, fingerprint, config)
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    return delta


def _values_optimizer(sam: _SAM, config: ZFDAConfig) -> torch.optim.Optimizer:
    if config.values_optimizer == "sgd":
        return torch.optim.SGD(sam.values.parameters(), lr=config.lr_values, momentum=0.9)
    return torch.optim.Adam(sam.values.parameters(), lr=config.lr_values)


def _reselect(config: ZFDAConfig, step: int) -> bool:
    """Whether the mask is re-selected before training step ``step`` (0 is the first)."""
    if config.mask_update == "ste":
        return True
    return config.mask_update == "periodic" and step > 0 and step % config.mask_period == 0


def _to_delta(
    sam: _SAM,
    params: Mapping[str, nn.Parameter],
    domain: str,
    fingerprint: str,
    config: ZFDAConfig,
) -> Delta:
    entries = {}
    with torch.no_grad():
        for name, hard, v in zip(sam.names, sam.hard, sam.values, strict=True):
            idx = torch.nonzero(hard).flatten()
            entries[name] = DeltaEntry(
                idx.cpu().numpy().astype(np.int64),
                v[idx].cpu().numpy().astype(config.value_dtype),
                tuple(params[name].shape),
            )
    extra = {
        "side": config.side,
        "epochs": str(config.epochs),
        "lr_scores": repr(config.lr_scores),
        "lr_values": repr(config.lr_values),
        "score_init": config.score_init,
        "budget_rule": config.budget_rule,
        "mask_update": config.mask_update,
        "values_optimizer": config.values_optimizer,
    }
    return Delta(domain, fingerprint, config.sparsity, entries, extra=extra)
