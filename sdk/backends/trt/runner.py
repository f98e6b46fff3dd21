"""TensorRT 10 backend: a serialized plan run with named tensors and ``execute_async_v3``.

Buffers are allocated once at the plan's maximum batch (device memory from pycuda,
page-locked host staging buffers) and every call copies in, runs and copies out on
one CUDA stream. Plugin libraries listed in the manifest are loaded into TensorRT's
plugin registry (a library TensorRT refuses is a one-line error) before the plan is
deserialized; a plan built for a DLA core runs on that core or is refused in one line.

Deltas (mode ``refit``): the plan was built with ``REFIT_INDIVIDUAL`` and its delta
targets marked refittable; their base values ship in the artifact as
``weights.safetensors``. At activation they are uploaded once into device memory
(one flat buffer per dtype) and the host copy is dropped.
:class:`~sdk.backends.trt.device_deltas.DeviceDeltaCore` is
the same :class:`~sdk.delta.DeltaCore` (same validation, same verbs) with its two
segment writes done by the custom sparse-delta CUDA kernel: activating scatters
base + value into the device buffer and saves the base values on the device;
deactivating scatters the saved values back (bit-exact, no host round trip). The
refitter then gets the device pointers of only the tensors the switch wrote
(``set_named_weights(..., TensorLocation.DEVICE)``, ``refit_cuda_engine_async`` on the
runner's stream); a refused refit names the weights TensorRT still misses.

``tensorrt`` and ``pycuda`` are imported lazily; a missing one is a one-line
``MissingDependencyError``. (No machine this project is developed on has a GPU: the
device core runs in the tests on host memory through the kernels' CPU emulation, and
every TensorRT/pycuda name used here is checked against both TensorRT releases'
binding sources; ``tools/validate_on_device.py`` runs the rest on a Jetson.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk.artifact import REFIT_WEIGHTS
from sdk.backends.trt.device_deltas import DeviceDeltaCore
from sdk.backends.trt.plugins import load_plugins
from sdk.errors import lazy_import
from sdk.runtime.base import BaseRunner, InputError, RunnerError, TensorSpec

if TYPE_CHECKING:
    from sdk.delta import DeltaCore

PURPOSE = "the trt backend"


def numpy_dtypes(trt: Any) -> dict[Any, Any]:
    """TensorRT data type -> numpy dtype (the bindings' own ``nptype`` lives outside them)."""
    return {
        trt.DataType.FLOAT: np.float32,
        trt.DataType.HALF: np.float16,
        trt.DataType.INT8: np.int8,
        trt.DataType.INT32: np.int32,
        trt.DataType.INT64: np.int64,
        trt.DataType.BOOL: np.bool_,
        trt.DataType.UINT8: np.uint8,
    }


def refit_changed(trt: Any, refitter: Any, core: DeviceDeltaCore, stream_handle: int) -> list[str]:
    """Hand TensorRT the device pointers of the tensors written since the last refit.

    Returns their names (sorted). Raises :class:`RunnerError` naming the weights TensorRT
    rejects or still misses.
    """
    kinds = {np.dtype(v): k for k, v in numpy_dtypes(trt).items()}
    names = sorted(core.take_changed())
    for name in names:
        address, count, dtype = core.device_tensor(name)
        weights = trt.Weights(kinds[dtype], address, count)
        if not refitter.set_named_weights(name, weights, trt.TensorLocation.DEVICE):
            raise RunnerError(f"TensorRT rejected refit weights {name}; rebuild the plan")
    if names and not refitter.refit_cuda_engine_async(stream_handle):
        absent = ", ".join(refitter.get_missing_weights()) or "none reported"
        raise RunnerError(
            f"TensorRT refit failed (weights it still misses: {absent}); rebuild the plan "
            "with --delta-targets naming them"
        )
    return names


def check_dla(target: Mapping[str, Any], available: int) -> int | None:
    """The DLA core a plan was built for, if this device has it; else a one-line refusal."""
    core = target.get("dla_core")
    if core is None:
        return None
    if not 0 <= int(core) < available:
        have = f"{available} DLA core{'s' if available != 1 else ''}" if available else "no DLA"
        raise RunnerError(
            f"plan built for DLA core {core}; this device has {have} — rebuild without "
            "--dla-core (GPU) or on a Jetson with that core"
        )
    return int(core)


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
        self._core: DeviceDeltaCore | None = None
        self._buffers: dict[str, tuple[Any, Any]] = {}  # name -> (host staging, device)

    def activate_impl(self) -> None:
        trt, cuda = lazy_import("tensorrt", PURPOSE), lazy_import("pycuda.driver", PURPOSE)
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self._load(trt, cuda)
        except BaseException:
            self._release()  # what a load that failed halfway allocated
            raise
        self._ctx.pop()

    def _load(self, trt: Any, cuda: Any) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        target = self.manifest.get("target") or {}
        plugins = [self.directory / p["file"] for p in target.get("plugins", [])]
        load_plugins(trt, plugins)
        runtime = trt.Runtime(self._logger)
        dla = check_dla(target, runtime.num_DLA_cores)
        if dla is not None:
            runtime.DLA_core = dla
        engine = runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:
            raise RunnerError(
                f"TensorRT could not deserialize {self.plan}; rebuild it on this device with: "
                "semedge build CKPT --backend trt --out DIR"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = cuda.Stream()
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        dtypes = numpy_dtypes(trt)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(dtypes[engine.get_tensor_dtype(name)])
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
        self._refitter = None
        if self.manifest.get("delta_targets"):
            from safetensors.numpy import load_file

            from kernels.cuda import CudaKernels

            weights = load_file(str(self.directory / REFIT_WEIGHTS))
            self._core = DeviceDeltaCore(
                weights, self.manifest["base_fingerprint"], CudaKernels(), self._stream
            )
            self._refitter = trt.Refitter(engine, self._logger)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = lazy_import("pycuda.driver", PURPOSE)
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
        self._release()

    def _release(self) -> None:
        """Free every device buffer allocated so far — all of them after a load, those
        made before the failure after one that failed halfway — drop the engine, then pop
        and detach the CUDA context (current on entry)."""
        try:
            for _, dev in self._buffers.values():
                dev.free()
        finally:
            self._buffers = {}
            self._context = self._engine = self._refitter = None
            self._core = None  # drops the device weights and saved values
            self._ctx.pop()
            self._ctx.detach()

    @property
    def delta_mode(self) -> str | None:
        return "refit" if self.manifest.get("delta_targets") else None

    def delta_core(self) -> DeltaCore:
        self._require_active()
        if self._core is None:
            return super().delta_core()
        return self._core

    def weights_changed(self) -> None:
        """Refit the tensors the last switch wrote, from their device pointers."""
        if self._core is None:
            return
        self._ctx.push()
        try:
            refit_changed(
                lazy_import("tensorrt", PURPOSE), self._refitter, self._core, self._stream.handle
            )
            self._stream.synchronize()
        finally:
            self._ctx.pop()
