"""tools/validate_on_device.py: every step is walked, skipped ones say why, the report is kept.

PATH is reduced to /usr/bin:/bin so nvcc is always among the missing pieces.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "validate_on_device.py"
STEPS = ["fatbins", "plugin", "topk_memory", "sparse_delta", "device_deltas", "plugin_engines"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = str(TOOL.parents[1])
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("validate_on_device", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_dry_run_walks_every_step_and_says_why_each_is_skipped(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    done = _run("--dry-run", "--work", str(tmp_path / "w"), "--out", str(report), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(report.read_text())["steps"]
    assert [r["step"] for r in rows] == STEPS
    assert all(r["status"] == "skipped" and r["reason"].startswith("missing") for r in rows)
    reasons = {r["step"]: r["reason"] for r in rows}
    assert "nvcc" in reasons["fatbins"] and "TensorRT headers" in reasons["plugin"]
    assert "pycuda" in reasons["device_deltas"] and "tensorrt" in reasons["plugin_engines"]
    for row in rows:  # one human line per step with its status and reason
        line = next(x for x in done.stdout.splitlines() if f" {row['step']} " in x)
        assert "skipped" in line and row["reason"] in line
    assert not (tmp_path / "w").exists()


def test_without_a_jetson_it_fails_in_one_line_and_keeps_the_report(tmp_path: Path) -> None:
    done = _run("--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot validate on this machine, missing") and "nvcc" in line
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and {r["status"] for r in report["steps"]} == {"skipped"}


def test_a_failing_step_is_recorded_and_the_steps_after_it_skip(tool, tmp_path, monkeypatch):
    """nvcc claimed present but not on PATH: the real build fails, the walk goes on."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    facts = {"nvcc": "/claimed/nvcc", "tensorrt_headers": None, "pycuda": True, "gpu": "sm_87"}
    rows = {r["step"]: r for r in tool.walk(facts, tmp_path / "w", dry_run=False)}
    assert rows["fatbins"]["status"] == "failed"
    assert "nvcc not found" in rows["fatbins"]["reason"] and "\n" not in rows["fatbins"]["reason"]
    for step in ("topk_memory", "sparse_delta", "device_deltas"):
        assert rows[step] | {"description": ""} == {
            "step": step,
            "description": "",
            "status": "skipped",
            "reason": "needs step fatbins",
        }
    assert rows["plugin"]["reason"] == "missing TensorRT headers (NvInfer.h)"


def test_a_dry_run_on_a_complete_machine_would_run_everything(tool, tmp_path):
    facts = {key: "yes" for key in tool.NEEDS}
    rows = tool.walk(facts, tmp_path / "w", dry_run=True)
    assert [r["status"] for r in rows] == ["would run"] * len(STEPS)
    assert not (tmp_path / "w").exists()
