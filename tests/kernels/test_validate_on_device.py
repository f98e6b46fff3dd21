"""tools/validate_on_device.py: a dry run shows the plan; without a Jetson it stops in one line.

PATH is reduced to /usr/bin:/bin so nvcc is always among the missing pieces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "validate_on_device.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = str(TOOL.parents[1])
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )


def test_dry_run_prints_the_plan_and_builds_nothing(tmp_path: Path) -> None:
    done = _run("--dry-run", "--work", str(tmp_path / "w"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plan:" in done.stdout and "TopKMemory" in done.stdout
    assert "missing:" in done.stdout
    assert not (tmp_path / "w").exists()


def test_without_a_jetson_it_fails_fast_with_one_line(tmp_path: Path) -> None:
    done = _run("--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot validate on this machine, missing") and "nvcc" in line
    assert not (tmp_path / "r.json").exists()
