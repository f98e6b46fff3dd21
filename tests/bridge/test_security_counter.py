"""`semedge build --security-counter N`: written into the manifest, enforced by the agent."""

from __future__ import annotations

import json

import pytest

from sdk import artifact

from .bridge_helpers import make_artifact


def test_build_writes_the_counter_and_the_agent_refuses_a_lower_one(
    onnx_build, tmp_path, procs, relays
):
    ckpt = onnx_build[2] / "jscc"
    res = procs.cli("build", str(ckpt), "--backend", "onnxrt", "--part", "receiver", "--name",
                    "rx", "--security-counter", "4", "--out", str(tmp_path / "b4"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert artifact.read_manifest(tmp_path / "b4")["security_counter"] == 4
    relay = relays()
    procs.agent(relay.agent_port, tmp_path / "root")
    newer = make_artifact(tmp_path / "c5", counter=5)
    flashed = procs.cli("flash", "--port", relay.host_port, str(newer), "--activate", "permanent")
    assert flashed.returncode == 0, flashed.stderr
    older = procs.cli("flash", "--port", relay.host_port, str(tmp_path / "b4"))
    assert older.returncode == 2 and "DOWNGRADE" in older.stderr
    status = procs.cli("device", "status", "--port", relay.host_port, "--json")
    assert json.loads(status.stdout)["models"]["rx"]["security_counter"] == 5


@pytest.mark.parametrize("value", ["-1", "2147483648"])
def test_out_of_range_counter_is_one_line(onnx_build, tmp_path, procs, value):
    res = procs.cli("build", str(onnx_build[2] / "jscc"), "--backend", "onnxrt",
                    "--security-counter", value, "--out", str(tmp_path / "b"))  # fmt: skip
    assert res.returncode == 2 and "security counter" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
