"""ONNX Runtime backend (CPU execution provider; CUDA EP where installed).

Delta switching has three modes, picked by :func:`choose_delta_mode`:

* ``inputs`` — the model exposes its delta targets as graph inputs (``semedge export
  --delta-targets``). Their buffers are numpy arrays bound once as OrtValues through
  IOBinding (zero copy), so a switch is the :class:`~sdk.delta.DeltaCore` scatter and
  nothing else. Exact by construction: inputs are read on every run.
* ``rebuild`` — constant weights. The initializers are held as numpy arrays; on the
  first switch to a delta the changed ones are written into the in-memory model and a
  session is built for it (one session build, ~0.1 s for 5 M weights). That session is
  kept (up to ``max_sessions`` deltas, least recently used dropped; the base session
  is never dropped or rebuilt), so switching back to a delta seen before is the
  DeltaCore scatter plus a pointer swap, at constant-weight speed. The price is one
  optimised copy of the weights per cached delta; ``Runtime.preload_delta`` builds a
  delta's session ahead of time.
* ``shared`` — the initializers are handed to ONNX Runtime as shared buffers
  (``SessionOptions.add_initializer``) and patched in place, never rebuilt. This is
  only exact if no optimiser or pre-packing copies a weight, so graph optimisations
  and pre-packing are turned off. Opt-in only.

The rule: ``inputs`` when the model has weight inputs (the artifact was built to
switch without extra memory), else ``rebuild``. Numbers for each mode are in
``docs/benchmarks.md`` (``tools/bench_runtime.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk.errors import lazy_import
from sdk.runtime.base import BaseRunner, RunnerError, TensorSpec

if TYPE_CHECKING:
    from sdk.delta import DeltaCore

PURPOSE = "the onnxrt backend"
DELTA_MODES = ("inputs", "rebuild", "shared")


def choose_delta_mode(weight_inputs: list[str], requested: str | None = None) -> str:
    """``requested`` if valid, else ``inputs`` for models with weight inputs, else ``rebuild``."""
    if requested is None:
        return "inputs" if weight_inputs else "rebuild"
    if requested not in DELTA_MODES:
        raise RunnerError(f"unknown delta mode {requested!r}; choose one of {DELTA_MODES}")
    if requested == "inputs" and not weight_inputs:
        raise RunnerError(
            "delta mode 'inputs' needs weights exported as graph inputs; re-export with: "
            "semedge export CKPT --delta-targets decoder --out model.onnx"
        )
    return requested


class OnnxrtRunner(BaseRunner):
    """Run an ONNX file with ONNX Runtime; optional delta switching (module docstring)."""

    backend = "onnxrt"

    def __init__(
        self,
        path: str | Path,
        fingerprint: str | None = None,
        delta_mode: str | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        name: str | None = None,
        max_sessions: int = 4,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.requested_mode = delta_mode
        self.providers = providers
        self.threads = threads
        self._mode: str | None = None
        self._proto: Any = None
        self._weights: dict[str, np.ndarray] = {}
        self._ortvalues: dict[str, Any] = {}
        self._core: DeltaCore | None = None
        self._written: set[str] = set()
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[int, ...], tuple[Any, Any]] = OrderedDict()

    def _session(self, model: str | bytes) -> Any:
        ort = lazy_import("onnxruntime", PURPOSE)
        so = ort.SessionOptions()
        so.log_severity_level = 4  # weight-input warnings are expected; errors are raised
        if self.threads:
            so.intra_op_num_threads = self.threads
        if self._mode == "shared":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.add_session_config_entry("session.disable_prepacking", "1")
            for name, value in self._ortvalues.items():
                so.add_initializer(name, value)
        providers = self.providers or [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        try:
            return ort.InferenceSession(model, so, providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            reason = str(exc).strip().splitlines()[0][:200]
            raise RunnerError(
                f"ONNX Runtime cannot load {self.path} ({reason}); "
                "re-export it with: semedge export"
            ) from None

    def activate_impl(self) -> None:
        import onnx

        from sdk.onnx_io import load_onnx, read_metadata, tensor_specs

        proto = load_onnx(self.path)
        inits = {i.name: i for i in proto.graph.initializer}
        weight_inputs = [v.name for v in proto.graph.input if v.name in inits]
        self._mode = choose_delta_mode(weight_inputs, self.requested_mode)
        managed = weight_inputs if self._mode == "inputs" else list(inits)
        self._weights = {
            n: np.array(onnx.numpy_helper.to_array(inits[n]), copy=True, order="C") for n in managed
        }
        if self._mode in ("inputs", "shared"):
            ort = lazy_import("onnxruntime", PURPOSE)
            self._ortvalues = {
                n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self._weights.items()
            }
        data_inputs = [v for v in proto.graph.input if v.name not in inits]
        self._inputs = [TensorSpec.from_dict(s) for s in tensor_specs(data_inputs)]
        self._outputs = [TensorSpec.from_dict(s) for s in tensor_specs(proto.graph.output)]
        self.fingerprint = self.fingerprint or read_metadata(proto).get("base_fingerprint")
        self._proto = proto if self._mode == "rebuild" else None
        self._sess = self._base_session = self._session(str(self.path))
        self._sessions.clear()
        self._bind()

    def _bind(self) -> None:
        self._binding = self._sess.io_binding()
        if self._mode == "inputs":
            for name, value in self._ortvalues.items():
                self._binding.bind_ortvalue_input(name, value)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, arr in feed.items():
            self._binding.bind_cpu_input(name, arr)
        for spec in self._outputs:
            self._binding.bind_output(spec.name)
        try:
            self._sess.run_with_iobinding(self._binding)
        except Exception as exc:  # onnxruntime raises untyped errors
            reason = str(exc).strip().splitlines()[0][:300]
            raise RunnerError(f"ONNX Runtime failed running {self.path.name}: {reason}") from None
        outs = self._binding.copy_outputs_to_cpu()
        return {spec.name: out for spec, out in zip(self._outputs, outs, strict=True)}

    def deactivate_impl(self) -> None:
        self._binding = self._sess = self._base_session = self._proto = self._core = None
        self._sessions.clear()
        self._ortvalues, self._weights = {}, {}

    # -- deltas
    @property
    def delta_mode(self) -> str | None:
        return self._mode

    def delta_core(self) -> DeltaCore:
        from sdk.delta import DeltaCore

        self._require_active()
        if not self.fingerprint:
            raise RunnerError(
                f"{self.path} carries no base fingerprint; re-export it with: semedge export"
            )
        if self._core is None:
            rebind = self._rebind if self._mode in ("inputs", "rebuild") else None
            self._core = DeltaCore(dict(self._weights), self.fingerprint, rebind=rebind)
        return self._core

    def _rebind(self, name: str, array: np.ndarray) -> None:
        """Point weight ``name`` at ``array`` (an update's tensor, or the base buffer again):
        ``inputs`` binds it as the input's OrtValue (zero copy), ``rebuild`` uses it for the
        next session built."""
        self._weights[name] = array
        if self._mode == "inputs":
            value = lazy_import("onnxruntime", PURPOSE).OrtValue.ortvalue_from_numpy(array)
            self._ortvalues[name] = value
            self._binding.bind_ortvalue_input(name, value)

    def weights_changed(self) -> None:
        """``rebuild``: swap to the active delta's session, building it on first use."""
        if self._mode != "rebuild":
            return
        active = tuple(self._core.active_changes) if self._core else ()
        key = tuple(id(p) for p in active)
        if not active:
            self._sess = self._base_session
        elif key in self._sessions:
            self._sessions.move_to_end(key)
            self._sess = self._sessions[key][1]
        else:
            self._sess = self._build_patched(set().union(*(p.names for p in active)))
            self._sessions[key] = (active, self._sess)  # keeps ``active`` alive: ids stay
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        self._bind()

    def _build_patched(self, changed: set[str]) -> Any:
        """A session over the current (patched) weights; only changed initializers rewritten."""
        import onnx

        for init in self._proto.graph.initializer:
            if init.name in changed | self._written:
                init.CopyFrom(onnx.numpy_helper.from_array(self._weights[init.name], init.name))
        self._written = changed
        return self._session(self._proto.SerializeToString())
