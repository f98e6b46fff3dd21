"""Slot lifecycle, trust and refusals, busy sessions, torch-freedom — agent in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import serial

from firmware_bridge import protocol as p
from firmware_bridge.host import DeviceBusy, Flasher
from firmware_bridge.relay import Faults
from firmware_bridge.transport import Link

from .bridge_helpers import make_artifact, make_delta
from .test_transfer import active_payload_sha, flash, source_sha

TRT_TARGET = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "cuda_version": "12.6",
              "l4t_version": "36.4.0", "builder_flags": [], "plugins": []}  # fmt: skip


def refused(res, code: str) -> None:
    assert res.returncode != 0
    assert f"({code})" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_torch_never_imported():
    code = (
        "import sys, contextlib, io\n"
        "import firmware_bridge.protocol, firmware_bridge.transport, firmware_bridge.host\n"
        "import firmware_bridge.agent, firmware_bridge.slots, firmware_bridge.signing\n"
        "from sdk.cli import main\n"
        "for cmd in ('agent', 'flash', 'device', 'sign', 'keygen'):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([cmd, '--help'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "ok", res.stderr


def test_test_activation_reverts_unless_confirmed(tmp_path, procs, relays):
    relay = relays()
    root = tmp_path / "root"
    v1 = make_artifact(tmp_path / "v1", seed=1)
    v2 = make_artifact(tmp_path / "v2", seed=2, version="2")

    restart_agent = partial(restarted, procs, relay, root)

    procs.agent(relay.agent_port, root)
    assert flash(procs, relay.host_port, v1, "--activate", "permanent")[0].returncode == 0
    assert flash(procs, relay.host_port, v2, "--activate", "test")[0].returncode == 0
    assert active_payload_sha(root) == source_sha(v2)  # running the test slot now
    restart_agent()  # no CONFIRM: the next start reverts
    status = json.loads(procs.cli("device", "status", "--port", relay.host_port, "--json").stdout)
    assert status["models"]["rx"]["test"] is None
    assert active_payload_sha(root) == source_sha(v1)

    assert flash(procs, relay.host_port, v2, "--activate", "test")[0].returncode == 0
    res = procs.cli("device", "confirm", "--port", relay.host_port)
    assert res.returncode == 0, res.stderr
    restart_agent()
    restart_agent()
    assert active_payload_sha(root) == source_sha(v2)  # CONFIRM persisted across restarts

    res = procs.cli("device", "rollback", "--port", relay.host_port)
    assert res.returncode == 0 and "running A (v1) under TEST" in res.stdout, res.stderr
    assert active_payload_sha(root) == source_sha(v1)
    restart_agent()  # going back to v1 is a test of v1 too: unconfirmed, v2 returns
    assert active_payload_sha(root) == source_sha(v2)
    assert procs.cli("device", "rollback", "--port", relay.host_port).returncode == 0
    assert procs.cli("device", "confirm", "--port", relay.host_port).returncode == 0
    restart_agent()
    assert active_payload_sha(root) == source_sha(v1)
    refused(procs.cli("device", "rollback", "--port", relay.host_port, "--model", "nope"),
            "NO_MODEL")  # fmt: skip


def restarted(procs, relay, root):
    """Kill the running agent and start a new one on the same root (a device reboot)."""
    for proc in procs.procs:
        if proc.poll() is None and "agent" in proc.args:
            proc.kill()
            proc.wait()
    procs.agent(relay.agent_port, root)
    device(procs, relay, "status")  # answered once the new agent has booted


def device(procs, relay, *args):
    res = procs.cli("device", *args, "--port", relay.host_port)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_reflash_before_confirm_keeps_v1_and_restart_shows_it(tmp_path, procs, relays):
    """Issue 10 #2, as reported: v1 permanent, v2 TEST, v2 again, agent restart."""
    relay, root = relays(), tmp_path / "root"
    v1 = make_artifact(tmp_path / "v1", seed=1)
    v2 = make_artifact(tmp_path / "v2", seed=2, version="2")
    procs.agent(relay.agent_port, root)
    assert flash(procs, relay.host_port, v1, "--activate", "permanent")[0].returncode == 0
    for _ in range(2):
        res, out = flash(procs, relay.host_port, v2)
        assert res.returncode == 0 and out["slot"] == "B", res.stderr
    restarted(procs, relay, root)
    assert active_payload_sha(root) == source_sha(v1)
    assert "rx: active A (v1) [confirmed], previous B (v2)" in device(procs, relay, "status")


def test_rollback_twice_runs_the_test_build_as_test(tmp_path, procs, relays):
    """Issue 10 #2, as reported: two rollbacks re-activated a rolled-back TEST build as
    confirmed. Now the second one tests it again and a restart returns to v1."""
    relay, root = relays(), tmp_path / "root"
    procs.agent(relay.agent_port, root)
    v1 = make_artifact(tmp_path / "v1", seed=1)
    assert flash(procs, relay.host_port, v1, "--activate", "permanent")[0].returncode == 0
    v2 = make_artifact(tmp_path / "v2", seed=2, version="2")
    assert flash(procs, relay.host_port, v2)[0].returncode == 0
    said = device(procs, relay, "rollback").splitlines()
    assert said[0] == "rx: left B (v2) (under test), running the confirmed A (v1)"
    said = device(procs, relay, "rollback")
    assert said.startswith("rx: running B (v2) under TEST")
    assert "rx: active B (v2) [TEST, 0 restarts left, then back to confirmed A (v1)]" in said
    restarted(procs, relay, root)
    assert active_payload_sha(root) == source_sha(v1)


def test_incompatible_and_no_space_refused_before_data(tmp_path, procs, relays):
    relay = relays()
    root = tmp_path / "root"
    thor = {"compute_capability": "11.0", "tensorrt_version": "10.13.0", "free_bytes": 30_000}
    procs.agent(relay.agent_port, root, facts=thor)
    plan = make_artifact(tmp_path / "plan", backend="trt", target=TRT_TARGET, size=1000)
    res, _ = flash(procs, relay.host_port, plan)
    refused(res, "INCOMPATIBLE")
    assert "sm_87" in res.stderr and "sm_110" in res.stderr
    big = make_artifact(tmp_path / "big", size=50_000)
    res = flash(procs, relay.host_port, big)[0]
    refused(res, "NO_SPACE")
    assert "`semedge device list`" in res.stderr and "`semedge device remove`" in res.stderr
    assert list((root / "incoming").iterdir()) == []  # no data moved
    assert active_payload_sha(root) is None
    fits = make_artifact(tmp_path / "onnx", size=5_000)
    assert flash(procs, relay.host_port, fits)[0].returncode == 0


def test_signatures_and_downgrade(tmp_path, procs, relays):
    relay = relays()
    root = tmp_path / "root"
    assert procs.cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    assert procs.cli("keygen", "--out", str(tmp_path / "evil")).returncode == 0
    procs.agent(relay.agent_port, root, "--trusted-key", str(tmp_path / "k.pub"))

    unsigned = make_artifact(tmp_path / "unsigned", seed=1)
    refused(flash(procs, relay.host_port, unsigned)[0], "UNSIGNED")
    wrong = make_artifact(tmp_path / "wrong", seed=1)
    assert procs.cli("sign", str(wrong), "--key", str(tmp_path / "evil.key")).returncode == 0
    refused(flash(procs, relay.host_port, wrong)[0], "BAD_SIGNATURE")
    tampered = make_artifact(tmp_path / "tampered", seed=1, counter=9)
    assert procs.cli("sign", str(tampered), "--key", str(tmp_path / "k.key")).returncode == 0
    mf = tampered / "manifest.json"
    mf.write_text(mf.read_text().replace('"security_counter": 9', '"security_counter": 10'))
    refused(flash(procs, relay.host_port, tampered)[0], "BAD_SIGNATURE")

    good = make_artifact(tmp_path / "good", seed=2, counter=5)
    assert procs.cli("sign", str(good), "--key", str(tmp_path / "k.key")).returncode == 0
    res, _ = flash(procs, relay.host_port, good, "--activate", "permanent")
    assert res.returncode == 0, res.stderr
    older = make_artifact(tmp_path / "older", seed=3, counter=4)
    assert procs.cli("sign", str(older), "--key", str(tmp_path / "k.key")).returncode == 0
    refused(flash(procs, relay.host_port, older)[0], "DOWNGRADE")
    assert active_payload_sha(root) == source_sha(good)

    # deltas: unsigned refused, signed accepted
    delta = make_delta(tmp_path / "d.delta.safetensors", "ab" * 32)
    refused(flash(procs, relay.host_port, delta)[0], "UNSIGNED")
    assert procs.cli("sign", str(delta), "--key", str(tmp_path / "k.key")).returncode == 0
    res, out = flash(procs, relay.host_port, delta)
    assert res.returncode == 0 and out["delta"] == delta.name, res.stderr

    # a signed .tar works too (signature added into the tar)
    from sdk import artifact

    newer = artifact.pack(make_artifact(tmp_path / "newer", seed=4, counter=6))
    assert procs.cli("sign", str(newer), "--key", str(tmp_path / "k.key")).returncode == 0
    assert flash(procs, relay.host_port, newer)[0].returncode == 0


def test_deltas_checked_against_installed_base(tmp_path, procs, relays):
    relay = relays()
    root = tmp_path / "root"
    procs.agent(relay.agent_port, root)
    base = "cd" * 32
    assert (
        flash(procs, relay.host_port, make_artifact(tmp_path / "a", fingerprint=base))[0].returncode
        == 0
    )
    other = make_delta(tmp_path / "other.delta.safetensors", "ef" * 32)
    refused(flash(procs, relay.host_port, other)[0], "WRONG_BASE")
    ok = make_delta(tmp_path / "rotation.delta.safetensors", base)
    res, out = flash(procs, relay.host_port, ok)
    assert res.returncode == 0, res.stderr
    assert out["delta"] == "rotation.delta.safetensors"
    assert (root / "models/rx/deltas/rotation.delta.safetensors").read_bytes() == ok.read_bytes()


def host_flasher(port: str, **kw) -> Flasher:
    return Flasher(Link(serial.Serial(port, timeout=0.02), device=False), progress=False, **kw)


@pytest.mark.parametrize(
    ("name", "file", "size", "code"),
    [
        ("../evil", "model.onnx", 10, "BAD_NAME"),
        ("rx", "../../etc/passwd", 10, "BAD_NAME"),
        ("rx", "/abs/model.onnx", 10, "BAD_NAME"),
        ("rx", "we ird;$(rm).onnx", 10, "BAD_NAME"),
        ("r x", "model.onnx", 10, "BAD_NAME"),
        ("rx", "model.onnx", 1 << 40, "TOO_LARGE"),
    ],
)
def test_unsafe_names_and_sizes_refused(tmp_path, procs, relays, name, file, size, code):
    relay = relays()
    procs.agent(relay.agent_port, tmp_path / "root")
    manifest = json.loads((make_artifact(tmp_path / "a") / "manifest.json").read_text())
    manifest["model"]["name"] = name
    manifest["files"] = {file: {"sha256": "00" * 32, "size": size}}
    host = host_flasher(relay.host_port)
    begin = {"kind": "artifact", "manifest": json.dumps(manifest), "size": 100,
             "sha256": "11" * 32, "signature": None}  # fmt: skip
    with pytest.raises(p.DeviceError) as err:
        host.request(p.Msg.BEGIN, begin)
    assert p.Code(err.value.code).name == code
    assert list((tmp_path / "root" / "models").iterdir()) == []


def test_second_host_gets_busy(tmp_path, procs, relays):
    relay = relays(Faults(rate=100_000), hosts=2)
    procs.agent(relay.agent_port, tmp_path / "root")
    art = make_artifact(tmp_path / "a", size=400_000)
    first = subprocess.Popen([sys.executable, "-m", "sdk.cli", "flash", "--port",
                              relay.host_ports[0], str(art)], stderr=subprocess.PIPE)  # fmt: skip
    procs.procs.append(first)
    import time

    deadline = time.monotonic() + 20
    while not list((tmp_path / "root" / "incoming").glob("*.part")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = host_flasher(relay.host_ports[1], busy_wait=0.5)
    with pytest.raises(DeviceBusy):
        second.status()
    assert first.wait(timeout=60) == 0  # the first session was not disturbed
    second.busy_wait = 5.0  # the agent frees the session 2 s after the last frame
    assert second.status()["models"]["rx"]["active"] == "A"  # free again afterwards
    assert Path(tmp_path / "root" / "models" / "rx" / "A" / "model.onnx").is_file()
