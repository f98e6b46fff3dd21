"""A/B slots per model on the device, crash-safe at every step.

Layout under the agent root::

    models/<name>/A/ , models/<name>/B/   one extracted artifact each (manifest.json + payload)
    models/<name>/state.json              which slot is active; the only thing that says so
    models/<name>/deltas/<file>           deltas for that model's base
    incoming/<sha256>.part                a transfer in progress (resumable)

Installing writes only the inactive slot: extract into a hidden temp directory, fsync
every file and the directory, rename it onto the slot name, fsync the parent. Only
then is ``state.json`` replaced (temp file, fsync, rename, directory fsync). A crash
before that rename leaves the old state pointing at the untouched old slot; after it,
at the complete new slot. So there is always exactly one valid active artifact (once
one was installed) and never a torn state file.

TEST activation keeps ``test.attempts_left`` restarts of the agent on the new slot;
the next restart after they are used up reverts to the previous slot unless CONFIRM
cleared the test (MCUboot's test/confirm, with the agent start standing in for boot).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from sdk import artifact
from sdk.errors import SemedgeError

SLOTS = ("A", "B")
STATE = "state.json"
CRASH_ENV = "SEMEDGE_AGENT_CRASH_AT"
INSTALL_STEPS = (
    "mid-transfer",
    "received",
    "extracted",
    "old-removed",
    "renamed",
    "state-written",
    "state-renamed",
)
"""Points at which a test may make the agent SIGKILL itself (``SEMEDGE_AGENT_CRASH_AT``)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SlotError(SemedgeError):
    """A slot operation that cannot be done (no model, no previous slot, bad name)."""


def crash_point(step: str) -> None:
    """Test hook: SIGKILL this process when ``SEMEDGE_AGENT_CRASH_AT`` names ``step``."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def safe_name(name: str) -> bool:
    """A plain file or model name: no path separators, no ``..``, no odd characters."""
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name


def safe_path(name: str) -> bool:
    """A relative payload path whose every component is a :func:`safe_name`."""
    parts = name.split("/") if isinstance(name, str) else []
    return 0 < len(parts) <= 4 and all(safe_name(p) for p in parts)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(dirpath))


def write_atomic(path: Path, data: bytes, step: str | None = None) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, directory fsync."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if step:
        crash_point(f"{step}-written")
    os.replace(tmp, path)
    if step:
        crash_point(f"{step}-renamed")
    fsync_dir(path.parent)


class SlotStore:
    """The models installed under an agent root, with their A/B slots and state files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            (self.root / "incoming").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlotError(
                f"cannot keep models under {self.root} ({exc.strerror}); give --root a "
                "writable directory"
            ) from None

    # ------------------------------------------------------------ state

    def model_dir(self, name: str) -> Path:
        if not safe_name(name):
            raise SlotError(f"model name {name!r} is not a plain name; rename the model")
        return self.root / "models" / name

    def models(self) -> list[str]:
        return sorted(p.name for p in (self.root / "models").iterdir() if (p / STATE).is_file())

    def _valid(self, name: str, slot: str | None) -> bool:
        if slot not in SLOTS:
            return False
        try:
            artifact.verify_artifact(self.model_dir(name) / str(slot))
        except SemedgeError:
            return False
        return True

    def state(self, name: str) -> dict[str, Any]:
        """The model's state; a ``previous`` slot that no longer verifies reads as None."""
        path = self.model_dir(name) / STATE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {"active": None, "previous": None, "test": None, "security_counter": 0}
        except (OSError, ValueError) as exc:
            raise SlotError(f"{path} is unreadable ({exc}); reinstall the model") from None
        if state.get("previous") and not self._valid(name, state["previous"]):
            state["previous"] = None
        return dict(state)

    def _write_state(self, name: str, state: dict[str, Any]) -> None:
        data = json.dumps({"format": "semedge.slots", "format_version": 1, **state}, indent=2)
        write_atomic(self.model_dir(name) / STATE, data.encode() + b"\n", step="state")

    def active_dir(self, name: str) -> Path | None:
        slot = self.state(name)["active"]
        return self.model_dir(name) / slot if slot else None

    def active_manifest(self, name: str) -> dict[str, Any] | None:
        path = self.active_dir(name)
        return artifact.read_manifest(path) if path else None

    def describe(self) -> dict[str, Any]:
        """Slot table for HELLO/STATUS: per model, the state and what each slot holds."""
        table = {}
        for name in self.models():
            state = self.state(name)
            slots = {}
            for slot in SLOTS:
                path = self.model_dir(name) / slot
                if path.is_dir():
                    try:
                        m = artifact.read_manifest(path)
                        slots[slot] = {
                            "version": m["model"]["version"],
                            "base_fingerprint": m["base_fingerprint"],
                            "security_counter": m.get("security_counter", 0),
                            "sha256": artifact.file_sha256(path / artifact.MANIFEST),
                        }
                    except SemedgeError:
                        slots[slot] = {"invalid": True}
            deltas = sorted(p.name for p in (self.model_dir(name) / "deltas").glob("*"))
            table[name] = {**state, "slots": slots, "deltas": deltas}
        return table

    # ------------------------------------------------------------ install

    def stage(self, name: str, tar: Path) -> str:
        """Write the artifact ``tar`` into the inactive slot of ``name``; returns that slot."""
        mdir = self.model_dir(name)
        mdir.mkdir(parents=True, exist_ok=True)
        state = self.state(name)
        slot = "B" if state["active"] == "A" else "A"
        tmp = mdir / f".{slot}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        artifact.extract(tar, tmp)
        _fsync_tree(tmp)
        crash_point("extracted")
        shutil.rmtree(mdir / slot, ignore_errors=True)
        crash_point("old-removed")
        os.replace(tmp, mdir / slot)
        fsync_dir(mdir)
        crash_point("renamed")
        return slot

    def activate(self, name: str, slot: str, *, test: bool, attempts: int = 0) -> None:
        """Make ``slot`` active; a TEST activation survives ``attempts`` agent restarts."""
        if not self._valid(name, slot):
            raise SlotError(f"slot {slot} of {name} holds no valid artifact; flash it again")
        state = self.state(name)
        if state["active"] != slot:
            state["previous"] = state["active"]
        state["active"] = slot
        state["test"] = {"slot": slot, "attempts_left": attempts} if test else None
        if not test:
            state["security_counter"] = self._counter(name, slot, state)
        self._write_state(name, state)

    def _counter(self, name: str, slot: str, state: dict[str, Any]) -> int:
        m = artifact.read_manifest(self.model_dir(name) / slot)
        return max(int(state.get("security_counter", 0)), int(m.get("security_counter", 0)))

    def confirm(self, name: str) -> None:
        """Make the running TEST slot permanent (no-op when nothing is under test)."""
        state = self.state(name)
        if state["active"] is None:
            raise SlotError(f"model {name} has no active artifact; flash one first")
        if state["test"]:
            state["test"] = None
            state["security_counter"] = self._counter(name, state["active"], state)
            self._write_state(name, state)

    def rollback(self, name: str) -> None:
        """Return to the previous slot (it must still verify)."""
        state = self.state(name)
        if not state["previous"]:
            raise SlotError(f"model {name} has no previous artifact to roll back to")
        state["active"], state["previous"] = state["previous"], state["active"]
        state["test"] = None
        self._write_state(name, state)

    def boot(self) -> list[str]:
        """Count one agent start against every TEST slot; revert those out of attempts."""
        reverted = []
        for name in self.models():
            state = self.state(name)
            test = state.get("test")
            if not test:
                continue
            if test["attempts_left"] > 0:
                test["attempts_left"] -= 1
            elif state["previous"]:
                state["active"], state["previous"] = state["previous"], None
                state["test"] = None
                reverted.append(name)
            else:  # nothing to go back to: keep the only artifact, as confirmed
                state["test"] = None
            self._write_state(name, state)
        return reverted

    def install_delta(self, name: str, src: Path, filename: str) -> Path:
        """Place a delta file beside the model (temp + fsync + rename + directory fsync)."""
        if not safe_name(filename):
            raise SlotError(f"delta name {filename!r} is not a plain file name")
        ddir = self.model_dir(name) / "deltas"
        ddir.mkdir(parents=True, exist_ok=True)
        write_atomic(ddir / filename, src.read_bytes())
        return ddir / filename
