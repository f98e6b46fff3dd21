"""The link under heavy noise: adaptive frame size, selective repeat, never giving up."""

from __future__ import annotations

import random
import threading

import pytest
import serial

from firmware_bridge.framesize import FRAME_OVERHEAD, FrameSizer, goodput, optimal_chunk
from firmware_bridge.host import Flasher
from firmware_bridge.relay import Faults
from firmware_bridge.transport import Link

from .bridge_helpers import make_artifact
from .test_transfer import active_payload_sha, flash, source_sha


def simulate(sizer: FrameSizer, damaged_per_byte: float, frames: int, rng: random.Random):
    """Feed ``sizer`` the fates of ``frames`` frames on a line damaging that share of bytes."""
    for _ in range(frames):
        wire = sizer.chunk + FRAME_OVERHEAD
        sizer.outcome(wire, lost=rng.random() > (1 - damaged_per_byte) ** wire)


@pytest.mark.parametrize("q", [3e-3, 3e-4, 3e-5])
def test_frame_size_shrinks_to_the_optimum_and_grows_back_when_clean(q):
    rng = random.Random(7)
    sizer = FrameSizer(8192)
    assert sizer.chunk == 8192
    simulate(sizer, q, 600, rng)
    best = optimal_chunk(q)
    assert best / 2 < sizer.chunk < 2 * best
    # within a factor 2 of the optimum the predicted goodput is within 10 % of the best
    assert goodput(sizer.chunk, q) > 0.9 * goodput(best, q)
    simulate(sizer, 0.0, 600, rng)
    assert sizer.chunk == 8192


def test_optimum_matches_a_brute_force_search():
    for q in (1e-2, 1e-3, 1e-4):
        brute = max(range(1, 20000), key=lambda n: goodput(n, q))
        assert abs(optimal_chunk(q) - brute) <= 1


def test_flash_at_1e3_faults_per_byte_installs_exact_bytes(tmp_path, procs, relays):
    relay = relays(Faults(drop=1e-3, flip=1e-3, dup=1e-3, seed=3))
    art = make_artifact(tmp_path / "art", size=60_000)
    procs.agent(relay.agent_port, tmp_path / "root")
    res, out = flash(procs, relay.host_port, art, "--activate", "permanent", timeout=120)
    assert res.returncode == 0, res.stderr
    assert active_payload_sha(tmp_path / "root") == source_sha(art)
    stats = out["stats"]
    assert stats["lost_frames"] > 0 and stats["retransmitted"] > 0
    assert stats["frame_sizes"][0] == 8192 and min(stats["frame_sizes"]) < 512


def test_frame_size_grows_back_when_the_line_clears(tmp_path, procs, relays):
    relay = relays(Faults(drop=1e-3, flip=1e-3, dup=1e-3, seed=5))
    art = make_artifact(tmp_path / "art", size=600_000)
    procs.agent(relay.agent_port, tmp_path / "root")
    flasher = Flasher(Link(serial.Serial(relay.host_port, timeout=0.02), device=False),
                      progress=False)  # fmt: skip

    def clear_when_small() -> None:  # the noise stops once the frames have shrunk
        while min(flasher.stats.frame_sizes, default=8192) >= 256 and not stop.is_set():
            stop.wait(0.01)
        relay.faults = Faults()

    stop = threading.Event()
    clearer = threading.Thread(target=clear_when_small, daemon=True)
    clearer.start()
    try:
        flasher.flash(art, activate="permanent")
    finally:
        stop.set()
        clearer.join()
    sizes = flasher.stats.frame_sizes
    smallest = sizes.index(min(sizes))
    assert min(sizes) < 256 and max(sizes[smallest:]) > 4096
    assert active_payload_sha(tmp_path / "root") == source_sha(art)
