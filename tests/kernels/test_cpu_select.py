"""The C++ top-K selection of the torch path (kernels/cpu.py) and its build."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import kernels.cpu
from kernels.build import KernelBuildError, build_cpu_select, cache_dir, private_dir
from sdk.models import kem


@pytest.fixture
def native(monkeypatch):
    """The C++ selection on, whatever the caller's SEMEDGE_NATIVE_TOPK says."""
    monkeypatch.delenv("SEMEDGE_NATIVE_TOPK", raising=False)
    if kernels.cpu.library() is None:
        pytest.skip("no C++ compiler: the CPU selection cannot be built")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache and a loader that has not tried to build yet."""
    monkeypatch.setenv("SEMEDGE_KERNEL_CACHE", str(tmp_path / "cache"))
    kernels.cpu._load.cache_clear()
    yield tmp_path / "cache"
    kernels.cpu._load.cache_clear()


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


def _sorted_top(dots: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
    """NaN first, then larger scores, equal scores (-0.0 == 0.0 too) by lower key index."""
    scores = dots.transpose(1, 2) * scale  # the fp32 products the selection compares
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :topk]


@pytest.mark.parametrize("seed", range(240))
def test_selection_equals_a_stable_descending_sort(native, seed: int) -> None:
    dots, topk, scale = _random_dots(seed)
    _, index = kem._top_keys(dots, topk, scale)
    assert torch.equal(index, _sorted_top(dots, topk, scale))


def test_long_rows_select_like_the_sort(native) -> None:
    """n = 65,536: many buffer cuts per row."""
    dots = torch.randn(1, 65536, 16, generator=torch.Generator().manual_seed(0))
    _, index = kem._top_keys(dots, 256, 1.0)
    assert torch.equal(index, _sorted_top(dots, 256, 1.0))


@pytest.mark.parametrize("n", [50, 9000])  # bmm / conv scores
def test_topk_attention_and_its_gradients_agree_with_the_torch_topk_path(native, monkeypatch, n):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, m, 32, generator=g, requires_grad=True) for m in (4, n, n))
    out = kem.topk_attention(q, k, v, 8)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    monkeypatch.setenv("SEMEDGE_NATIVE_TOPK", "0")
    assert kernels.cpu.topk_select() is None
    want = kem.topk_attention(q, k, v, 8)
    want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the tie check's branch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, still in use
def test_jvp_and_jit_trace_take_the_torch_path(native) -> None:
    """The C++ selection reads raw storage: transforms and tracing must not reach it."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, m, 8, generator=g) for m in (2, 40, 40))
    out, tangent = torch.func.jvp(lambda x: kem.topk_attention(x, k, v, 5), (q,), (q,))
    torch.testing.assert_close(out, kem.topk_attention(q, k, v, 5))
    assert torch.isfinite(tangent).all()
    traced = torch.jit.trace(lambda a, b, c: kem.topk_attention(a, b, c, 5), (q, k, v))
    other = tuple(torch.randn(1, m, 8, generator=g) for m in (2, 40, 40))
    torch.testing.assert_close(traced(*other), kem.topk_attention(*other, 5))


def test_a_default_device_does_not_redirect_the_indices(native) -> None:
    q, k, v = torch.randn(1, 2, 8), torch.randn(1, 50, 8), torch.randn(1, 50, 8)
    want = kem.topk_attention(q, k, v, 4)
    with torch.device("meta"):
        got = kem.topk_attention(q, k, v, 4)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "shapes, topk, message",
    [
        (((2, 3, 8), (1, 50, 8), (1, 50, 8)), 4, r"takes q\[B,L,d\]"),
        (((1, 3, 8), (1, 50, 4), (1, 50, 8)), 4, r"takes q\[B,L,d\]"),
        (((1, 3, 8), (1, 50, 8), (1, 49, 8)), 4, r"takes q\[B,L,d\]"),
        (((1, 3, 8), (1, 50, 8), (1, 50, 8)), 0, r"needs topk >= 1 and a key"),
        (((1, 3, 8), (1, 0, 8), (1, 0, 8)), 4, r"needs topk >= 1 and a key"),
    ],
)
def test_bad_inputs_are_one_line_errors(shapes, topk, message) -> None:
    with pytest.raises(ValueError, match=message):
        kem.topk_attention(*(torch.randn(s) for s in shapes), topk)


def test_the_library_is_built_once_per_source_and_machine(native, tmp_path) -> None:
    first = build_cpu_select(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_cpu_select(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_threads_building_at_once_all_get_the_library(native, tmp_path) -> None:
    built: list[Path] = []
    workers = [
        threading.Thread(target=lambda: built.append(build_cpu_select(tmp_path, replace=True)))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(built) == 4 and len(set(built)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [built[0].name]


def test_the_cache_is_per_user_and_private(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SEMEDGE_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "semedge" / "kernels"
    made = private_dir(cache_dir())
    assert made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(KernelBuildError, match=r"others can write to it.*SEMEDGE_KERNEL_CACHE"):
        private_dir(shared)


def test_a_cached_library_that_will_not_load_is_rebuilt(native, fresh_cache) -> None:
    planted = build_cpu_select(fresh_cache)
    planted.write_bytes(b"not a shared library")
    assert kernels.cpu.library() is not None
    assert planted.read_bytes()[:4] == b"\x7fELF"


def test_a_missing_compiler_is_one_line_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(KernelBuildError, match=r"cannot run .*no-such-c\+\+.*fix \$CXX"):
        build_cpu_select(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_without_the_library_topk_attention_warns_once_and_still_works(
    fresh_cache, tmp_path, monkeypatch
):
    monkeypatch.delenv("SEMEDGE_NATIVE_TOPK", raising=False)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    q, k = torch.randn(1, 2, 8), torch.randn(1, 30, 8)
    eye = torch.eye(30)[None]
    with pytest.warns(RuntimeWarning, match="falls back to torch.topk"):
        out = kem.topk_attention(q, k, eye, 5)
    want = torch.topk(q @ k.transpose(1, 2), 5).indices.sort(-1).values
    assert torch.equal(torch.nonzero(out[0])[:, 1].view(2, 5), want[0])
    assert kernels.cpu.topk_select() is None  # remembered: no second build attempt
