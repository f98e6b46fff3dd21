"""nvcc compiles both kernels for sm_87 / sm_110 / compute_87 with no spills or local memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernels.build import (
    KernelBuildError,
    Resources,
    binary_resources,
    build_fatbins,
    find_cuobjdump,
    parse_ptxas,
)

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")


def test_fatbins_build_without_spills(tmp_path: Path) -> None:
    usage = build_fatbins(tmp_path)
    for name in ("topk_memory", "sparse_delta"):
        assert (tmp_path / f"{name}.fatbin").stat().st_size > 0
        arches = {(r.kernel, r.arch) for r in usage[name]}
        kernels = {r.kernel for r in usage[name]}
        assert {(kname, arch) for kname in kernels for arch in ("sm_87", "sm_110")} == arches
        assert len(kernels) >= 2  # f32 and f16 variants
        assert not any(r.uses_local_memory for r in usage[name])
        if find_cuobjdump() is None:
            continue  # the cross-check below needs cuobjdump (PyPI nvidia-cuda-cuobjdump)
        binary = binary_resources(tmp_path / f"{name}.fatbin")
        assert set(binary) == arches
        for r in usage[name]:
            sass = binary[(r.kernel, r.arch)]
            assert sass["REG"] == r.registers
            assert sass["LOCAL"] == 0 and sass["STACK"] == 0


def test_parser_flags_spills() -> None:
    report = """ptxas info    : Compiling entry function 'k' for 'sm_87'
ptxas info    : Function properties for k
    16 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 64 bytes smem, 384 bytes cmem[0]
"""
    (found,) = parse_ptxas(report)
    assert found == Resources("k", "sm_87", 255, 16, 8, 8, 64)
    assert found.uses_local_memory


def test_missing_nvcc_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KernelBuildError, match="nvcc not found"):
        build_fatbins(tmp_path)
