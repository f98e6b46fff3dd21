"""Compile the kernel emulation once per session (g++), shared by the kernel tests.

Small compile-time sizes (32 threads, 16 kept rows in shared memory, 16 candidates) let
small inputs reach every path of the top-K kernel: shared and global kept lists, selection
on shared-memory candidates and on the score row in global memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernels.build import build_emulation
from kernels.emulated import EmulatedKernels
from tests.third_party import TENSORRT_RELEASES, shared_dir


@pytest.fixture(scope="session")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> EmulatedKernels:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the kernel emulation cannot be compiled")
    return EmulatedKernels(build_emulation(tmp_path_factory.mktemp("emulation"), candidates=16))


@pytest.fixture(scope="module", params=TENSORRT_RELEASES)
def tensorrt_include(request: pytest.FixtureRequest) -> Path:
    """TensorRT's headers of one release from shared/third_party; skipped where absent."""
    folder = shared_dir() / "third_party" / "tensorrt" / request.param / "include"
    if not (folder / "NvInferRuntime.h").is_file():
        pytest.skip(f"{folder} is absent (only CI and the project's machines have shared/)")
    return folder
