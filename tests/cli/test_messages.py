"""Messages say how to go on: after Ctrl-C, on a refused --resume, with nothing "None"."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time

import pytest

from firmware_bridge.relay import Relay
from sdk.cli import main
from tests.bridge.bridge_helpers import CLI, Processes, make_artifact

TRAIN = ["train", "--data", "digits", "--arg", "hidden=8", "--batch-size", "256", "--threads", "1"]


def interrupt_when(argv: list[str], ready) -> subprocess.CompletedProcess:
    """Run ``semedge ARGV``, send it Ctrl-C (SIGINT) once ``ready()`` is true."""
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


def test_interrupted_training_says_how_to_resume_and_that_works(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TRAIN, "--epochs", "200", "--out", str(out)]
    done = interrupt_when(argv, lambda: (out / "train_state.pt").is_file())
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert last.startswith("semedge train: interrupted; finished epochs are saved; resume with:")
    hinted = last.split("resume with: semedge ", 1)[1].split()
    assert hinted == [*argv, "--resume"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    hinted[hinted.index("200")] = "2"  # the same run, but finish soon
    assert main(hinted) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "2"  # continued at epoch 2


def test_interrupted_flash_says_to_run_it_again(kinds, tmp_path):
    master, slave = os.openpty()  # a device that never answers: the flash waits on HELLO
    try:
        argv = ["flash", str(kinds["delta"]), "--port", os.ttyname(slave)]
        done = interrupt_when(argv, lambda: bool(select.select([master], [], [], 0)[0]))
    finally:
        os.close(master)
        os.close(slave)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert "run the same flash again to resume: semedge flash" in last
    assert last.endswith(" ".join(argv))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (["--lr", "0.01"], "--lr 0.001 (now 0.01)"),
        (["--snr", "0,10"], "--snr 0,20 (now 0,10)"),
        (["--batch-size", "128"], "--batch-size 256 (now 128)"),
        (["--arg", "hidden=16"], "--arg hidden=8 (now 16)"),
        (["--model", "GAI"], "--model DeepJSCC (now GAITransceiver)"),
    ],
)
def test_resume_with_other_settings_names_the_setting(trained, changed, named, capsys):
    argv = [*TRAIN, "--epochs", "2", "--out", str(trained), "--resume"]
    for flag, value in zip(changed[::2], changed[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1, err


def test_device_messages_never_say_none(tmp_path):
    procs = Processes()
    relay = Relay()
    try:
        procs.agent(relay.agent_port, tmp_path / "device")
        confirm = procs.cli("device", "confirm", "--port", relay.host_port)
        assert "no model is installed yet; flash an artifact first" in confirm.stderr
        art = make_artifact(tmp_path / "art")
        flashed = procs.cli("flash", str(art), "--port", relay.host_port)
        assert flashed.returncode == 0
        took = flashed.stdout.splitlines()[0].rsplit(" in ", 1)[1]  # "(20,480 bytes in 0.3 s)"
        assert re.fullmatch(r"\d+\.\d s\)", took), flashed.stdout  # times rounded
        status = procs.cli("device", "status", "--port", relay.host_port)
        assert status.returncode == 0 and "previous none" in status.stdout
        for said in (confirm.stderr, status.stdout):
            assert "None" not in said, said
    finally:
        procs.kill_all()
        relay.close()


def test_closed_runtime_names_a_method_that_exists(kinds):
    from sdk import Runtime
    from sdk.runtime.base import RunnerError

    rt = Runtime.load(kinds["artifact"])
    rt.close()
    with pytest.raises(RunnerError, match=r"Runtime\.load") as caught:
        rt.infer({})
    assert "activate()" not in str(caught.value)
