"""tools/semedge-agent.service: sandboxed, a dedicated user, and it finds `semedge`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "tools" / "semedge-agent.service"


def service_section() -> dict[str, list[str]]:
    """Every ``key=value`` of [Service] (a key may repeat, e.g. Environment=)."""
    section, keys = None, {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def exec_start(tmp_path: Path, overrides: dict[str, str]) -> list[str]:
    """Run ExecStart as systemd would (its Environment=, then the overrides standing in for
    /etc/default/semedge-agent) with a stub `semedge` on PATH that prints its own path and
    its arguments."""
    keys = service_section()
    env = {"HOME": str(tmp_path)}
    for assignment in keys["Environment"]:
        name, value = assignment.split("=", 1)
        env[name] = value
    stub = tmp_path / "bin" / "semedge"
    stub.parent.mkdir(exist_ok=True)
    if not stub.exists():
        stub.write_text("#!/bin/sh\nexec python3 -c 'import json, sys; "
                        'print(json.dumps(sys.argv[1:]))\' "$0" "$@"\n')  # fmt: skip
        stub.chmod(0o755)
    env["PATH"] = f"{stub.parent}:{env['PATH']}:{os.environ['PATH']}"
    env |= overrides
    argv = [part.replace("$$", "$") for part in shlex.split(keys["ExecStart"][0])]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def test_unit_runs_sandboxed_as_a_dedicated_user():
    keys = {k: v[-1] for k, v in service_section().items()}
    assert keys["User"] == "semedge" and "dialout" in keys["SupplementaryGroups"].split()
    assert keys["ProtectSystem"] == "strict" and keys["NoNewPrivileges"] == "yes"
    root = dict(a.split("=", 1) for a in service_section()["Environment"])["SEMEDGE_ROOT"]
    assert root in keys["ReadWritePaths"].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path):
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    res = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("overrides", "want_key"),
    [({}, True), ({"SEMEDGE_TRUSTED_KEY": ""}, False)],
)
def test_exec_start_finds_semedge_on_path_or_from_the_defaults_file(tmp_path, overrides, want_key):
    found, *args = exec_start(tmp_path, overrides)
    key = ["--trusted-key", "/etc/semedge/trusted.pub"] if want_key else []
    assert found == str(tmp_path / "bin" / "semedge")
    assert args == ["agent", "--port", "/dev/ttyGS0", "--root", "/var/lib/semedge", *key]
    venv_semedge = tmp_path / "venv" / "bin" / "semedge"  # SEMEDGE=$(command -v semedge)
    venv_semedge.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "bin" / "semedge", venv_semedge)
    found, *args = exec_start(tmp_path, {**overrides, "SEMEDGE": str(venv_semedge),
                                 "SEMEDGE_ARGS": "--test-attempts 2"})  # fmt: skip
    assert found == str(venv_semedge) and args[-2:] == ["--test-attempts", "2"]
