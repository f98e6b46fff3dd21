"""The TopKMemory TensorRT plugin against TensorRT's real headers (10.3.0 / JetPack 6 and
10.13.3 / JetPack 7, from shared/third_party; skipped with the reason where absent).

(a) the real library (nvcc, device code) builds with -Wall -Wextra -Werror and exports only
getCreators and setLoggerFinder; (b) ``plugin_harness.cpp`` loads the emulated build of the
same plugin and drives it as TensorRT's registry, builder and runtime would, and its
``enqueue`` runs the kernels on the CPU; the results are compared with the numpy reference.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernels.build import (
    KernelBuildError,
    build_plugin,
    build_plugin_emulated,
    cuda_includes,
    host_compiler,
)
from kernels.reference import REFERENCES

HARNESS = Path(__file__).with_name("plugin_harness.cpp")


def _exports(library: Path) -> set[str]:
    listed = subprocess.run(
        ["nm", "-D", "--defined-only", library], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in listed.splitlines() if line.split()[1:2] == ["T"]}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not on PATH")
def test_plugin_library_builds_with_werror_and_exports_two_symbols(tensorrt_include, tmp_path):
    library = build_plugin(tmp_path, str(tensorrt_include), device=None, strict=True)
    assert _exports(library) == {"getCreators", "setLoggerFinder"}
    undefined = subprocess.run(
        ["nm", "-D", "--undefined-only", library], capture_output=True, text=True, check=True
    ).stdout
    assert "nvinfer" not in undefined  # needs no TensorRT library at link time


def test_harness_drives_the_plugin_like_tensorrt(tensorrt_include, tmp_path):
    library = build_plugin_emulated(tmp_path, str(tensorrt_include))
    harness = tmp_path / "plugin_harness"
    includes = [f"-isystem{folder}" for folder in (tensorrt_include, *cuda_includes())]
    subprocess.run(
        [
            *host_compiler("compile the plugin harness"),
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            *includes,
            str(HARNESS),
            "-ldl",
            "-o",
            str(harness),
        ],
        check=True,
    )
    B, L, n, d, topk = 2, 3, 300, 24, 5
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, L, d), (B, n, d), (B, n, d)))
    k[1, 100:110] = k[1, 0]  # exact ties: the lower index must win
    (tmp_path / "in.bin").write_bytes(q.tobytes() + k.tobytes() + v.tobytes())
    done = subprocess.run(
        [
            harness,
            library,
            tmp_path / "in.bin",
            tmp_path / "out.bin",
            *map(str, (B, L, n, d, topk)),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and done.stdout.count("ok: ") >= 40
    raw = np.fromfile(tmp_path / "out.bin", np.uint8)
    size = B * L * d * 4 + B * L * topk * 4
    for run, dtype in enumerate((np.float32, np.float16)):
        part = raw[run * size : (run + 1) * size]
        out = part[: B * L * d * 4].view(np.float32).reshape(B, L, d)
        kept = part[B * L * d * 4 :].view(np.int32).reshape(B, L, topk)
        want, index = REFERENCES["topk_memory"](*(a.astype(dtype) for a in (q, k, v)), topk)
        np.testing.assert_array_equal(np.sort(kept, -1), np.sort(index, -1))
        np.testing.assert_allclose(out, want, atol=(1e-5, 2e-3)[run], rtol=0)


@pytest.mark.parametrize("build", [build_plugin, build_plugin_emulated])
def test_missing_tensorrt_headers_is_a_one_line_error(build, tmp_path, monkeypatch) -> None:
    import kernels.build

    monkeypatch.setattr(kernels.build, "TENSORRT_INCLUDES", ())
    with pytest.raises(KernelBuildError, match=r"NvInfer.h\) not found.*--tensorrt-include"):
        build(tmp_path / "out", str(tmp_path))
    assert not (tmp_path / "out").exists()
