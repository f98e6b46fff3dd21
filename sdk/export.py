"""torch -> ONNX: the transmitter, the receiver, or the whole chain of a transceiver.

Choices (see ``docs/deploy.md``):

* **Exporter**: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. In
  torch 2.13 the dynamo exporter also works on these models, but it takes ~7 s instead
  of ~0.5 s per export, only emits opset 18 (its down-conversion to 17 fails on
  ``Pad``) and renames/deduplicates folded weights, which breaks delta targets
  (a delta names parameters; the ONNX must keep those names).
* **I/O names** come from the task contract: the transmitter maps ``image`` to
  ``symbols`` (``[B, 2k]``), the receiver maps ``symbols`` to the model's task keys
  (``recon``, ``logits``, ...), the chain maps ``image`` to the task keys. Batch is
  dynamic everywhere; opset defaults to 17.
* **The chain has no channel** (noiseless): it exists to compare backends, and a
  random channel would make two runs differ. Channels run between the devices.
* **Delta targets** (``delta_targets``: ``encoder``/``decoder``, a glob over parameter
  names, or a ``*.delta.safetensors`` file whose tensors to expose) become graph
  inputs that keep their initializer as default value ("overridable initializers";
  equal-valued parameters are not merged in this mode):
  the file still runs on its own with the base weights, and a runtime switches
  domains by feeding other buffers. Parameter names are the model's own
  (``receiver.features.0.0.weight``), the names deltas use. Constant folding is off
  in this mode so no target is folded away.
* **Top-K memory** exports from standard ops (``TopK``, ``GatherElements``, ``Softmax``)
  by default; ``topk_plugin=True`` emits one ``TopKMemory`` node per call (domain
  :data:`PLUGIN_DOMAIN`, attributes ``topk``, ``plugin_version="1"``,
  ``plugin_namespace="semedge"``) that TensorRT's ONNX parser resolves to the plugin.

The ONNX ``metadata_props`` carry the model class, config, part, tasks, base
fingerprint and delta targets, so ``semedge build model.onnx`` needs nothing else.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import io
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from sdk.errors import SemedgeError
from sdk.files import atomic_file
from sdk.fingerprint import model_fingerprint
from sdk.models.base import Transceiver
from sdk.onnx_io import META_PREFIX

PARTS = ("transmitter", "receiver", "chain")
IMAGE, SYMBOLS = "image", "symbols"
SIDES = {"encoder": "transmitter.*", "decoder": "receiver.*"}
PLUGIN_OP, PLUGIN_DOMAIN = "TopKMemory", "semedge"
DEFAULT_OPSET = 17


class ExportError(SemedgeError):
    """A model, part or delta-target selection that cannot be exported."""


class _Part(nn.Module):
    """One part of a transceiver with a tuple output in contract order (what ONNX needs)."""

    def __init__(self, model: Transceiver, part: str) -> None:
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.part == "transmitter":
            return (self.model.transmitter(x),)
        z = x if self.part == "receiver" else self.model.transmitter(x)
        out = self.model.receiver(z)
        return tuple(out[k] for k in self.model.tasks)


def part_io(model: Transceiver, part: str) -> tuple[list[str], list[str], torch.Tensor]:
    """Input names, output names and an example input for ``part`` of ``model``."""
    if part not in PARTS:
        raise ExportError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    image = torch.rand(2, *model.input_shape)
    if part == "receiver":
        with torch.no_grad():
            symbols = model.transmitter(image)
        return [SYMBOLS], list(model.tasks), symbols
    outputs = [SYMBOLS] if part == "transmitter" else list(model.tasks)
    return [IMAGE], outputs, image


def select_targets(model: Transceiver, spec: str | Sequence[str] | None, part: str) -> list[str]:
    """Parameter names for a delta-target spec, restricted to what ``part`` contains.

    ``spec``: ``encoder``/``decoder`` (a whole side), a ``*.delta.safetensors`` file
    (exactly the tensors that delta touches), comma-separated globs over parameter
    names, or a list of names.
    """
    if not spec:
        return []
    names = [n for n, _ in model.named_parameters()]
    if isinstance(spec, str) and spec.endswith(".safetensors"):
        from sdk.delta import load_delta

        patterns = sorted(load_delta(spec).entries)
    elif isinstance(spec, str):
        patterns = [SIDES.get(p.strip(), p.strip()) for p in spec.split(",") if p.strip()]
    else:
        patterns = list(spec)
    chosen = [n for n in names if any(n == p or fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise ExportError(
            f"delta targets {spec!r} match no parameter; use encoder, decoder or a glob such as "
            f"'receiver.features.*' (e.g. {names[0]})"
        )
    inside = {"transmitter": ("transmitter.",), "receiver": ("receiver.",)}.get(
        part, ("transmitter.", "receiver.")
    )
    outside = [n for n in chosen if not n.startswith(inside)]
    if outside:
        raise ExportError(
            f"delta target {outside[0]} is not part of the {part}; export the other part "
            "or choose targets on this side"
        )
    return chosen


@contextlib.contextmanager
def _topk_plugin() -> Iterator[None]:
    """Route :func:`sdk.models.kem.topk_attention` through a function exported as one node."""
    try:
        kem = importlib.import_module("sdk.models.kem")
    except ImportError:
        yield
        return
    original = kem.__dict__["topk_attention"]
    _TopKMemory.reference = staticmethod(original)
    kem.__dict__["topk_attention"] = topk_memory_node
    try:
        yield
    finally:
        kem.__dict__["topk_attention"] = original


class _TopKMemory(torch.autograd.Function):
    """Reference forward in torch; ONNX symbolic = the ``TopKMemory`` plugin node."""

    reference: Any = None  # the unpatched ``kem.topk_attention`` (set by ``_topk_plugin``)

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int) -> Any:
        return _TopKMemory.reference(q, k, v, topk)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, topk: int) -> Any:
        return g.op(
            f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
            q,
            k,
            v,
            topk_i=topk,
            plugin_version_s="1",
            plugin_namespace_s="semedge",
        ).setType(q.type())


def topk_memory_node(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int) -> torch.Tensor:
    """``topk_attention`` that exports as one ``TopKMemory`` node."""
    out: torch.Tensor = _TopKMemory.apply(q, k, v, topk)
    return out


def _rename_initializers(graph: onnx.GraphProto, prefix: str) -> None:
    """Strip the wrapper prefix so initializers carry the model's own parameter names."""
    mapping = {
        i.name: i.name[len(prefix) :] for i in graph.initializer if i.name.startswith(prefix)
    }
    for value in [*graph.initializer, *graph.input]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name in mapping:
                node.input[j] = mapping[name]


def _keep_weight_inputs(graph: onnx.GraphProto, targets: list[str]) -> None:
    """Of the initializers exported as graph inputs, keep only the delta targets as inputs."""
    inits = {i.name for i in graph.initializer}
    missing = [t for t in targets if t not in inits]
    if missing:
        raise ExportError(
            f"parameter {missing[0]} is not used by the exported graph; drop it from the targets"
        )
    keep = [v for v in graph.input if v.name not in inits or v.name in targets]
    del graph.input[:]
    graph.input.extend(keep)


def export_onnx(
    model: Transceiver,
    out: str | Path,
    part: str = "chain",
    opset: int = DEFAULT_OPSET,
    topk_plugin: bool = False,
    delta_targets: str | Sequence[str] | None = None,
    source: str | None = None,
) -> Path:
    """Export ``part`` of ``model`` to ``out``; checked with ``onnx.checker`` and shape inference.

    Returns the path. See the module docstring for names, targets and the plugin mode.
    """
    newest = _newest_opset()
    if not 17 <= opset <= newest:
        raise ExportError(
            f"opset {opset} is not supported; use --opset 17 to {newest} (this torch and onnx)"
        )
    inputs, outputs, example = part_io(model, part)
    targets = select_targets(model, delta_targets, part)
    out = Path(out)
    exported = io.BytesIO()  # written to ``out`` only once checked: never half a file
    was_training = model.training
    model.eval()
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    plugin = _topk_plugin() if topk_plugin else contextlib.nullcontext()
    try:
        with plugin, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Part(model, part),
                (example,),
                exported,  # type: ignore[arg-type]  # the TorchScript exporter takes a buffer
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=not targets,
                # weights as inputs also turns off merging of equal-valued parameters
                keep_initializers_as_inputs=bool(targets),
                dynamo=False,
            )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise ExportError(f"cannot export the {part} of {type(model).__name__}: {reason}") from None
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(exported.getvalue())
    if topk_plugin and not any(n.op_type == PLUGIN_OP for n in proto.graph.node):
        raise ExportError(
            f"--topk-plugin was given but the {part} of {type(model).__name__} has no top-K "
            "attention; export it without --topk-plugin"
        )
    _rename_initializers(proto.graph, "model.")
    _keep_weight_inputs(proto.graph, targets)
    meta = {
        "model_class": type(model).__name__,
        "config": getattr(model, "config", {}),
        "part": part,
        "tasks": list(model.tasks),
        "input_shape": list(model.input_shape),
        "base_fingerprint": model_fingerprint(model),
        "delta_targets": targets,
        "topk_plugin": topk_plugin,
        "source": source,
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=META_PREFIX + key, value=json.dumps(value))
    proto.producer_name = "semedge"
    # full_check runs strict shape inference, which cannot know the plugin op's output
    onnx.checker.check_model(proto, full_check=not topk_plugin)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    with atomic_file(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


def _newest_opset() -> int:
    """The newest opset both torch's TorchScript exporter and the onnx package know."""
    from torch.onnx import _constants

    torch_max = getattr(
        _constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET
    )
    return int(min(torch_max, onnx.defs.onnx_opset_version()))
