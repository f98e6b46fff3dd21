"""Host and agent as separate processes over ptys, through a fault-injecting relay."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from firmware_bridge.relay import Faults
from firmware_bridge.slots import INSTALL_STEPS, SlotStore
from sdk import artifact

from .bridge_helpers import CLI, make_artifact


def active_payload_sha(root: Path, name: str = "rx") -> str | None:
    """SHA-256 of the active slot's payload after checking the slot verifies; None if none."""
    store = SlotStore(root)
    path = store.active_dir(name) if name in store.models() else None
    if path is None:
        return None
    manifest = artifact.verify_artifact(path)
    return manifest["files"]["model.onnx"]["sha256"]


def source_sha(art: Path) -> str:
    return artifact.read_manifest(art)["files"]["model.onnx"]["sha256"]


def size_of(art: Path) -> int:
    """Bytes of the .tar the flasher sends for an artifact directory."""
    return artifact.pack(art, art.with_name(art.name + ".tar")).stat().st_size


def flash(procs, port, art, *extra, timeout=60):
    res = procs.cli("flash", "--port", port, str(art), "--json", *extra, timeout=timeout)
    return res, (json.loads(res.stdout) if res.returncode == 0 else None)


def test_flash_status_and_torch_free(tmp_path, procs, relays):
    relay = relays()
    art = make_artifact(tmp_path / "art", size=150_000)
    procs.agent(relay.agent_port, tmp_path / "root")
    res, out = flash(procs, relay.host_port, art)
    assert res.returncode == 0, res.stderr
    assert out["stats"]["retransmitted"] == 0 and out["activated"] == "test"
    assert active_payload_sha(tmp_path / "root") == source_sha(art)
    status = procs.cli("device", "status", "--port", relay.host_port, "--json")
    models = json.loads(status.stdout)["models"]
    assert models["rx"]["active"] == "A" and models["rx"]["test"] == {
        "slot": "A",
        "attempts_left": 0,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transfer_under_faults_installs_exact_bytes(tmp_path, procs, relays, seed):
    # ~1 damaged byte per 30 KB: a few frames of each transfer are hit
    faults = Faults(drop=1e-5, flip=1e-5, dup=1e-5, stall=0.02, seed=seed,
                    disconnect_after=[random.Random(seed).randrange(20_000, 180_000)],
                    disconnect_seconds=4.0)  # fmt: skip
    relay = relays(faults)
    old = make_artifact(tmp_path / "old", size=5_000, seed=99)
    art = make_artifact(tmp_path / "art", size=200_000, seed=seed, version="2")
    root = tmp_path / "root"
    procs.agent(relay.agent_port, root)
    # the first artifact may be damaged by faults too: retry until installed
    for _ in range(5):
        res, _ = flash(procs, relay.host_port, old, "--activate", "permanent")
        if res.returncode == 0:
            break
    assert active_payload_sha(root) == source_sha(old)
    res, out = flash(procs, relay.host_port, art, "--activate", "permanent", timeout=90)
    installed = active_payload_sha(root)
    if res.returncode == 0:
        assert installed == source_sha(art)
        assert out["stats"]["reconnects"] >= 1  # the 4 s cut outlasted the link timeout
    else:  # gave up: nothing half-installed, the previous artifact still runs
        assert installed == source_sha(old)


def test_host_restart_resumes_with_little_retransmission(tmp_path, procs, relays):
    relay = relays(Faults(rate=400_000))
    art = make_artifact(tmp_path / "art", size=600_000)
    size = size_of(art)
    root = tmp_path / "root"
    procs.agent(relay.agent_port, root)
    host = subprocess.Popen([*CLI, "flash", "--port", relay.host_port, str(art)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    procs.procs.append(host)  # killed mid-transfer below
    part = root / "incoming"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = list(part.glob("*.part"))
        if parts and parts[0].stat().st_size > size // 3:
            break
        time.sleep(0.02)
    host.kill()
    host.wait()
    sent_by_first = relay.to_agent
    have = parts[0].stat().st_size
    time.sleep(0.3)
    res, out = flash(procs, relay.host_port, art)
    assert res.returncode == 0, res.stderr
    stats = out["stats"]
    assert stats["resumed_from"][0] >= have > 0
    # the killed host had at most one window in flight beyond what the device kept
    # (wire bytes: + 1 % framing on what arrived, + one frame and the control frames)
    resumed = stats["resumed_from"][0]
    assert sent_by_first - resumed <= 0.01 * resumed + 64 * 1024 + 8192
    assert stats["retransmitted"] == 0
    assert stats["payload_sent"] == size_of(art) - stats["resumed_from"][0]
    assert active_payload_sha(root) == source_sha(art)


@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_agent_killed_at_every_install_step(tmp_path, procs, relays, step):
    relay = relays()
    root = tmp_path / "root"
    old = make_artifact(tmp_path / "old", size=20_000, seed=1)
    new = make_artifact(tmp_path / "new", size=30_000, seed=2, version="2")
    agent = procs.agent(relay.agent_port, root)
    assert flash(procs, relay.host_port, old, "--activate", "permanent")[0].returncode == 0
    agent.kill()
    agent.wait()
    crashing = procs.agent(relay.agent_port, root, env={"SEMEDGE_AGENT_CRASH_AT": step})
    res, _ = flash(procs, relay.host_port, new, "--activate", "permanent", "--retries", "0")
    assert res.returncode != 0
    assert crashing.wait(timeout=10) == -9  # SIGKILLed itself at that step
    # exactly one valid active artifact: the old one, or the complete new one
    assert active_payload_sha(root) in (source_sha(old), source_sha(new))
    # and the device keeps working: a fresh agent finishes the update
    procs.agent(relay.agent_port, root)
    res, out = flash(procs, relay.host_port, new, "--activate", "permanent")
    assert res.returncode == 0, res.stderr
    assert active_payload_sha(root) == source_sha(new)
    if step == "mid-transfer":  # the restarted agent resumed from its partial file
        assert out["stats"]["resumed_from"][0] >= size_of(new) // 2
        assert out["stats"]["payload_sent"] <= size_of(new) - out["stats"]["resumed_from"][0]


def test_other_artifact_discards_the_partial(tmp_path, procs, relays):
    relay = relays(Faults(rate=200_000))
    root = tmp_path / "root"
    procs.agent(relay.agent_port, root)
    big = make_artifact(tmp_path / "big", size=600_000, seed=1)
    host = subprocess.Popen([*CLI, "flash", "--port", relay.host_port, str(big)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    procs.procs.append(host)
    deadline = time.monotonic() + 20
    while not [f for f in (root / "incoming").glob("*.part") if f.stat().st_size > 50_000]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    host.kill()
    host.wait()
    small = make_artifact(tmp_path / "small", size=5_000, seed=2)
    res, out = flash(procs, relay.host_port, small)
    assert res.returncode == 0, res.stderr
    assert out["stats"]["resumed_from"] == [0]
    assert list((root / "incoming").iterdir()) == []  # big's partial is gone
    assert active_payload_sha(root) == source_sha(small)
