"""Two processes changing one model's ``state.json`` at once — the agent's store and
``semedge adapt --install`` (``sdk.adapt.ondevice.install_local``) — lose neither change:
every read-modify-write holds the model's ``flock``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from firmware_bridge.slots import STOP_ENV, SlotStore
from sdk import artifact

from .bridge_helpers import make_artifact, make_delta, make_update

BASE = "ab" * 32
APPLY = "import sys; from firmware_bridge.slots import SlotStore; SlotStore(sys.argv[1]).apply_change('rx', sys.argv[2])"  # noqa: E501
INSTALL = "import sys; from sdk.adapt.ondevice import install_local; install_local(sys.argv[1], sys.argv[2], activate=True)"  # noqa: E501


def waits_on_a_lock(pid: int) -> bool:
    """``pid`` is blocked in ``flock`` (a ``->`` line of /proc/locks names it)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any(f[1] == "->" and f[5] == str(pid) for f in map(str.split, lines) if len(f) > 5)


def python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **(env or {})},
                            stderr=subprocess.PIPE)  # fmt: skip


def test_concurrent_changes_are_never_lost(tmp_path):
    root = tmp_path / "root"
    store = SlotStore(root)
    art = artifact.pack(make_artifact(tmp_path / "v1", fingerprint=BASE))
    store.activate("rx", store.stage("rx", art), test=False)
    delta = make_delta(tmp_path / "d.delta.safetensors", BASE)  # changes w, the update u
    store.install_change("rx", delta, delta.name)
    update = make_update(tmp_path / "u.update.safetensors", BASE, "cd" * 32)

    # the agent's write stops after its new state.json is written, before the rename
    agent = python(APPLY, str(root), delta.name, env={STOP_ENV: "state-written"})
    _, status = os.waitpid(agent.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), agent.stderr.read() if agent.stderr else status
    try:
        install = python(INSTALL, str(root), str(update))
        deadline = time.monotonic() + 120  # a guard against a hang, not a speed check
        while install.poll() is None and not waits_on_a_lock(install.pid):
            assert time.monotonic() < deadline, "install neither finished nor waited"
            time.sleep(0.02)
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    assert agent.wait(timeout=60) == 0, agent.stderr.read() if agent.stderr else ""
    assert install.wait(timeout=60) == 0, install.stderr.read() if install.stderr else ""
    on = SlotStore(root).active_changes("rx")
    assert on == {"delta": delta.name, "update": update.name}


def test_a_restart_never_sweeps_a_write_in_progress(tmp_path):
    """The agent's start-up clean-up (temp files a power cut left) waits for the model's
    lock, so an install paused mid-write by another process still lands."""
    root = tmp_path / "root"
    store = SlotStore(root)
    art = artifact.pack(make_artifact(tmp_path / "v1", fingerprint=BASE))
    store.activate("rx", store.stage("rx", art), test=False)
    update = make_update(tmp_path / "u.update.safetensors", BASE, "cd" * 32)
    install = python(INSTALL, str(root), str(update), env={STOP_ENV: "change-written"})
    _, status = os.waitpid(install.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), install.stderr.read() if install.stderr else status
    boot = python("import sys; from firmware_bridge.slots import SlotStore; "
                  "SlotStore(sys.argv[1]).boot()", str(root))  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a speed check
        while boot.poll() is None and not waits_on_a_lock(boot.pid):
            assert time.monotonic() < deadline, "boot neither finished nor waited"
            time.sleep(0.02)
    finally:
        os.kill(install.pid, signal.SIGCONT)
    assert install.wait(timeout=60) == 0, install.stderr.read() if install.stderr else ""
    assert boot.wait(timeout=60) == 0, boot.stderr.read() if boot.stderr else ""
    assert SlotStore(root).active_changes("rx")["update"] == update.name
