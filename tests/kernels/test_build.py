"""The kernels compile for the toolchains that build them, with no spills or local memory:
this machine's nvcc (13: sm_87, sm_110, compute_87 PTX) and JetPack 6's CUDA 12.6 (NVRTC +
ptxas 12.6 from PyPI, sm_87)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kernels.build import (
    KERNELS,
    KernelBuildError,
    Resources,
    binary_resources,
    build_cubins_cuda12,
    build_fatbins,
    cuda12_toolchain,
    find_cuobjdump,
    gencodes,
    known_architectures,
    parse_ptxas,
)

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
KERNEL_NAMES = {
    "topk_memory": {f"topk_{p}_{s}" for p in ("scores", "select") for s in ("f32", "f16")},
    "sparse_delta": {f"sparse_delta_{p}_{s}" for p in ("apply", "restore") for s in ("f32", "f16")},
}
CUDA_12_6 = {50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90}  # nvcc 12.6 --list-gpu-arch
CUDA_13_0 = {75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121}


@needs_nvcc
def test_fatbins_build_without_spills(tmp_path: Path) -> None:
    usage = build_fatbins(tmp_path, device=None)
    for name in KERNELS:
        assert (tmp_path / f"{name}.fatbin").stat().st_size > 0
        arches = {(r.kernel, r.arch) for r in usage[name]}
        assert {(k, a) for k in KERNEL_NAMES[name] for a in ("sm_87", "sm_110")} == arches
        assert not any(r.uses_local_memory for r in usage[name])
        if find_cuobjdump() is None:
            continue  # the cross-check below needs cuobjdump (PyPI nvidia-cuda-cuobjdump)
        binary = binary_resources(tmp_path / f"{name}.fatbin")
        assert set(binary) == arches
        for r in usage[name]:
            sass = binary[(r.kernel, r.arch)]
            assert sass["REG"] == r.registers
            assert sass["LOCAL"] == 0 and sass["STACK"] == 0


@needs_nvcc
def test_this_nvcc_is_asked_what_it_knows() -> None:
    known = known_architectures(shutil.which("nvcc") or "nvcc")
    assert 87 in known and all(isinstance(a, int) for a in known)


@pytest.mark.parametrize(
    "known, device, want",
    [
        (CUDA_12_6, None, ["sm_87", "compute_87"]),  # JetPack 6
        (CUDA_12_6, 87, ["sm_87", "compute_87"]),  # JetPack 6 on an Orin
        (CUDA_13_0, None, ["sm_87", "sm_110", "compute_87"]),  # JetPack 7
        (CUDA_13_0, 110, ["sm_87", "sm_110", "compute_87"]),  # on a Thor
        (CUDA_13_0, 90, ["sm_87", "sm_110", "sm_90", "compute_87"]),  # on an x86 H100/H200
    ],
)
def test_gencodes_follow_the_toolchain_and_the_device(known, device, want) -> None:
    codes = [code.split("code=")[1] for code in gencodes(known, device)]
    assert codes == want
    assert all(c.startswith("arch=compute_") for c in gencodes(known, device))


@pytest.mark.parametrize(
    "known, device, message",
    [
        (CUDA_12_6, 110, r"sm_110, which this nvcc does not know .*CUDA >= 13"),
        ({50, 60, 70, 72}, None, r"does not know sm_87.*JetPack 5"),
    ],
)
def test_a_toolchain_too_old_is_a_one_line_error(known, device, message) -> None:
    with pytest.raises(KernelBuildError, match=message):
        gencodes(known, device)


def _cuda12() -> tuple[Path, Path, Path]:
    try:
        return cuda12_toolchain()
    except KernelBuildError as error:
        pytest.skip(f"JetPack 6 toolchain check needs the PyPI packages: {error}")


def test_every_kernel_assembles_with_jetpack6_ptxas_without_spills(tmp_path: Path) -> None:
    _, ptxas, _ = _cuda12()
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    assert "release 12.6" in version
    usage = build_cubins_cuda12(tmp_path)
    for name in KERNELS:
        assert {r.kernel for r in usage[name]} == KERNEL_NAMES[name]
        assert {r.arch for r in usage[name]} == {"sm_87"}
        assert not any(r.uses_local_memory for r in usage[name])
        ptx = (tmp_path / f"{name}.cuda12.ptx").read_text()
        assert re.search(r"^\.version 8\.5$", ptx, re.M)  # CUDA 12.6's PTX ISA
        assert (tmp_path / f"{name}.sm_87.cubin").stat().st_size > 0


@needs_nvcc
def test_jetpack6_ptxas_refuses_nvcc13_ptx(tmp_path: Path) -> None:
    """Why the CUDA 12.6 check compiles with NVRTC 12.6 rather than this nvcc."""
    _, ptxas, _ = _cuda12()
    ptx = tmp_path / "delta.ptx"
    source = str(KERNELS["sparse_delta"])
    subprocess.run(["nvcc", "-ptx", "-arch=compute_87", source, "-o", ptx], check=True)
    done = subprocess.run(
        [ptxas, "-arch=sm_87", ptx, "-o", tmp_path / "x.cubin"], text=True, capture_output=True
    )
    assert done.returncode != 0 and "version" in done.stderr.lower()


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


def test_missing_cuda12_packages_is_a_one_line_error(monkeypatch, tmp_path: Path) -> None:
    import kernels.build

    monkeypatch.setattr(kernels.build, "_pypi_nvidia", lambda relative: None)
    with pytest.raises(KernelBuildError, match=r"pip install nvidia-cuda-nvrtc-cu12==12\.6\.85"):
        build_cubins_cuda12(tmp_path / "out")
    assert not (tmp_path / "out").exists()
