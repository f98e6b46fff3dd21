"""Device verbs over real ptys with a real agent process: list, activate/deactivate a
delta, apply/roll back an update, remove, pull — and bad input refused in one line with
the device left exactly as it was."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from firmware_bridge import signing
from firmware_bridge.host import serial_flasher
from firmware_bridge.relay import Relay
from firmware_bridge.slots import CRASH_ENV, STOP_ENV, SlotStore
from sdk import artifact
from sdk.cli import main

from .bridge_helpers import Processes, make_artifact, make_delta, make_update

BASE, UPDATED, OTHER = "cd" * 32, "ef" * 32, "99" * 32


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the device root (but partial transfers) by SHA-256."""
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and "incoming" not in f.parts
    }


def state(root: Path, model: str = "rx") -> dict:
    return json.loads((root / "models" / model / "state.json").read_text())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``semedge ARGS`` in this process (the agent is the separate process; this saves a
    Python start per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


class Device:
    """An agent process on a pty relay; the CLI talks to it (see ``run_cli``)."""

    def __init__(self, tmp: Path, *agent_args: str) -> None:
        self.procs, self.relay, self.root, self.tmp = Processes(), Relay(), tmp / "root", tmp
        self.agent = self.procs.agent(self.relay.agent_port, self.root, *agent_args)

    def restart(self, env: dict | None = None) -> None:
        """Kill the agent and start a new one on the same root (a power cycle)."""
        if self.agent.poll() is None:
            self.agent.kill()
        self.agent.wait()
        self.agent = self.procs.agent(self.relay.agent_port, self.root, env=env)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli("device", *args, "--port", self.relay.host_port)

    def ok(self, *args: str) -> str:
        res = self.cli(*args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def refused(self, *args: str, code: str) -> str:
        before = snapshot(self.root)
        res = self.cli(*args)
        assert res.returncode != 0
        assert code in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert snapshot(self.root) == before  # nothing changed on the device
        return res.stderr

    def flash(self, path: Path, activate: str = "test") -> dict:
        flasher = serial_flasher(self.relay.host_port, 921600, progress=False)
        try:
            return flasher.flash(path, activate=activate)
        finally:
            flasher.close()

    def close(self) -> None:
        self.procs.kill_all()
        self.relay.close()


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """One agent with an installed model ``rx`` (base ``BASE``), two deltas and an update."""
    tmp = tmp_path_factory.mktemp("verbs")
    dev = Device(tmp)
    dev.flash(make_artifact(tmp / "v1", fingerprint=BASE), "permanent")
    for name in ("sunny", "rainy"):
        dev.flash(make_delta(tmp / f"{name}.delta.safetensors", BASE))
    dev.flash(make_update(tmp / "partner.update.safetensors", BASE, UPDATED))
    # written into the root as an on-device adaptation script would, not flashed
    deltas = dev.root / "models/rx/deltas"
    make_delta(deltas / "elsewhere.delta.safetensors", OTHER)
    make_update(dev.root / "models/rx/updates/elsewhere.update.safetensors", OTHER, UPDATED, 100)
    yield dev
    dev.close()


def test_switching_deltas_and_updates(device):
    root = device.root
    listing = device.ok("list")
    assert "sunny.delta.safetensors" in listing and "partner.update.safetensors" in listing
    inventory = json.loads(device.ok("list", "--json"))["models"]["rx"]
    sunny = next(c for c in inventory["changes"] if c["file"] == "sunny.delta.safetensors")
    assert sunny["size"] == (device.tmp / sunny["file"]).stat().st_size
    assert sunny["base_fingerprint"] == BASE and sunny["signed"] is False
    assert sunny["security_counter"] == 0  # an integer (the header keeps text)
    slot = inventory["slots"]["A"]
    assert slot["signed"] is False and slot["base_fingerprint"] == BASE
    assert slot["size"] == sum(f.stat().st_size for f in (root / "models/rx/A").rglob("*"))
    assert sunny["sha256"] == hashlib.sha256((device.tmp / sunny["file"]).read_bytes()).hexdigest()

    said = device.ok("activate-delta", "sunny.delta.safetensors")
    assert said.startswith("rx: delta sunny.delta.safetensors active on A (v1)")
    assert state(root)["changes"]["A"]["delta"] == "sunny.delta.safetensors"
    said = device.ok("activate-delta", "rainy.delta.safetensors")
    assert "(replacing sunny.delta.safetensors)" in said
    assert device.ok("deactivate-delta").startswith("rx: deactivated delta rainy")
    assert not state(root).get("changes")

    device.ok("apply-update", "partner.update.safetensors")
    assert state(root)["changes"]["A"]["update"] == "partner.update.safetensors"
    # beside the update: a delta on the build's base that changes other tensors, never one
    # made on the updated model (refused before any data moves) or one changing its tensor
    on_updated = make_delta(device.tmp / "on-updated.delta.safetensors", UPDATED)
    res = run_cli("flash", "--port", device.relay.host_port, str(on_updated))
    assert "WRONG_BASE" in res.stderr and "deltas and updates both apply to its base" in res.stderr
    device.flash(make_delta(device.tmp / "after.delta.safetensors", BASE))  # w; the update: u
    device.ok("activate-delta", "after.delta.safetensors")
    device.flash(make_delta(device.tmp / "clash.delta.safetensors", BASE, param="u"))
    said = device.refused("activate-delta", "clash.delta.safetensors", code="IN_USE")
    assert "both change u; semedge device rollback-update first" in said
    device.ok("deactivate-delta")
    device.ok("remove", "clash.delta.safetensors")
    assert device.ok("rollback-update").startswith("rx: rolled back update partner")
    assert "nothing changed" in device.ok("rollback-update")

    # removal: files that are active nowhere, slots that neither run nor are confirmed
    size = (device.tmp / "after.delta.safetensors").stat().st_size
    assert f"{size} bytes freed" in device.ok("remove", "after.delta.safetensors")
    assert not (root / "models/rx/deltas/after.delta.safetensors").exists()
    device.flash(make_artifact(device.tmp / "v2", seed=2, version="2", fingerprint=BASE),
                 "permanent")  # fmt: skip
    device.refused("remove", "B", code="IN_USE")
    assert "removed slot A" in device.ok("remove", "A")
    assert not (root / "models/rx/A").exists()
    assert json.loads(device.ok("status", "--json"))["models"]["rx"]["previous"] is None


def test_pull_resumes_by_hash_and_checks_integrity(device, tmp_path):
    want = (device.root / "models/rx/deltas/sunny.delta.safetensors").read_bytes()
    dest = tmp_path / "got.delta.safetensors"
    out = device.ok("pull", "deltas/sunny.delta.safetensors", "--out", str(dest), "--json")
    assert dest.read_bytes() == want and json.loads(out)["resumed_from"] == 0
    # an interrupted pull of the same bytes continues where its part file ends
    dest2 = tmp_path / "again"
    Path(f"{dest2}.part").write_bytes(want[:1000])
    Path(f"{dest2}.part.sha256").write_text(hashlib.sha256(want).hexdigest())
    out = device.ok("pull", "deltas/sunny.delta.safetensors", "--out", str(dest2), "--json")
    assert json.loads(out)["resumed_from"] == 1000 and dest2.read_bytes() == want
    # a part file whose bytes were damaged fails the whole-file hash and is discarded
    Path(f"{dest2}.part").write_bytes(b"x" * 1000)
    Path(f"{dest2}.part.sha256").write_text(hashlib.sha256(want).hexdigest())
    dest2.unlink()
    res = device.cli("pull", "deltas/sunny.delta.safetensors", "--out", str(dest2))
    assert res.returncode != 0 and "pull again" in res.stderr and not dest2.exists()
    assert not Path(f"{dest2}.part").exists()
    device.ok("pull", "active/manifest.json", "--out", str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text())["model"]["name"] == "rx"


def test_pull_sends_the_file_it_hashed(tmp_path):
    """A file replaced while PULL opens it (the agent paused there) comes whole, as opened:
    the hash and every READ use one descriptor, never the path twice."""
    dev = Device(tmp_path)
    try:
        dev.flash(make_artifact(tmp_path / "v1", fingerprint=BASE), "permanent")
        delta = make_delta(tmp_path / "sunny.delta.safetensors", BASE)
        dev.flash(delta)
        dev.restart(env={STOP_ENV: "pull-opened"})
        dest = tmp_path / "got.delta.safetensors"
        pull = dev.procs.popen("device", "pull", "deltas/sunny.delta.safetensors", "--out",
                               str(dest), "--port", dev.relay.host_port)  # fmt: skip
        _, status = os.waitpid(dev.agent.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        newer = make_delta(tmp_path / "newer.delta.safetensors", BASE, size=5000)
        os.replace(newer, dev.root / "models/rx/deltas" / delta.name)  # as a script would
        os.kill(dev.agent.pid, signal.SIGCONT)
        _, err = pull.communicate(timeout=60)
        assert pull.returncode == 0, err.decode()
        assert dest.read_bytes() == delta.read_bytes()
    finally:
        dev.close()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("activate-delta", "unknown.delta.safetensors"), "NO_FILE"),
        (("activate-delta", "elsewhere.delta.safetensors"), "WRONG_BASE"),
        (("apply-update", "elsewhere.update.safetensors"), "WRONG_BASE"),
        (("activate-delta", "../x.delta.safetensors"), "not a plain"),
        (("activate-delta", "model.onnx"), "not a plain"),
        (("activate-delta",), "needs a TARGET"),
        (("activate-delta", "sunny.delta.safetensors", "--model", "nope"), "NO_MODEL"),
        (("remove", "unknown.update.safetensors"), "NO_FILE"),
        (("pull", "deltas/missing.delta.safetensors"), "NO_FILE"),
        (("pull", "../../state.json"), "BAD_NAME"),
        (("remove", "C"), "not a plain"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(device, args, code):
    device.refused(*args, code=code)


def test_unsigned_refused_when_keys_are_required(tmp_path):
    key, pub = signing.keygen(tmp_path / "k")
    dev = Device(tmp_path, "--trusted-key", str(pub))
    try:
        art = make_artifact(tmp_path / "v1", fingerprint=BASE)
        signing.sign(art, key)
        dev.flash(art, "permanent")
        placed = make_delta(dev.root / "models/rx/deltas/local.delta.safetensors", BASE)
        dev.refused("activate-delta", placed.name, code="UNSIGNED")
        Path(f"{placed}.sig").write_bytes(bytes(64))
        dev.refused("activate-delta", placed.name, code="BAD_SIGNATURE")
        signing.sign(placed, key)
        dev.ok("activate-delta", placed.name)
        listed = json.loads(dev.ok("list", "--json"))["models"]["rx"]
        assert listed["changes"][0]["signed"] and listed["slots"]["A"]["signed"]
    finally:
        dev.close()


def test_model_inferred_from_the_base_fingerprint(tmp_path):
    dev = Device(tmp_path)
    try:
        dev.flash(make_artifact(tmp_path / "rx", name="rx", fingerprint=BASE))
        dev.flash(make_artifact(tmp_path / "tx", name="tx", fingerprint=OTHER))
        out = dev.flash(make_delta(tmp_path / "d.delta.safetensors", OTHER))
        assert out["model"] == "tx"
        assert "tx: delta d.delta.safetensors active" in dev.ok(
            "activate-delta", "d.delta.safetensors"
        )
        assert "2 models fit (rx, tx)" in dev.refused("deactivate-delta", code="NO_MODEL")
    finally:
        dev.close()


def test_device_sim_prints_a_port_to_flash_to(tmp_path):
    procs = Processes()
    try:
        sim = procs.popen("device", "sim", "--root", str(tmp_path / "sim"))
        first = sim.stdout.readline().decode()
        assert first.startswith("simulated device on /dev/"), first
        port = first.split()[3]
        flasher = serial_flasher(port, 921600, progress=False)
        out = flasher.flash(make_artifact(tmp_path / "v1", fingerprint=BASE))
        flasher.close()
        assert out["activated"] == "test"
        assert "rx: active A (v1) [TEST" in run_cli("device", "status", "--port", port).stdout
        assert (tmp_path / "sim/models/rx/A/model.onnx").is_file()
    finally:
        procs.kill_all()


@pytest.mark.parametrize(
    ("verb", "step"),
    [
        ("activate-delta", "state-written"),
        ("activate-delta", "state-renamed"),
        ("remove", "trash-renamed"),
        ("flash-delta", "change-written"),
    ],
)
def test_power_cut_during_a_verb_leaves_the_device_whole(tmp_path, verb, step):
    """The agent SIGKILLs itself at a write step of a verb; after a restart the device
    holds the state before or after it (never a mix) and the verb then completes."""
    dev = Device(tmp_path)
    try:
        dev.flash(make_artifact(tmp_path / "v1", fingerprint=BASE), "permanent")
        dev.flash(make_artifact(tmp_path / "v2", seed=2, version="2", fingerprint=BASE),
                  "permanent")  # fmt: skip
        delta = make_delta(tmp_path / "sunny.delta.safetensors", BASE)
        if verb != "flash-delta":
            dev.flash(delta)
        dev.restart(env={CRASH_ENV: step})
        if verb == "flash-delta":
            res = run_cli("flash", "--port", dev.relay.host_port, str(delta), "--retries", "0")
        else:
            res = dev.cli(verb, "A" if verb == "remove" else delta.name)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("semedge "), res.stderr
        assert dev.agent.wait(timeout=10) == -9
        dev.restart()
        dev.ok("status")  # answered once the new agent has booted
        store = SlotStore(dev.root)
        assert store.state("rx")["active"] == store.state("rx")["confirmed"] == "B"
        assert not list((dev.root / "models/rx").glob(".*"))  # no temp or trash left behind
        placed = dev.root / "models/rx/deltas" / delta.name
        if verb == "remove":
            slot_a = dev.root / "models/rx/A"
            assert not slot_a.exists() or artifact.verify_artifact(slot_a)
            assert not slot_a.exists() or "removed slot A" in dev.ok("remove", "A")
        elif verb == "flash-delta":
            assert not placed.exists() or placed.read_bytes() == delta.read_bytes()
            dev.flash(delta)
        if verb != "remove":
            dev.ok("activate-delta", delta.name)
            assert store.active_changes("rx")["delta"] == delta.name
            assert placed.read_bytes() == delta.read_bytes()
    finally:
        dev.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [(("list",), "needs --port"), (("sim",), "needs --root"), (("pull",), "needs a TARGET")],
)
def test_missing_arguments_are_one_line(args, says):
    res = run_cli("device", *args)
    assert res.returncode != 0 and says in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
