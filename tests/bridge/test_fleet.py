"""Fleet flashing: several simulated devices (agent processes on ptys) at once."""

from __future__ import annotations

import json
import re

import pytest

from .bridge_helpers import make_artifact
from .test_transfer import active_payload_sha, source_sha


def test_fleet_flash_four_devices_one_failing(tmp_path, procs, relays):
    art = make_artifact(tmp_path / "art", size=80_000)
    links = [relays() for _ in range(4)]
    roots = [tmp_path / f"root{i}" for i in range(4)]
    for i, (relay, root) in enumerate(zip(links, roots, strict=True)):
        facts = {"free_bytes": 1000 if i == 2 else 10**9}  # device 2 is full
        procs.agent(relay.agent_port, root, facts=facts)
    fleet_file = tmp_path / "fleet.txt"
    fleet_file.write_text(f"# lab bench\n{links[2].host_port}\n\n{links[3].host_port}  # spare\n")
    res = procs.cli("flash", str(art), "--port", links[0].host_port, "--port",
                    links[1].host_port, "--fleet", str(fleet_file), "--activate",
                    "permanent", "--json", timeout=120)  # fmt: skip
    assert res.returncode == 1, res.stderr  # one device failed
    results = json.loads(res.stdout)
    assert [r["port"] for r in results] == [link.host_port for link in links]
    assert [r["ok"] for r in results] == [True, True, False, True]
    assert "NO_SPACE" in results[2]["error"]
    for i, root in enumerate(roots):
        want = None if i == 2 else source_sha(art)
        assert active_payload_sha(root) == want
    # a progress line per device that got to upload, named by its port
    for i, link in enumerate(links):
        shown = re.search(re.escape(link.host_port) + r" *:", res.stderr) is not None
        assert shown == (i != 2)


def test_fleet_summary_table(tmp_path, procs, relays):
    art = make_artifact(tmp_path / "art", size=10_000)
    links = [relays() for _ in range(2)]
    for i, relay in enumerate(links):
        procs.agent(relay.agent_port, tmp_path / f"root{i}")
    res = procs.cli("flash", str(art), "--port", links[0].host_port, "--port",
                    links[1].host_port, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["PORT", "RESULT", "SECONDS", "DETAIL"]
    assert all(" ok " in line and "installed rx in slot A" in line for line in lines[1:3])
    assert lines[-1] == "2 of 2 devices flashed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no device: give --port"),
        (["--port", "/dev/x", "--port", "/dev/x"], "/dev/x listed more than once"),
        (["--fleet", "missing.txt"], "cannot read fleet file missing.txt"),
        (["--fleet", "empty.txt"], "lists no ports"),
    ],
)
def test_fleet_bad_input_is_one_line(tmp_path, procs, monkeypatch, args, message):
    art = make_artifact(tmp_path / "art", size=1_000)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    monkeypatch.chdir(tmp_path)
    res = procs.cli("flash", str(art), *args)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
