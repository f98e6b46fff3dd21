"""Delta targets kept in device memory, switched there: no host round trip.

:class:`DeviceDeltaCore` is the same :class:`~sdk.delta.DeltaCore` (same validation,
same verbs, same overlap rule) whose weight writes happen on the GPU: a delta's
segments by the custom sparse-delta kernel, which saves the base values on the device;
an update package's blocks (whole neighbouring tensors) by device-to-device copies —
base values copied into a device buffer, then the new values (uploaded once) copied
over them, and copied back on restore. The refitter then reads the device pointers of
only the tensors written (:func:`sdk.backends.trt.runner.refit_changed`). TensorRT
cannot point a refittable weight at other memory for good, so updates take the copy
path, not the core's ``rebind`` swap (torch, ONNX Runtime).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sdk.delta import DeltaCore
from sdk.runtime.base import RunnerError

if TYPE_CHECKING:
    from sdk.delta import _Block, _Segment

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class DeviceMemory(Protocol):
    """What :class:`DeviceDeltaCore` needs of a GPU (``kernels.cuda.CudaKernels`` is one)."""

    def upload(self, array: np.ndarray) -> Any: ...

    def alloc(self, nbytes: int) -> Any: ...

    def copy(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        """Device-to-device copy of ``nbytes``, ordered on ``stream``."""

    def launch_sparse_delta_apply(
        self, dtype: np.dtype, w: int, idx: int, values: int, saved: int, count: int, stream: Any
    ) -> None: ...

    def launch_sparse_delta_restore(
        self, dtype: np.dtype, w: int, idx: int, saved: int, count: int, stream: Any
    ) -> None: ...


class DeviceDeltaCore(DeltaCore):
    """A :class:`DeltaCore` whose weights live in device memory, written by the CUDA kernel.

    ``weights`` (name -> base values) are packed into one device buffer per dtype. The
    core's placement needs host arrays at matching offsets: those are ``np.empty``
    address space that is never read or written, so the OS never commits its pages.
    Per prepared segment (block) the indices and values (the new values) are uploaded on
    its first activation and a device buffer holds the saved base values; they are freed
    when the prepared change is dropped.
    """

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        fingerprint: str,
        device: DeviceMemory,
        stream: Any = None,
    ) -> None:
        bad = {n: w.dtype for n, w in weights.items() if w.dtype not in KERNEL_DTYPES}
        if bad:
            name, dtype = next(iter(bad.items()))
            raise RunnerError(
                f"refittable weight {name} is {dtype}; device delta switching takes float32 "
                "or float16 weights — rebuild without that tensor in --delta-targets"
            )
        self.device, self.stream = device, stream
        self._device_flat: dict[int, Any] = {}
        self._resident_parts: dict[int, tuple[Any, ...]] = {}
        views: dict[str, np.ndarray] = {}
        flats = []
        for dtype in sorted({w.dtype for w in weights.values()}, key=str):
            names = sorted(n for n, w in weights.items() if w.dtype == dtype)
            packed = np.concatenate([weights[n].reshape(-1) for n in names])
            placement = np.empty(packed.size, dtype)  # address space only, see the docstring
            self._device_flat[id(placement)] = device.upload(packed)
            offset = 0
            for name in names:
                size = weights[name].size
                views[name] = placement[offset : offset + size].reshape(weights[name].shape)
                offset += size
            flats.append(placement)
        super().__init__(views, fingerprint, flats)
        self._flats = flats  # keep the placement arrays (and so the id keys) alive

    def device_tensor(self, name: str) -> tuple[int, int, np.dtype]:
        """(device address, element count, dtype) of weight ``name``."""
        flat, offset = self._place[name]
        return self._device_address(flat, offset), math.prod(self.shapes[name]), flat.dtype

    def _device_address(self, flat: np.ndarray, offset: int) -> int:
        return int(self._device_flat[id(flat)]) + offset * flat.itemsize

    def _resident(self, part: _Segment | _Block, make: Callable[[], tuple[Any, ...]]) -> Any:
        """Device buffers of one prepared part: made on first use, freed with the part."""
        key = id(part)
        if key not in self._resident_parts:
            self._resident_parts[key] = make()
            weakref.finalize(part, self._resident_parts.pop, key, None)
        return self._resident_parts[key]

    def _on_device(self, seg: _Segment) -> tuple[Any, Any, Any]:
        return self._resident(
            seg,
            lambda: (
                self.device.upload(seg.index.astype(np.int64)),
                self.device.upload(seg.values),
                self.device.alloc(seg.values.nbytes),
            ),
        )

    def _block_on_device(self, block: _Block) -> tuple[int, Any, Any]:
        """(address of the block's range in the weights, new values, saved base values)."""
        values, saved = self._resident(
            block,
            lambda: (self.device.upload(block.values), self.device.alloc(block.values.nbytes)),
        )
        return self._device_address(block.flat, block.start), values, saved

    def _apply_segment(self, seg: _Segment) -> None:
        index, values, saved = self._on_device(seg)
        self.device.launch_sparse_delta_apply(
            seg.flat.dtype,
            int(self._device_flat[id(seg.flat)]),
            int(index),
            int(values),
            int(saved),
            len(seg.index),
            self.stream,
        )

    def _restore_segment(self, seg: _Segment) -> None:
        index, _, saved = self._on_device(seg)
        self.device.launch_sparse_delta_restore(
            seg.flat.dtype,
            int(self._device_flat[id(seg.flat)]),
            int(index),
            int(saved),
            len(seg.index),
            self.stream,
        )

    def _apply_block(self, block: _Block) -> None:
        target, values, saved = self._block_on_device(block)
        nbytes = block.values.nbytes
        self.device.copy(int(saved), target, nbytes, self.stream)
        self.device.copy(target, int(values), nbytes, self.stream)

    def _restore_block(self, block: _Block) -> None:
        target, _, saved = self._block_on_device(block)
        self.device.copy(target, int(saved), block.values.nbytes, self.stream)
