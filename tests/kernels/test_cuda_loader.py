"""kernels.cuda without pycuda: one clear error naming the missing piece."""

from __future__ import annotations

import importlib.util

import pytest

from sdk.errors import MissingDependencyError


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="pycuda is installed")
def test_missing_pycuda_is_a_one_line_error() -> None:
    from kernels.cuda import CudaKernels

    with pytest.raises(MissingDependencyError, match=r"pycuda is not installed.*pip install"):
        CudaKernels()


def test_workspace_size_matches_the_kernel_layout() -> None:
    from kernels.cuda import topk_workspace_bytes

    assert topk_workspace_bytes(rows=16, n=65536, topk=64) == 4 * 16 * (65536 + 128)
