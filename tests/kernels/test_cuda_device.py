"""The kernels on a real GPU (pycuda) against the references; skipped without one."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from kernels.reference import REFERENCES


@pytest.fixture(scope="module")
def gpu() -> Any:
    if importlib.util.find_spec("pycuda") is None:
        pytest.skip(
            "pycuda not installed: no GPU run here (tools/validate_on_device.py on a Jetson)"
        )
    from kernels.cuda import CudaKernels, KernelRuntimeError

    try:
        return CudaKernels()
    except KernelRuntimeError as error:
        pytest.skip(f"no usable CUDA device: {error}")


@pytest.mark.parametrize("seed", range(20))
def test_topk_memory_on_gpu(gpu: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float16)[seed % 2]
    b, L, n, d = 2, 3, int(rng.integers(1, 5000)), int(rng.integers(1, 200))
    topk = int(rng.integers(1, min(n, 400) + 1))
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((b, L, d), (b, n, d), (b, n, d)))
    want, index = REFERENCES["topk_memory"](q, k, v, topk)
    got, kept = gpu.topk_memory(q, k, v, topk)
    np.testing.assert_array_equal(np.sort(kept, -1), np.sort(index, -1))
    np.testing.assert_allclose(got.astype(np.float32), want, atol=(1e-5, 2e-3)[seed % 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sparse_delta_on_gpu_is_bit_exact(gpu: Any, dtype: type) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(100_000).astype(dtype)
    idx = np.sort(rng.choice(w.size, 5000, replace=False)).astype(np.int64)
    values = rng.standard_normal(5000).astype(dtype)
    want, _ = REFERENCES["sparse_delta_apply"](w, idx, values)
    got, saved = gpu.sparse_delta_apply(w, idx, values)
    assert got.tobytes() == want.tobytes()
    assert gpu.sparse_delta_restore(got, idx, saved).tobytes() == w.tobytes()
