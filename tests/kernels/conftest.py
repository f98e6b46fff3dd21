"""Compile the kernel emulation once per session (g++), shared by the kernel tests.

Small compile-time sizes (32 threads, 16 kept rows in shared memory, 16 candidates) let
small inputs reach every path of the top-K kernel: shared and global kept lists, selection
on shared-memory candidates and on the score row in global memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kernels.build import build_emulation
from kernels.emulated import EmulatedKernels


@pytest.fixture(scope="session")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> EmulatedKernels:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the kernel emulation cannot be compiled")
    return EmulatedKernels(build_emulation(tmp_path_factory.mktemp("emulation"), candidates=16))


ROOT = Path(__file__).resolve().parents[2]


def shared_dir(root: Path = ROOT) -> Path:
    """``shared/`` beside the clone (for a git worktree: beside its main checkout);
    ``$SEMEDGE_SHARED`` overrides it. CI runs a fresh clone with a copy of shared/ beside it."""
    if os.environ.get("SEMEDGE_SHARED"):
        return Path(os.environ["SEMEDGE_SHARED"])
    dot_git = root / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(dot_git.read_text().split(":", 1)[1].strip())
        return gitdir.parents[2].parent / "shared"
    return root.parent / "shared"


TENSORRT_RELEASES = ("10.3.0", "10.13.3")  # JetPack 6, JetPack 7


@pytest.fixture(scope="module", params=TENSORRT_RELEASES)
def tensorrt_include(request: pytest.FixtureRequest) -> Path:
    """TensorRT's headers of one release from shared/third_party; skipped where absent."""
    folder = shared_dir() / "third_party" / "tensorrt" / request.param / "include"
    if not (folder / "NvInferRuntime.h").is_file():
        pytest.skip(f"{folder} is absent (only CI and the project's machines have shared/)")
    return folder
