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


def test_a_replayed_older_delta_or_update_is_refused(tmp_path, procs, relays):
    """Deltas and updates carry a security counter: the agent refuses one below the highest
    it installed for the model (flash and activation alike), and the floor persists."""
    from .bridge_helpers import make_delta, make_update

    base = "ab" * 32
    relay = relays()
    root = tmp_path / "root"
    procs.agent(relay.agent_port, root)
    port = relay.host_port
    art = make_artifact(tmp_path / "rx", fingerprint=base)
    assert procs.cli("flash", "--port", port, str(art), "--activate", "permanent").returncode == 0
    old = make_delta(tmp_path / "old.delta.safetensors", base, counter=1)
    new = make_delta(tmp_path / "new.delta.safetensors", base, counter=3)
    for change in (old, new):
        res = procs.cli("flash", "--port", port, str(change))
        assert res.returncode == 0, res.stderr
    state = root / "models" / "rx" / "state.json"
    assert json.loads(state.read_text())["change_counter"] == 3
    before = sorted(p.name for p in root.rglob("*"))
    replays = {
        "activate the old delta": ("device", "activate-delta", old.name),
        "flash an older update": (
            "flash",
            str(make_update(tmp_path / "u.update.safetensors", base, "cd" * 32, counter=2)),
        ),
    }
    for why, command in replays.items():
        res = procs.cli(*command, "--port", port)
        assert res.returncode == 2 and "(DOWNGRADE)" in res.stderr, why
        assert "--security-counter 3" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in root.rglob("*")) == before
    assert procs.cli("device", "activate-delta", new.name, "--port", port).returncode == 0


def test_adapt_writes_the_counter_into_the_delta(tmp_path):
    """`--security-counter` lands in the delta's metadata, which the signature covers."""
    from firmware_bridge.slots import read_header
    from sdk.checkpoint import save_checkpoint
    from sdk.cli import main
    from tests.ondevice.conftest import write_frames
    from tests.runtime.conftest import small_model

    ckpt = save_checkpoint(small_model("DeepJSCC"), tmp_path / "ck")
    out = tmp_path / "cam.delta.safetensors"
    argv = ["adapt", "zfda", str(ckpt), "--data", str(write_frames(tmp_path / "f", 4)),
            "--epochs", "1", "--security-counter", "7", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert read_header(out)["security_counter"] == "7"
