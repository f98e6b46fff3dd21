"""``TrtRunner``'s lifecycle on the CPU: device buffers are freed after a load and after
one that fails halfway.

TensorRT and pycuda cannot be installed here, so the runner's own code runs against
stand-ins of the two modules: a one-input, one-output engine, and a CUDA driver whose
``mem_alloc`` hands out recorded allocations (and runs out of memory where a test asks).
That every name the runner uses exists in the real bindings is ``test_trt_bindings.py``.
"""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from sdk.backends.trt.runner import TrtRunner
from sdk.runtime.base import RunnerError

SHAPES = {"symbols": (-1, 16), "recon": (-1, 3, 8, 8)}


class OutOfMemory(Exception):
    """pycuda's ``MemoryError`` stand-in."""


class Allocation:
    def __init__(self, nbytes: int, live: set) -> None:
        self.nbytes, self.live = nbytes, live
        live.add(self)

    def free(self) -> None:
        self.live.remove(self)

    def __int__(self) -> int:
        return id(self)


def fake_cuda(live: set, contexts: list, allocations_before_oom: int | None) -> ModuleType:
    cuda = ModuleType("pycuda.driver")
    made = []

    def mem_alloc(nbytes: int) -> Allocation:
        if allocations_before_oom is not None and len(made) == allocations_before_oom:
            raise OutOfMemory("cuMemAlloc failed: out of memory")
        made.append(Allocation(nbytes, live))
        return made[-1]

    def retain_primary_context() -> SimpleNamespace:
        ctx = SimpleNamespace(depth=0, detached=False)
        ctx.push = lambda: setattr(ctx, "depth", ctx.depth + 1)
        ctx.pop = lambda: setattr(ctx, "depth", ctx.depth - 1)
        ctx.detach = lambda: setattr(ctx, "detached", True)
        contexts.append(ctx)
        return ctx

    cuda.init = lambda: None
    cuda.Device = lambda n: SimpleNamespace(retain_primary_context=retain_primary_context)
    cuda.Stream = lambda: SimpleNamespace(handle=0)
    cuda.pagelocked_empty = lambda count, dtype: np.empty(count, dtype)
    cuda.mem_alloc = mem_alloc
    return cuda


def fake_tensorrt() -> ModuleType:
    trt = ModuleType("tensorrt")
    names = list(SHAPES)
    engine = SimpleNamespace(
        num_io_tensors=len(names),
        get_tensor_name=lambda i: names[i],
        get_tensor_dtype=lambda name: "float",
        get_tensor_shape=lambda name: SHAPES[name],
        get_tensor_mode=lambda name: "input" if name == "symbols" else "output",
        get_tensor_profile_shape=lambda name, profile: [(1, 16), (1, 16), (4, 16)],
        create_execution_context=lambda: SimpleNamespace(set_tensor_address=lambda n, a: True),
    )
    trt.Logger = type("Logger", (), {"WARNING": "warning", "__init__": lambda self, level: None})
    trt.get_plugin_registry = lambda: SimpleNamespace(load_library=lambda path: object())
    trt.Runtime = lambda logger: SimpleNamespace(
        num_DLA_cores=0, deserialize_cuda_engine=lambda plan: engine
    )
    trt.DataType = SimpleNamespace(FLOAT="float", HALF="half", INT8="int8", INT32="int32",
                                   INT64="int64", BOOL="bool", UINT8="uint8")  # fmt: skip
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    return trt


@pytest.fixture
def device(monkeypatch):
    """``device(allocations_before_oom)`` -> (live allocations, contexts made)."""

    def install(allocations_before_oom: int | None = None) -> tuple[set, list]:
        live: set = set()
        contexts: list = []
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
        monkeypatch.setitem(sys.modules, "pycuda", ModuleType("pycuda"))
        cuda = fake_cuda(live, contexts, allocations_before_oom)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        return live, contexts

    return install


def runner(tmp_path, **manifest: object) -> TrtRunner:
    (tmp_path / "model.plan").write_bytes(b"plan")
    return TrtRunner(tmp_path / "model.plan", {"target": {}, **manifest}, tmp_path)


def test_a_loaded_runner_frees_its_buffers_on_deactivate(device, tmp_path):
    live, contexts = device()
    trt = runner(tmp_path).activate()
    assert len(live) == 2 and contexts[0].depth == 0
    assert [s.name for s in trt.get_input_metadata()] == ["symbols"]
    trt.deactivate()
    assert not live and contexts[0].depth == 0 and contexts[0].detached


@pytest.mark.parametrize(
    ("allocations_before_oom", "manifest", "error"),
    [
        (1, {}, OutOfMemory),  # the second buffer does not fit
        # every buffer made, then the refit weights are missing:
        (None, {"delta_targets": ["w"], "base_fingerprint": "f" * 64}, FileNotFoundError),
    ],
)
def test_a_load_that_fails_halfway_frees_what_it_allocated(
    device, tmp_path, allocations_before_oom, manifest, error
):
    live, contexts = device(allocations_before_oom)
    trt = runner(tmp_path, **manifest)
    with pytest.raises(error):
        trt.activate()
    assert not live, "device buffers leaked"
    assert contexts[0].depth == 0 and contexts[0].detached and not trt.is_active
    with pytest.raises(RunnerError, match="not active"):
        trt.infer({"symbols": np.zeros((1, 16), np.float32)})
