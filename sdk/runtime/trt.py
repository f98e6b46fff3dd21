"""TensorRT 10 backend: a serialized plan run with named tensors and ``execute_async_v3``.

Buffers are allocated once at the plan's maximum batch (device memory from pycuda,
page-locked host staging buffers) and every call copies in, runs and copies out on
one CUDA stream. Plugin libraries listed in the manifest are loaded into TensorRT's
plugin registry before the plan is deserialized.

Deltas (mode ``refit``): the plan was built with ``REFIT_INDIVIDUAL`` and its delta
targets marked refittable; their base values ship in the artifact as
``weights.safetensors``. A switch patches those host arrays through
:class:`~sdk.delta.DeltaCore` and hands the changed tensors to ``trt.Refitter``.

``tensorrt`` and ``pycuda`` are imported lazily; a missing one is a one-line
``MissingDependencyError``. (No machine this project is developed on has a GPU: this
runner follows the documented TensorRT 10 API and is exercised by
``tools/validate_on_device.py`` on a Jetson.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk.artifact import REFIT_WEIGHTS
from sdk.errors import missing
from sdk.runtime.base import BaseRunner, InputError, RunnerError, TensorSpec

if TYPE_CHECKING:
    from sdk.delta import DeltaCore


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise missing("tensorrt", "the trt backend", "use JetPack's python3-libnvinfer") from None
    return tensorrt


def _cuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise missing("pycuda", "the trt backend", "pip install 'semedge[jetson]'") from None
    return cuda


class TrtRunner(BaseRunner):
    """Run ``model.plan`` from an artifact ``directory`` described by ``manifest``."""

    backend = "trt"

    def __init__(
        self, plan: str | Path, manifest: dict[str, Any], directory: str | Path, name: str = "trt"
    ) -> None:
        super().__init__(name)
        self.plan = Path(plan)
        self.manifest = manifest
        self.directory = Path(directory)
        self._weights: dict[str, np.ndarray] = {}
        self._core: DeltaCore | None = None

    def activate_impl(self) -> None:
        trt, cuda = _trt(), _cuda()
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        self._logger = trt.Logger(trt.Logger.WARNING)
        registry = trt.get_plugin_registry()
        for plugin in (self.manifest.get("target") or {}).get("plugins", []):
            registry.load_library(str(self.directory / plugin["file"]))
        engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:
            self._ctx.pop()
            raise RunnerError(
                f"TensorRT could not deserialize {self.plan}; rebuild it on this device with: "
                "semedge build CKPT --backend trt --out DIR"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = cuda.Stream()
        self._buffers: dict[str, tuple[Any, Any]] = {}
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(engine.get_tensor_shape(name))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                self._max_batch = int(engine.get_tensor_profile_shape(name, 0)[2][0])
            (inputs if is_input else outputs).append(TensorSpec(name, shape, dtype.name))
        for spec in inputs + outputs:
            count = self._max_batch * int(np.prod(spec.shape[1:]))
            host = cuda.pagelocked_empty(count, np.dtype(spec.dtype))
            self._buffers[spec.name] = (host, cuda.mem_alloc(host.nbytes))
            self._context.set_tensor_address(spec.name, int(self._buffers[spec.name][1]))
        self._inputs, self._outputs = inputs, outputs
        if self.manifest.get("delta_targets"):
            from safetensors.numpy import load_file

            self._weights = load_file(str(self.directory / REFIT_WEIGHTS))
            self._refitter = trt.Refitter(engine, self._logger)
        self._ctx.pop()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = _cuda()
        batch = next(iter(feed.values())).shape[0]
        if batch > self._max_batch:
            raise InputError(
                f"batch {batch} exceeds the plan's maximum {self._max_batch}; split the batch "
                "or rebuild with --max-batch"
            )
        self._ctx.push()
        try:
            for name, arr in feed.items():
                host, dev = self._buffers[name]
                host[: arr.size] = arr.ravel()
                cuda.memcpy_htod_async(dev, host[: arr.size], self._stream)
                self._context.set_input_shape(name, arr.shape)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RunnerError("TensorRT execution failed; see the TensorRT log above")
            outs = {}
            for spec in self._outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                host, dev = self._buffers[spec.name]
                view = host[: int(np.prod(shape))]
                cuda.memcpy_dtoh_async(view, dev, self._stream)
                outs[spec.name] = (view, shape)
            self._stream.synchronize()
        finally:
            self._ctx.pop()
        return {name: view.reshape(shape).copy() for name, (view, shape) in outs.items()}

    def deactivate_impl(self) -> None:
        self._ctx.push()
        for _, dev in self._buffers.values():
            dev.free()
        self._buffers = {}
        self._context = self._engine = self._refitter = None
        self._ctx.pop()
        self._ctx.detach()
        self._core = None

    @property
    def delta_mode(self) -> str | None:
        return "refit" if self._weights else None

    def delta_core(self) -> DeltaCore:
        from sdk.delta import DeltaCore

        self._require_active()
        if not self._weights:
            return super().delta_core()
        if self._core is None:
            self._core = DeltaCore(self._weights, self.manifest["base_fingerprint"])
        return self._core

    def weights_changed(self) -> None:
        """Refit exactly the tensors the core wrote since the last refit (delta or update)."""
        if not self._weights or self._core is None:
            return
        trt = _trt()
        self._ctx.push()
        try:
            for name in sorted(self._core.take_changed()):
                arr = self._weights[name]
                if not self._refitter.set_named_weights(name, trt.Weights(arr)):
                    raise RunnerError(f"TensorRT rejected refit weights {name}; rebuild the plan")
            if not self._refitter.refit_cuda_engine():
                raise RunnerError("TensorRT refit failed; rebuild the plan with --delta-targets")
        finally:
            self._ctx.pop()
