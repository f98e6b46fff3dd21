"""The sparse delta kernel (host emulation) equals the numpy reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.emulated import EmulatedKernels
from kernels.reference import REFERENCES, KernelInputError


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float16)[seed % 2]
    size = int(rng.integers(1, 400))
    count = int(rng.integers(0, size + 1)) if seed % 7 else 0  # every 7th: empty delta
    w = (rng.standard_normal(size) * 10 ** rng.uniform(-3, 3)).astype(dtype)
    idx = np.sort(rng.choice(size, count, replace=False)).astype(np.int64)
    values = (rng.standard_normal(count) * 10 ** rng.uniform(-6, 1)).astype(dtype)
    return w, idx, values


@pytest.mark.parametrize("seed", range(100))
def test_apply_and_restore_match_reference_bit_exact(emulated: EmulatedKernels, seed: int) -> None:
    w, idx, values = _case(seed)
    want, want_saved = REFERENCES["sparse_delta_apply"](w, idx, values)
    got, saved = emulated.sparse_delta_apply(w, idx, values)
    assert got.tobytes() == want.tobytes()
    assert saved.tobytes() == want_saved.tobytes()
    untouched = np.setdiff1d(np.arange(w.size), idx)
    assert got[untouched].tobytes() == w[untouched].tobytes()
    restored = emulated.sparse_delta_restore(got, idx, saved)
    assert restored.tobytes() == w.tobytes()
    assert restored.tobytes() == REFERENCES["sparse_delta_restore"](got, idx, saved).tobytes()


def test_fp16_apply_rounds_once_like_numpy(emulated: EmulatedKernels) -> None:
    w = np.array([1.0, 2048.0, -0.0, 65504.0], np.float16)
    values = np.array([2.0**-11, 1.0, 0.0, 32.0], np.float16)  # ties, rounding, -0, overflow
    idx = np.arange(4, dtype=np.int64)
    with np.errstate(over="ignore"):
        numpy_sum = w + values
    got, _ = emulated.sparse_delta_apply(w, idx, values)
    assert got.tobytes() == numpy_sum.tobytes()


def test_mismatched_dtype_is_rejected(emulated: EmulatedKernels) -> None:
    with pytest.raises(KernelInputError, match="same-length values"):
        emulated.sparse_delta_apply(np.zeros(4, np.float32), np.arange(2), np.zeros(2, np.float16))
