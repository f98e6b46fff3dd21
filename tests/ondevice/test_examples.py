"""The on-device examples run end to end on tiny settings, as a user would start them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(name: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), *sys.path])}
    res = subprocess.run([sys.executable, str(EXAMPLES / name), "--tiny"], capture_output=True,
                         text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def db(text: str, label: str) -> float:
    found = re.search(rf"{label}[^\n]*?(-?\d+\.\d+) dB", text)
    assert found, f"no {label!r} line in:\n{text}"
    return float(found[1])


def test_new_camera_delta_switches_in_and_off_bit_exact():
    out = run_example("new_camera.py")
    assert db(out, "app switched to delta") > db(out, "base receiver")
    assert "delta new-camera.delta.safetensors active on" in out
    assert "outputs bit-identical to the base: yes" in out


def test_mismatched_partner_pull_update_apply_rollback():
    out = run_example("mismatched_partner.py")
    assert "pulled partner-rx/rx.decoder.safetensors" in out
    assert "update partner.update.safetensors active on A" in out
    assert db(out, "aligned by SLF") > db(out, "mismatched") + 1.0
    assert "rolled back update partner.update.safetensors" in out
    assert "outputs bit-identical to the partner's base: yes" in out
