"""The TensorRT runner's device-resident delta switching, on the CPU and (where present) a GPU.

:class:`~sdk.backends.trt.device_deltas.DeviceDeltaCore` keeps the weights in device
memory and writes them with the sparse-delta kernel. On the CPU that memory is host memory
and the kernel is the unchanged CUDA source run through the kernels' CPU emulation; where
pycuda and a GPU exist the same tests also run on :class:`kernels.cuda.CudaKernels`. What
is tested is the real scatter/restore and the choice of tensors and pointers handed to the
refitter; only TensorRT itself (not installable here) is replaced by a recorder of
``set_named_weights``.
"""

from __future__ import annotations

import ctypes
import shutil
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kernels.build import build_emulation
from kernels.emulated import EmulatedKernels
from sdk.backends.trt.device_deltas import DeviceDeltaCore
from sdk.backends.trt.runner import check_dla, refit_changed
from sdk.delta import KIND, UPDATE_KIND, Delta, DeltaCore, DeltaEntry, DeltaOverlapError, Update
from sdk.runtime.base import RunnerError

FINGERPRINT = "f" * 64
SHAPES = {"dec.0.weight": ((6, 5), np.float32), "dec.0.bias": ((6,), np.float32)}
SHAPES["dec.1.weight"] = ((4, 6), np.float16)


class _Allocation:
    """Host memory standing in for a device allocation: ``int()`` is its address."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __int__(self) -> int:
        return int(self.array.ctypes.data)


class EmulatedDevice:
    """``upload``/``alloc``/``copy``/``download`` in host memory, launches through the CPU
    emulation."""

    def __init__(self, kernels: EmulatedKernels) -> None:
        self.launch_sparse_delta_apply = kernels.launch_sparse_delta_apply
        self.launch_sparse_delta_restore = kernels.launch_sparse_delta_restore
        self.uploads = 0

    def upload(self, array: np.ndarray) -> _Allocation:
        self.uploads += 1
        return _Allocation(np.ascontiguousarray(array).copy())

    def alloc(self, nbytes: int) -> _Allocation:
        return _Allocation(np.empty(max(1, nbytes), np.uint8))

    @staticmethod
    def copy(dst: int, src: int, nbytes: int, stream: object = None) -> None:
        ctypes.memmove(dst, src, nbytes)

    @staticmethod
    def download(address: int, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        ctypes.memmove(out.ctypes.data, address, out.nbytes)
        return out


class CountingCuda:
    """The real GPU (``kernels.cuda.CudaKernels``), counting uploads like the stand-in."""

    def __init__(self, kernels: object) -> None:
        self.kernels = kernels
        self.uploads = 0

    def upload(self, array: np.ndarray) -> object:
        self.uploads += 1
        return self.kernels.upload(array)

    def __getattr__(self, name: str) -> object:
        return getattr(self.kernels, name)


@pytest.fixture(scope="module", params=["emulated", "cuda"])
def make_device(request, tmp_path_factory: pytest.TempPathFactory):
    """A factory of fresh devices: CPU emulation, or the GPU where pycuda and one exist."""
    if request.param == "cuda":
        from sdk.errors import SemedgeError

        try:
            from kernels.cuda import CudaKernels

            gpu = CudaKernels()
        except SemedgeError as error:
            pytest.skip(f"no GPU path here ({error})")
        return lambda: CountingCuda(gpu)
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the kernel emulation cannot be compiled")
    kernels = EmulatedKernels(build_emulation(tmp_path_factory.mktemp("emulation")))
    return lambda: EmulatedDevice(kernels)


def base_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(d) for n, (s, d) in SHAPES.items()}


def make_delta(domain: str, names: list[str], seed: int) -> Delta:
    rng = np.random.default_rng(seed)
    entries = {}
    for name in names:
        shape, dtype = SHAPES[name]
        size = int(np.prod(shape))
        idx = np.sort(rng.choice(size, int(rng.integers(1, size)), replace=False))
        entries[name] = DeltaEntry(
            idx.astype(np.int64), rng.standard_normal(len(idx)).astype(dtype), shape
        )
    return Delta(domain, FINGERPRINT, 0.5, entries)


DELTAS = [
    make_delta("a", ["dec.0.weight"], 1),
    make_delta("b", ["dec.0.bias", "dec.1.weight"], 2),
    make_delta("c", ["dec.0.weight", "dec.1.weight"], 3),
]


def make_update(name: str, names: list[str], seed: int) -> Update:
    """New whole-tensor values (float32, as SLF writes them; the core casts per tensor)."""
    rng = np.random.default_rng(seed)
    entries = {n: rng.standard_normal(SHAPES[n][0]).astype(np.float32) for n in names}
    return Update(name, FINGERPRINT, "r" * 64, entries)


# Disjoint from some deltas (u-bias with a, u-half with a, u-bias with c) and overlapping
# others; u-dec0 covers two neighbouring tensors, so on the device it is one block.
UPDATES = [
    make_update("u-bias", ["dec.0.bias"], 4),
    make_update("u-dec0", ["dec.0.weight", "dec.0.bias"], 5),
    make_update("u-half", ["dec.1.weight"], 6),
]
CHANGES: list[Delta | Update] = [*DELTAS, *UPDATES]


def device_values(core: DeviceDeltaCore, name: str) -> np.ndarray:
    address, count, dtype = core.device_tensor(name)
    return core.device.download(address, np.empty(count, dtype)).reshape(core.shapes[name])


@settings(max_examples=20, stateful_step_count=10, deadline=None)
class DeviceSwitching(RuleBasedStateMachine):
    """The device core against the numpy core on the same deltas and updates, after every
    step; which tensors each step wrote is predicted from a model of what is active."""

    make_device: Any

    def __init__(self) -> None:
        super().__init__()
        self.host = base_weights()
        self.numpy_core = DeltaCore(self.host, FINGERPRINT)
        self.device = DeviceDeltaCore(base_weights(), FINGERPRINT, self.make_device())
        self.prepared = [self.device.prepare(c) for c in CHANGES]
        self.device.take_changed()
        self.active: dict[str, Delta | Update] = {}  # the model: kind -> active change
        self.expected_changed: set[str] = set()

    @rule(i=st.integers(0, len(CHANGES) - 1))
    def activate(self, i: int) -> None:
        change = CHANGES[i]
        current = self.active.get(change.kind)
        clash = any(
            set(other.entries) & set(change.entries)
            for kind, other in self.active.items()
            if kind != change.kind
        )
        if clash:
            for core, arg in ((self.numpy_core, change), (self.device, self.prepared[i])):
                with pytest.raises(DeltaOverlapError, match="deactivate"):
                    core.activate(arg)
            self.expected_changed = set()
            return
        self.numpy_core.activate(change)
        self.device.activate(self.prepared[i])
        self.active[change.kind] = change
        if current is change:
            self.expected_changed = set()
        else:
            self.expected_changed = set(change.entries) | set(current.entries if current else ())

    @rule(kind=st.sampled_from([None, KIND, UPDATE_KIND]))
    def deactivate(self, kind: str | None) -> None:
        self.numpy_core.deactivate(kind)
        self.device.deactivate(kind)
        gone = [k for k in self.active if kind in (None, k)]
        self.expected_changed = {n for k in gone for n in self.active.pop(k).entries}

    @invariant()
    def device_weights_equal_the_numpy_path_bit_for_bit(self) -> None:
        for name, values in self.host.items():
            assert device_values(self.device, name).tobytes() == values.tobytes(), name
        assert self.device.active == self.numpy_core.active
        kinds = [p.kind for p in self.device.active_changes]
        assert sorted(kinds) == sorted(self.active)

    @invariant()
    def with_nothing_active_the_device_holds_the_base_exactly(self) -> None:
        if not self.active:
            for name, values in base_weights().items():
                assert device_values(self.device, name).tobytes() == values.tobytes(), name

    @invariant()
    def only_the_written_tensors_are_reported(self) -> None:
        assert self.device.take_changed() == self.expected_changed
        self.expected_changed = set()


def test_device_switching_state_machine(make_device) -> None:
    DeviceSwitching.make_device = staticmethod(make_device)
    DeviceSwitching.TestCase().runTest()


def test_restore_is_bit_exact_and_uploads_happen_once(make_device) -> None:
    device = make_device()
    base = base_weights(5)
    core = DeviceDeltaCore(base, FINGERPRINT, device)
    prepared = core.prepare(DELTAS[2])
    update = core.prepare(UPDATES[0])  # disjoint from DELTAS[2]: both can be active
    first = device.uploads
    for _ in range(3):
        core.activate(prepared)
        core.activate(update)
        core.deactivate()
    # indices + values per segment, new values per block: once each
    assert device.uploads == first + 2 * len(prepared.segments) + len(update.blocks)
    for name, values in base.items():
        assert device_values(core, name).tobytes() == values.tobytes()


def _trt_recorder(missing: list[str] | None = None):
    kinds = SimpleNamespace(
        FLOAT="FLOAT", HALF="HALF", INT8="INT8", INT32="INT32", INT64="INT64", BOOL="BOOL"
    )
    kinds.UINT8 = "UINT8"
    trt = SimpleNamespace(
        DataType=kinds,
        TensorLocation=SimpleNamespace(DEVICE="DEVICE"),
        Weights=lambda kind, address, count: (kind, address, count),
    )
    calls: list[tuple] = []
    refitter = SimpleNamespace(
        set_named_weights=lambda name, w, where: calls.append((name, w, where)) or True,
        refit_cuda_engine_async=lambda stream: not missing,
        get_missing_weights=lambda: missing or [],
    )
    return trt, refitter, calls


def test_refit_gets_device_pointers_of_only_the_touched_tensors(make_device) -> None:
    core = DeviceDeltaCore(base_weights(), FINGERPRINT, make_device())
    trt, refitter, calls = _trt_recorder()
    core.activate(DELTAS[0])
    assert refit_changed(trt, refitter, core, 0) == ["dec.0.weight"]
    ((name, (kind, address, count), where),) = calls
    assert (kind, where, count) == ("FLOAT", "DEVICE", 30)
    patched = core.device.download(address, np.empty(count, np.float32))
    entry = DELTAS[0].entries[name]
    assert np.array_equal(
        patched[entry.indices], base_weights()[name].reshape(-1)[entry.indices] + entry.values
    )
    calls.clear()
    core.activate(DELTAS[1])  # restores a's tensor, writes b's two
    assert refit_changed(trt, refitter, core, 0) == sorted(
        {"dec.0.weight", "dec.0.bias", "dec.1.weight"}
    )
    assert {c[1][0] for c in calls} == {"FLOAT", "HALF"}
    calls.clear()
    assert refit_changed(trt, refitter, core, 0) == [] and calls == []


def test_an_update_on_device_refits_only_its_tensors_and_rolls_back(make_device) -> None:
    core = DeviceDeltaCore(base_weights(), FINGERPRINT, make_device())
    trt, refitter, calls = _trt_recorder()
    update = core.prepare(UPDATES[1])
    assert len(update.blocks) == 1  # two neighbouring tensors, one device copy
    core.activate(update)
    assert refit_changed(trt, refitter, core, 0) == ["dec.0.bias", "dec.0.weight"]
    for name, (_, address, count), _ in calls:
        written = core.device.download(address, np.empty(count, np.float32))
        assert written.tobytes() == UPDATES[1].entries[name].reshape(-1).tobytes()
    core.deactivate()
    assert refit_changed(trt, refitter, core, 0) == ["dec.0.bias", "dec.0.weight"]
    for name, values in base_weights().items():
        assert device_values(core, name).tobytes() == values.tobytes()


def test_a_failed_refit_names_the_missing_weights(make_device) -> None:
    core = DeviceDeltaCore(base_weights(), FINGERPRINT, make_device())
    trt, refitter, _ = _trt_recorder(missing=["dec.0.weight", "dec.2.bias"])
    core.activate(DELTAS[0])
    with pytest.raises(RunnerError, match=r"still misses: dec\.0\.weight, dec\.2\.bias"):
        refit_changed(trt, refitter, core, 0)


def test_weights_the_kernel_cannot_write_are_refused_in_one_line(make_device) -> None:
    weights = {**base_weights(), "steps": np.arange(4, dtype=np.int64)}
    with pytest.raises(RunnerError, match=r"steps is int64; .*float32 or float16"):
        DeviceDeltaCore(weights, FINGERPRINT, make_device())


@pytest.mark.parametrize(
    ("target", "available", "want"),
    [({}, 0, None), ({"dla_core": 1}, 2, 1), ({"dla_core": 0}, 1, 0)],
)
def test_dla_core_is_used_where_present(target, available, want) -> None:
    assert check_dla(target, available) == want


@pytest.mark.parametrize(
    ("target", "available", "message"),
    [({"dla_core": 0}, 0, "this device has no DLA"), ({"dla_core": 2}, 2, "has 2 DLA cores")],
)
def test_a_runtime_without_the_dla_core_refuses_in_one_line(target, available, message) -> None:
    with pytest.raises(RunnerError, match=message) as error:
        check_dla(target, available)
    assert "\n" not in str(error.value) and "rebuild without --dla-core" in str(error.value)
