"""``Runtime.open_device``: an app follows the agent's flash, delta activation and rollback
while another thread calls ``infer`` without pause — no failed call, no call on mixed
weights, and what is active survives a reopen (a reboot)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from firmware_bridge import remote
from firmware_bridge.host import serial_flasher
from firmware_bridge.relay import Relay
from sdk import Runtime
from sdk.runtime import RunnerError

from ..bridge.bridge_helpers import Processes
from .test_delta_switching import TARGETS, _delta


@pytest.fixture(scope="module")
def builds(checkpoint, onnx_artifact, tmp_path_factory):
    """v1 (the shared artifact), a delta for it, and v2 (other weights, same I/O)."""
    import torch

    from sdk.build import build
    from sdk.checkpoint import load_checkpoint, save_checkpoint

    tmp = tmp_path_factory.mktemp("follow")
    model = load_checkpoint(checkpoint)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05)
    other = save_checkpoint(model, tmp / "other")
    v2 = build(other, tmp / "v2", backend="onnxrt", part="receiver", delta_targets="decoder",
               name="jscc", version="2")  # fmt: skip
    return onnx_artifact, _delta(checkpoint, TARGETS, "hue", 0, tmp), v2


def until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the app did not follow the device"
        time.sleep(0.02)


def test_app_follows_flash_delta_and_rollback_without_a_bad_call(builds, tmp_path):
    v1, delta, v2 = builds
    with Runtime.load(v1) as rt:
        spec = rt.inputs[0]
        x = np.random.default_rng(0).normal(size=[1, *spec["shape"][1:]]).astype(np.float32)
        base = rt.infer(x)
        rt.activate_delta(delta)
        with_delta = rt.infer(x)
    with Runtime.load(v2) as rt:
        newer = rt.infer(x)
    refs = {"v1": base, "v1+hue": with_delta, "v2": newer}
    name = next(iter(base))
    procs, relay, root = Processes(), Relay(), tmp_path / "root"
    flasher = serial_flasher(relay.host_port, 921600, progress=False)
    stop = threading.Event()
    try:
        procs.agent(relay.agent_port, root)
        flasher.flash(v1, activate="permanent")
        flasher.flash(delta)
        app = Runtime.open_device(root, poll=0.02)
        seen: list[str] = []
        errors: list[BaseException] = []

        def serve() -> None:
            while not stop.is_set():
                try:
                    out = app.infer(x)[name]
                except BaseException as exc:  # every failure is a finding
                    errors.append(exc)
                    return
                match = [k for k, ref in refs.items() if np.allclose(out, ref[name], atol=1e-6)]
                seen.append(match[0] if len(match) == 1 else f"mixed {out.ravel()[:3]}")

        caller = threading.Thread(target=serve, daemon=True)
        caller.start()
        remote.apply(flasher, delta.name)
        until(lambda: app.info()["delta"] == delta.name)
        flasher.flash(v2)  # TEST activation of slot B: the app switches build
        until(lambda: app.info()["slot"] == "B")
        flasher.rollback()  # back to A, with the delta that was active on A
        until(lambda: app.info()["slot"] == "A")
        time.sleep(0.1)
        stop.set()
        caller.join()
        assert not errors, errors
        assert not [s for s in seen if s.startswith("mixed")]
        order = [k for i, k in enumerate(seen) if i == 0 or seen[i - 1] != k]
        assert order == ["v1", "v1+hue", "v2", "v1+hue"], order
        assert app.swaps == 3 and app.info()["last_error"] is None
        app.close()
        with pytest.raises(RunnerError, match="closed"):
            app.infer(x)
        with Runtime.open_device(root) as again:  # after a reboot: the same weights
            assert again.info()["delta"] == delta.name
            assert np.allclose(again.infer(x)[name], with_delta[name], atol=1e-6)
    finally:
        stop.set()
        flasher.close()
        procs.kill_all()
        relay.close()


def test_open_device_refuses_an_empty_root(tmp_path):
    with pytest.raises(RunnerError, match="no model installed"):
        Runtime.open_device(tmp_path)


def test_example_edge_app_reports_what_it_serves(builds, tmp_path):
    """examples/edge_app.py on a device root: it names the build and delta it serves."""
    import subprocess
    import sys
    from pathlib import Path

    from firmware_bridge.slots import SlotStore
    from sdk import artifact

    v1, delta, _ = builds
    store = SlotStore(tmp_path / "root")
    store.activate("jscc", store.stage("jscc", artifact.pack(v1, tmp_path / "v1.tar")), test=False)
    store.install_change("jscc", delta, delta.name)
    store.apply_change("jscc", delta.name)
    example = Path(__file__).parents[2] / "examples" / "edge_app.py"
    res = subprocess.run(
        [sys.executable, str(example), "--root", str(tmp_path / "root"), "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"serving jscc slot A, update None, delta {delta.name}" in res.stdout
    assert res.stdout.strip().endswith("none failed")
