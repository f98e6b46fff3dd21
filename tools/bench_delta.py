"""Benchmark: switching a ZFDA delta on/off vs the memory-traffic floor vs a checkpoint load.

For each sparsity γ a delta with the ZFDA layer budget (both sides, random positions,
fp16 values) is written to a file, loaded into :class:`sdk.delta.TorchDeltas`, and
timed side by side in one run with:

* the memory-traffic floor: bytes the scattered reads and writes must touch divided
  by this machine's copy bandwidth, measured here with a large numpy copy. Bytes per
  switch: every 64-byte cache line holding a modified weight is read and written
  (activate and deactivate each), plus the streamed arrays the core reads/writes
  (8-byte global index, 4-byte value, 4-byte saved base value per entry);
* warm (repeated switching, touched lines stay cached) and cold (256 MiB streamed
  through the caches before each activate and each deactivate) timings;
* what a user would otherwise do: load that domain's full fine-tuned checkpoint from
  its file (``safetensors.torch.load_file`` + ``load_state_dict``), with the file in
  the page cache (the most favourable case for it) and with the file's pages dropped
  first (``posix_fadvise(DONTNEED)``, as after a reboot or under memory pressure). That
  needs Linux and a disk-backed ``--dir`` (a tmpfs keeps its pages; the script says so).

Goals: activate+deactivate within 2x of the floor; >= 10x faster than the checkpoint
load at γ = 1 % and >= 50x at γ = 0.1 %. Usage::

    python tools/bench_delta.py [--hidden 256] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from sdk.adapt.zfda import adaptable_weights, allocate_budget
from sdk.checkpoint import WEIGHTS, save_checkpoint
from sdk.delta import Delta, DeltaEntry, TorchDeltas, save_delta
from sdk.fingerprint import model_fingerprint
from sdk.models import DeepJSCC

LINE = 64
GOALS = {0.01: 10.0, 0.001: 50.0}


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large numpy copy (read + write both counted)."""
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best


_EVICT = np.ones(2**26, dtype=np.float32)


def evict() -> None:
    """Stream 256 MiB through the caches so the next switch starts cold."""
    np.add(_EVICT, 1.0, out=_EVICT)


def drop_from_page_cache(path: str) -> None:
    """Ask the kernel to forget ``path``'s cached pages, so the next read goes to disk."""
    if not hasattr(os, "posix_fadvise"):
        raise SystemExit("the from-disk load needs os.posix_fadvise (Linux)")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def random_delta(model: torch.nn.Module, sparsity: float, fingerprint: str, seed: int) -> Delta:
    """A delta with the ZFDA budget over both sides and uniformly random positions."""
    rng = np.random.default_rng(seed)
    dims = adaptable_weights(model, "both")
    params = dict(model.named_parameters())
    sizes = {n: params[n].numel() for n in dims}
    budget = allocate_budget(sizes, {n: float(sum(d)) for n, d in dims.items()}, sparsity)
    entries = {}
    for name, k in budget.items():
        idx = np.sort(rng.choice(sizes[name], k, replace=False)).astype(np.int64)
        values = (rng.standard_normal(k) * 1e-2).astype(np.float16)
        entries[name] = DeltaEntry(idx, values, tuple(params[name].shape))
    return Delta("bench", fingerprint, sparsity, entries)


def floor_bytes(deltas: TorchDeltas, name: str) -> tuple[int, int]:
    """(touched cache lines, bytes moved by one activate + deactivate at the floor)."""
    prepared = deltas._get(name)
    lines = 0
    streamed = 0
    for seg in prepared.segments:
        lines += len(np.unique(seg.index * seg.flat.itemsize // LINE))
        n = len(seg.index)
        streamed += n * (seg.index.itemsize * 2 + seg.values.itemsize + seg.saved.itemsize * 2)
    return lines, 2 * (2 * lines * LINE) + streamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256, help="DeepJSCC width (256: ~10 M)")
    parser.add_argument("--repeats", type=int, default=200, help="timed switches per γ")
    parser.add_argument("--cold-repeats", type=int, default=20, help="timed cold-cache switches")
    parser.add_argument("--load-repeats", type=int, default=10, help="timed checkpoint loads")
    parser.add_argument(
        "--dir", help="where to write the checkpoints (disk-backed; default: the temp dir)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model = DeepJSCC(hidden=args.hidden).eval()
    n_params = sum(p.numel() for p in model.parameters())
    fingerprint = model_fingerprint(model)
    bandwidth = copy_bandwidth()
    deltas = TorchDeltas(model)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if (
            subprocess.run(
                ["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True
            ).stdout.strip()
            == "tmpfs"
        ):
            print(f"note: {tmp} is a tmpfs; its pages cannot be dropped, pass --dir on a disk")
        base_dir = save_checkpoint(model, Path(tmp) / "base")
        ckpt_bytes = os.path.getsize(base_dir / WEIGHTS)
        for sparsity, speedup_goal in GOALS.items():
            delta = random_delta(model, sparsity, fingerprint, seed=int(sparsity * 1e6))
            sizes = {}
            for enc in ("gap8", "int32"):
                path = save_delta(delta, Path(tmp) / f"{sparsity}-{enc}.delta.safetensors", enc)
                sizes[enc] = os.path.getsize(path)
            name = deltas.load(Path(tmp) / f"{sparsity}-gap8.delta.safetensors", f"g{sparsity}")
            # The alternative: the same domain as a full fine-tuned checkpoint on disk.
            deltas.activate(name)
            tuned_dir = save_checkpoint(model, Path(tmp) / f"tuned-{sparsity}")
            deltas.deactivate()
            state_path = str(tuned_dir / WEIGHTS)

            def load(p: str = state_path) -> None:
                model.load_state_dict(load_file(p))

            load_ms = 1e3 * statistics.median(_timed(load) for _ in range(args.load_repeats))
            disk = []
            for _ in range(args.load_repeats):
                drop_from_page_cache(state_path)
                disk.append(_timed(load))
            disk_ms = 1e3 * statistics.median(disk)
            model.load_state_dict(load_file(str(base_dir / WEIGHTS)))
            for _ in range(5):
                deltas.activate(name)
                deltas.deactivate()
            on, off = [], []
            for _ in range(args.repeats):
                on.append(_timed(lambda n=name: deltas.activate(n)))
                off.append(_timed(deltas.deactivate))
            cold = []
            for _ in range(args.cold_repeats):
                evict()
                t = _timed(lambda n=name: deltas.activate(n))
                evict()
                cold.append(t + _timed(deltas.deactivate))
            assert model_fingerprint(model) == fingerprint, "restore was not bit-exact"
            lines, moved = floor_bytes(deltas, name)
            act, deact = 1e3 * statistics.median(on), 1e3 * statistics.median(off)
            floor_ms = 1e3 * moved / bandwidth
            rows.append(
                dict(
                    sparsity=sparsity,
                    nnz=delta.nnz,
                    lines=lines,
                    floor=floor_ms,
                    act=act,
                    deact=deact,
                    load=load_ms,
                    disk=disk_ms,
                    cold=1e3 * statistics.median(cold),
                    gap8=100 * sizes["gap8"] / ckpt_bytes,
                    int32=100 * sizes["int32"] / ckpt_bytes,
                    goal=speedup_goal,
                )
            )
    print(
        f"model DeepJSCC(hidden={args.hidden}): {n_params / 1e6:.2f} M parameters, "
        f"checkpoint {ckpt_bytes / 2**20:.1f} MiB; copy bandwidth {bandwidth / 1e9:.2f} GB/s"
    )
    header = (
        "| γ | nnz | lines | floor ms | activate ms | deactivate ms | on+off ms | x floor "
        "| cold on+off ms | cold x floor | ckpt load ms cached / from disk "
        "| speedup cached / from disk (goal) | file % of ckpt gap8 / int32 |"
    )
    print(header)
    print("|---" * 13 + "|")
    for r in rows:
        total = r["act"] + r["deact"]
        cached, disk = r["load"] / total, r["disk"] / total
        print(
            f"| {100 * r['sparsity']:g} % | {r['nnz']} | {r['lines']} | {r['floor']:.3f} "
            f"| {r['act']:.3f} | {r['deact']:.3f} | {total:.3f} | {total / r['floor']:.2f} "
            f"| {r['cold']:.3f} | {r['cold'] / r['floor']:.2f} "
            f"| {r['load']:.1f} / {r['disk']:.1f} "
            f"| {cached:.0f}x / {disk:.0f}x (>= {r['goal']:.0f}x: "
            f"{'met' if cached >= r['goal'] else 'MISSED'} / "
            f"{'met' if disk >= r['goal'] else 'MISSED'}) "
            f"| {r['gap8']:.3f} % / {r['int32']:.3f} % |"
        )
    for r in rows:
        for label, ms in (("warm", r["act"] + r["deact"]), ("cold", r["cold"])):
            if ms > 2 * r["floor"]:
                print(f"goal MISSED at γ={r['sparsity']:g} ({label}): {ms / r['floor']:.2f}x floor")


if __name__ == "__main__":
    main()
