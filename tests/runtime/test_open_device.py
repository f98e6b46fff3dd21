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


class Caller:
    """A thread calling ``app.infer(x)`` without pause; ``seen`` names the reference each
    output matched (``mixed …`` if none), ``errors`` holds any failed call."""

    def __init__(self, app, x, refs) -> None:
        self.seen: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(app, x, refs), daemon=True)
        self._thread.start()

    def _serve(self, app, x, refs) -> None:
        name = next(iter(next(iter(refs.values()))))
        while not self._stop.is_set():
            try:
                out = app.infer(x)[name]
            except BaseException as exc:  # every failure is a finding
                self.errors.append(exc)
                return
            match = [k for k, ref in refs.items() if np.allclose(out, ref[name], atol=1e-6)]
            self.seen.append(match[0] if len(match) == 1 else f"mixed {out.ravel()[:3]}")

    def stop(self) -> list[str]:
        """Stop; the references seen, in order, each run of repeats counted once."""
        self._stop.set()
        self._thread.join()
        seen = self.seen
        return [k for i, k in enumerate(seen) if i == 0 or seen[i - 1] != k]


def receiver_input(artifact_dir) -> np.ndarray:
    with Runtime.load(artifact_dir) as rt:
        spec = rt.inputs[0]
    return np.random.default_rng(0).normal(size=[1, *spec["shape"][1:]]).astype(np.float32)


def outputs(artifact_dir, x, delta=None):
    with Runtime.load(artifact_dir) as rt:
        if delta is not None:
            rt.activate_delta(delta)
        return rt.infer(x)


def device_running(root, v1, delta):
    """An agent root (written by the agent's slot store) running ``v1`` with ``delta``."""
    from firmware_bridge.slots import SlotStore
    from sdk import artifact

    store = SlotStore(root)
    store.activate("jscc", store.stage("jscc", artifact.pack(v1, root.parent / "v1.tar")),
                   test=False)  # fmt: skip
    store.install_change("jscc", delta, delta.name)
    store.apply_change("jscc", delta.name)
    return store


def test_app_follows_flash_delta_and_rollback_without_a_bad_call(builds, tmp_path):
    v1, delta, v2 = builds
    x = receiver_input(v1)
    refs = {"v1": outputs(v1, x), "v1+hue": outputs(v1, x, delta), "v2": outputs(v2, x)}
    name = next(iter(refs["v1"]))
    procs, relay, root = Processes(), Relay(), tmp_path / "root"
    flasher = serial_flasher(relay.host_port, 921600, progress=False)
    caller = None
    try:
        procs.agent(relay.agent_port, root)
        flasher.flash(v1, activate="permanent")
        flasher.flash(delta)
        app = Runtime.open_device(root, poll=0.02)
        caller = Caller(app, x, refs)
        remote.apply(flasher, delta.name)
        until(lambda: app.info()["delta"] == delta.name)
        flasher.flash(v2)  # TEST activation of slot B: the app switches build
        until(lambda: app.info()["slot"] == "B")
        flasher.rollback()  # back to A, with the delta that was active on A
        until(lambda: app.info()["slot"] == "A")
        time.sleep(0.1)
        order = caller.stop()
        assert not caller.errors, caller.errors
        assert not [s for s in caller.seen if s.startswith("mixed")]
        assert order == ["v1", "v1+hue", "v2", "v1+hue"], order
        assert app.swaps == 3 and app.info()["last_error"] is None
        app.close()
        with pytest.raises(RunnerError, match="closed"):
            app.infer(x)
        with Runtime.open_device(root) as again:  # after a reboot: the same weights
            assert again.info()["delta"] == delta.name
            assert np.allclose(again.infer(x)[name], refs["v1+hue"][name], atol=1e-6)
    finally:
        if caller is not None:
            caller.stop()
        flasher.close()
        procs.kill_all()
        relay.close()


def test_a_delta_replaced_under_its_name_is_served_without_a_failed_call(
    builds, checkpoint, tmp_path
):
    """The agent replaces the active delta's file with other contents under the same name
    (an atomic rename): the app serves the new weights, and no call fails or mixes."""
    from firmware_bridge.slots import write_atomic

    v1, delta, _ = builds
    newer = _delta(checkpoint, TARGETS, "hue", 7, tmp_path)  # same file name, other values
    assert newer.name == delta.name
    x = receiver_input(v1)
    refs = {"hue": outputs(v1, x, delta), "newer hue": outputs(v1, x, newer)}
    store = device_running(tmp_path / "root", v1, delta)
    with Runtime.open_device(tmp_path / "root", poll=0.02) as app:
        caller = Caller(app, x, refs)
        until(lambda: caller.seen)
        write_atomic(store.change_path("jscc", delta.name), newer.read_bytes())
        until(lambda: caller.seen[-1] == "newer hue" or caller.errors)
        order = caller.stop()
        assert not caller.errors, caller.errors
        assert order == ["hue", "newer hue"], order
        assert app.swaps == 1 and app.info()["delta"] == delta.name


def test_info_never_reads_a_runtime_a_swap_closed(builds, tmp_path):
    """``info()`` while the app swaps states back and forth: it reads the serving state
    under the lock, so the runtime it describes is never closed under it."""
    import sys

    v1, delta, _ = builds
    store = device_running(tmp_path / "root", v1, delta)
    errors: list[BaseException] = []
    with Runtime.open_device(tmp_path / "root", poll=3600) as app:
        done = threading.Event()

        def read_info() -> None:
            while not done.is_set():
                try:
                    app.info()
                except BaseException as exc:
                    errors.append(exc)
                    return

        reader = threading.Thread(target=read_info, daemon=True)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
        try:
            reader.start()
            for _ in range(10):
                store.revert_change("jscc", "delta")
                assert app.refresh()
                store.apply_change("jscc", delta.name)
                assert app.refresh()
        finally:
            done.set()
            reader.join()
            sys.setswitchinterval(interval)
    assert not errors, errors
    assert app.swaps == 20


def test_refreshes_from_two_threads_never_swap_in_an_older_state(builds, tmp_path):
    """A caller's refresh and the watcher's run one at a time, so whatever the interleaving
    the app ends on the device's last state; after close nothing is loaded any more."""
    v1, delta, _ = builds
    store = device_running(tmp_path / "root", v1, delta)
    with Runtime.open_device(tmp_path / "root", poll=0.001) as app:  # the watcher races us
        for _ in range(10):
            store.revert_change("jscc", "delta")
            app.refresh()
            store.apply_change("jscc", delta.name)
            app.refresh()
        until(lambda: app.info()["delta"] == delta.name)
        swaps = app.swaps
    store.revert_change("jscc", "delta")
    assert app.refresh() is False and app.swaps == swaps  # closed: follows nothing


def test_open_device_refuses_an_empty_root(tmp_path):
    with pytest.raises(RunnerError, match="no model installed"):
        Runtime.open_device(tmp_path)


def test_example_edge_app_reports_what_it_serves(builds, tmp_path):
    """examples/edge_app.py on a device root: it names the build and delta it serves."""
    import subprocess
    import sys
    from pathlib import Path

    v1, delta, _ = builds
    device_running(tmp_path / "root", v1, delta)
    example = Path(__file__).parents[2] / "examples" / "edge_app.py"
    res = subprocess.run(
        [sys.executable, str(example), "--root", str(tmp_path / "root"), "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"serving jscc slot A, update None, delta {delta.name}" in res.stdout
    assert res.stdout.strip().endswith("none failed")
