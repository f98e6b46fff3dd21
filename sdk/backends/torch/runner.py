"""PyTorch backend: the reference every other backend is compared with.

Runs one part of a transceiver (``transmitter``, ``receiver`` or the noiseless
``chain``) with the same input and output names as the ONNX export. Deltas switch in
place through :class:`sdk.delta.TorchDeltas` (mode ``inplace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sdk.runtime.base import BaseRunner, TensorSpec

if TYPE_CHECKING:
    import torch

    from sdk.delta import DeltaCore, TorchDeltas
    from sdk.models.base import Transceiver


def _spec(name: str, tensor: torch.Tensor) -> TensorSpec:
    """Batch-dynamic spec of an example tensor (dtype in numpy spelling)."""
    dtype = str(tensor.detach().numpy().dtype)
    return TensorSpec(name, (-1, *tensor.shape[1:]), dtype)


class TorchRunner(BaseRunner):
    """Run ``part`` of a model (or of the checkpoint directory at ``source``) in eager torch."""

    backend = "torch"

    def __init__(
        self, source: Transceiver | str | Path, part: str = "chain", name: str | None = None
    ) -> None:
        super().__init__(name)
        self.source = source
        self.part = part
        self._deltas: TorchDeltas | None = None
        self._module: torch.nn.Module | None = None

    def activate_impl(self) -> None:
        import torch

        from sdk.checkpoint import load_checkpoint
        from sdk.export import _Part, part_io

        model = self.source
        if isinstance(model, str | Path):
            model = load_checkpoint(model)  # type: ignore[assignment]
        assert not isinstance(model, str | Path)
        self.model = model.eval()
        inputs, outputs, example = part_io(self.model, self.part)
        self._module = _Part(self.model, self.part)
        with torch.no_grad():
            produced = self._module(example[:1])
        self._inputs = [_spec(inputs[0], example)]
        self._outputs = [_spec(n, t) for n, t in zip(outputs, produced, strict=True)]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        assert self._module is not None
        with torch.no_grad():
            outs = self._module(torch.from_numpy(feed[self._inputs[0].name]))
        return {s.name: t.numpy() for s, t in zip(self._outputs, outs, strict=True)}

    def deactivate_impl(self) -> None:
        self._module = None
        self._deltas = None

    @property
    def delta_mode(self) -> str | None:
        return "inplace"

    def delta_core(self) -> DeltaCore:
        return self.adapters().core

    def adapters(self) -> TorchDeltas:
        """One :class:`~sdk.delta.TorchDeltas` per activation (it can also ``merge``)."""
        from sdk.delta import TorchDeltas

        self._require_active()
        if self._deltas is None:
            self._deltas = TorchDeltas(self.model)
        return self._deltas
