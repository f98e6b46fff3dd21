"""A host of this release and an agent of protocol 1 (the real one, from the project's
history): the host falls back to protocol 1, flashing and the version-1 verbs work, the
newer verbs are refused in one line that says to update the agent (docs/protocol.md)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from firmware_bridge.host import serial_flasher

from .bridge_helpers import make_artifact, make_update
from .test_verbs import run_cli

V1 = "1f1c972f8772f3c22d48cf69806297e9f458ae6e"
"""The last commit whose agent speaks protocol 1 only."""


@pytest.fixture(scope="module")
def v1_tree(tmp_path_factory) -> Path:
    """That commit's ``sdk`` and ``firmware_bridge``, unpacked from git."""
    repo = Path(__file__).resolve().parents[2]
    cmd = ["git", "-C", str(repo), "archive", V1, "firmware_bridge", "sdk"]
    try:
        archive = subprocess.run(cmd, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the protocol-1 agent ({V1[:9]}) is not in this checkout's history: {exc}")
    where = tmp_path_factory.mktemp("v1-agent")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def test_a_protocol_1_agent_flashes_and_names_the_update(tmp_path, v1_tree, procs, relays):
    relay = relays()
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"free_bytes": 10**9}))
    agent = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "agent", "--port", relay.agent_port, "--root",
         str(tmp_path / "root"), "--facts", str(facts)],
        cwd=v1_tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    procs.procs.append(agent)
    flasher = serial_flasher(relay.host_port, 921600, progress=False)
    try:
        result = flasher.flash(make_artifact(tmp_path / "v1"), activate="test")
        assert flasher.protocol == 1 and result["activated"] == "test"
        assert flasher.status()["models"]["rx"]["active"] == "A"
    finally:
        flasher.close()
    port = ("--port", relay.host_port)
    assert run_cli("device", "confirm", *port).returncode == 0
    assert "rx: active A (v1) [confirmed]" in run_cli("device", "status", *port).stdout
    for verb in (("list",), ("deactivate-delta",), ("pull", "active/manifest.json")):
        res = run_cli("device", *verb, *port)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "device agent speaks protocol 1" in res.stderr
        assert "update the agent on the device" in res.stderr
    update = make_update(tmp_path / "partner.update.safetensors", "ab" * 32, "cd" * 32)
    res = run_cli("flash", str(update), *port)  # protocol 1 knows artifacts and deltas only
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "has no update packages; update the agent on the device" in res.stderr
    assert agent.poll() is None  # it never saw a message it does not know
