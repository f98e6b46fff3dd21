"""The C++ top-K selection of the torch path (kernels/cpu.py) against a stable sort."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import kernels.cpu
from kernels.build import KernelBuildError, build_cpu_select
from sdk.models import kem


@pytest.fixture(scope="module")
def select():
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler: the CPU selection cannot be built")
    built = kernels.cpu.topk_select()
    assert built is not None
    return built


def _select(select, dots: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
    b, n, rows = dots.shape
    index = torch.empty(b, rows, topk, dtype=torch.int64)
    select(dots.data_ptr(), b, n, rows, scale, topk, index.data_ptr())
    return index


def _random_dots(seed: int) -> tuple[torch.Tensor, int, float]:
    """Normal scores, or few distinct values (ties), with NaN, -0.0 and -inf sprinkled in."""
    rng = np.random.default_rng(seed)
    b, n, rows = int(rng.integers(1, 3)), int(rng.integers(1, 400)), int(rng.integers(1, 20))
    topk = int(rng.choice([1, n, int(rng.integers(1, n + 1))]))
    if seed % 3 == 0:
        dots = rng.integers(-2, 3, (b, n, rows)).astype(np.float32)
    else:
        dots = rng.standard_normal((b, n, rows)).astype(np.float32)
    for every, value, share in ((7, np.nan, 0.05), (5, -0.0, 0.2), (11, -np.inf, 0.1)):
        if seed % every == 0:
            dots[rng.random(dots.shape) < share] = value
    return torch.from_numpy(dots), topk, 1 / float(np.sqrt(rng.integers(1, 200)))


@pytest.mark.parametrize("seed", range(240))
def test_selection_equals_a_stable_descending_sort(select, seed: int) -> None:
    """NaN first, then larger scores, equal scores (-0.0 == 0.0 too) by lower key index."""
    dots, topk, scale = _random_dots(seed)
    scores = dots.transpose(1, 2) * scale  # the fp32 products the selection compares
    want = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :topk]
    assert torch.equal(_select(select, dots, topk, scale), want)


def test_long_rows_select_like_the_sort(select) -> None:
    """n = 65,536: many buffer cuts per row."""
    dots = torch.randn(1, 65536, 16, generator=torch.Generator().manual_seed(0))
    want = torch.sort(dots.transpose(1, 2), dim=-1, descending=True, stable=True).indices
    assert torch.equal(_select(select, dots, 256, 1.0), want[..., :256])


@pytest.fixture
def stock(monkeypatch):
    """Run the next calls with torch.topk selection."""
    return lambda: monkeypatch.setenv("SEMEDGE_NATIVE_TOPK", "0")


@pytest.mark.parametrize("n", [50, 9000])  # bmm / conv scores
def test_topk_attention_and_its_gradients_agree_with_the_torch_topk_path(select, stock, n):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, m, 32, generator=g, requires_grad=True) for m in (4, n, n))
    native = kem.topk_attention(q, k, v, 8)
    native_grads = torch.autograd.grad(native.square().sum(), (q, k, v))
    stock()
    assert kernels.cpu.topk_select() is None
    fallback = kem.topk_attention(q, k, v, 8)
    fallback_grads = torch.autograd.grad(fallback.square().sum(), (q, k, v))
    torch.testing.assert_close(native, fallback, rtol=0, atol=1e-6)
    for got, want in zip(native_grads, fallback_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_library_is_built_once_per_source(tmp_path) -> None:
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler")
    first = build_cpu_select(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_cpu_select(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_a_missing_compiler_is_one_line_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(KernelBuildError, match=r"cannot run .*no-such-c\+\+.*fix \$CXX"):
        build_cpu_select(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_without_the_library_topk_attention_warns_once_and_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setattr(kernels.cpu, "DEFAULT_OUT", tmp_path)
    kernels.cpu._load.cache_clear()
    try:
        q, k = torch.randn(1, 2, 8), torch.randn(1, 30, 8)
        eye = torch.eye(30)[None]
        with pytest.warns(RuntimeWarning, match="falls back to torch.topk"):
            out = kem.topk_attention(q, k, eye, 5)
        want = torch.topk(q @ k.transpose(1, 2), 5).indices.sort(-1).values
        assert torch.equal(torch.nonzero(out[0])[:, 1].view(2, 5), want[0])
        assert kernels.cpu.topk_select() is None  # remembered: no second build attempt
    finally:
        kernels.cpu._load.cache_clear()
