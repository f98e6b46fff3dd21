"""A/B slots per model on the device, crash-safe at every step.

Layout under the agent root::

    models/<name>/A/ , models/<name>/B/   one extracted artifact each (manifest.json + payload)
    models/<name>/state.json              which slot is active and which confirmed; the
                                          only thing that says so
    models/<name>/deltas/<file>           deltas for that model's base
    incoming/<sha256>.part                a transfer in progress (resumable)

Per model one slot may hold the **confirmed** build (MCUboot's rule): it is never a
write target and loses that status only when a CONFIRM (or a permanent activation)
names the other slot. Installing writes the other slot: extract into a hidden temp
directory, fsync every file and the directory, rename it onto the slot name, fsync the
parent. Only then is ``state.json`` replaced (temp file, fsync, rename, directory
fsync). A crash before that rename leaves the old state pointing at the untouched old
slot; after it, at the complete new slot. So there is always exactly one valid active
artifact (once one was installed), a confirmed build once one was confirmed, and never
a torn state file. States and transitions: ``docs/flashing.md``.

TEST activation keeps ``test.attempts_left`` restarts of the agent on the new slot;
the next restart after they are used up returns to the confirmed slot unless CONFIRM
made the test build the confirmed one (MCUboot's test/confirm, with the agent start
standing in for boot).
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


def _other(slot: str) -> str:
    return "B" if slot == "A" else "A"


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
        """The model's state: ``active``, ``confirmed``, ``test`` and ``security_counter``.

        A format-1 file (no ``confirmed``) reads as its meaning was: the active slot is
        confirmed unless under test, in which case ``previous`` was.
        """
        path = self.model_dir(name) / STATE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {"active": None, "confirmed": None, "test": None, "security_counter": 0}
        except (OSError, ValueError) as exc:
            raise SlotError(f"{path} is unreadable ({exc}); reinstall the model") from None
        if "confirmed" not in state:
            state["confirmed"] = state.get("previous") if state.get("test") else state["active"]
        return {
            "active": state["active"],
            "confirmed": state["confirmed"],
            "test": state.get("test") if state["active"] != state["confirmed"] else None,
            "security_counter": int(state.get("security_counter", 0)),
        }

    def _write_state(self, name: str, state: dict[str, Any], step: str = "state") -> None:
        data = json.dumps({"format": "semedge.slots", "format_version": 2, **state}, indent=2)
        write_atomic(self.model_dir(name) / STATE, data.encode() + b"\n", step=step)

    def active_dir(self, name: str) -> Path | None:
        slot = self.state(name)["active"]
        return self.model_dir(name) / slot if slot else None

    def active_manifest(self, name: str) -> dict[str, Any] | None:
        path = self.active_dir(name)
        return artifact.read_manifest(path) if path else None

    def fallback(self, name: str, state: dict[str, Any]) -> str | None:
        """The slot ROLLBACK switches to: the other slot, if it holds a valid artifact."""
        other = _other(state["active"]) if state["active"] else None
        return other if self._valid(name, other) else None

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
            table[name] = {
                **state,
                "previous": self.fallback(name, state),
                "slots": slots,
                "deltas": deltas,
            }
        return table

    def _label(self, name: str, slot: str) -> str:
        """``B (v2)``: a slot and the model version it holds, for messages."""
        try:
            manifest = artifact.read_manifest(self.model_dir(name) / slot)
        except SemedgeError:
            return f"{slot} (invalid)"
        return f"{slot} (v{manifest['model']['version']})"

    # ------------------------------------------------------------ transitions

    @staticmethod
    def write_target(state: dict[str, Any]) -> str:
        """The slot an install writes: never the confirmed one, else never the running one."""
        keep = state["confirmed"] or state["active"]
        return _other(keep) if keep else SLOTS[0]

    def stage(self, name: str, tar: Path) -> str:
        """Write the artifact ``tar`` into :meth:`write_target` of ``name``; returns that slot.

        When that slot runs a build under test, the state first returns to the confirmed
        build (its own atomic write), so the slot being overwritten never runs.
        """
        mdir = self.model_dir(name)
        mdir.mkdir(parents=True, exist_ok=True)
        state = self.state(name)
        slot = self.write_target(state)
        if state["active"] == slot:
            self._write_state(name, {**state, "active": state["confirmed"], "test": None},
                              step="leave-test")  # fmt: skip
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
        """Run ``slot``: under TEST (``attempts`` agent restarts, then back to the confirmed
        build) or permanently (it becomes the confirmed build — a CONFIRM of that slot)."""
        if not self._valid(name, slot):
            raise SlotError(f"slot {slot} of {name} holds no valid artifact; flash it again")
        state = self.state(name)
        state["active"] = slot
        if test and slot != state["confirmed"]:
            state["test"] = {"slot": slot, "attempts_left": attempts}
        else:
            self._make_confirmed(name, state)
        self._write_state(name, state)

    def _make_confirmed(self, name: str, state: dict[str, Any]) -> None:
        slot = state["active"]
        m = artifact.read_manifest(self.model_dir(name) / slot)
        counter = max(state["security_counter"], int(m.get("security_counter", 0)))
        state.update(confirmed=slot, test=None, security_counter=counter)

    def confirm(self, name: str) -> str:
        """Make the running build the confirmed one; returns what changed, in words."""
        state = self.state(name)
        active, old = state["active"], state["confirmed"]
        if active is None:
            raise SlotError(f"model {name} has no active artifact; flash one first")
        if active == old:
            return f"{name}: {self._label(name, active)} was already confirmed; nothing changed"
        self._make_confirmed(name, state)
        self._write_state(name, state)
        was = f"; {self._label(name, old)} is no longer kept as fallback" if old else ""
        return f"{name}: confirmed {self._label(name, active)}, it survives restarts{was}"

    def rollback(self, name: str, attempts: int = 0) -> str:
        """Leave the running build; returns what changed, in words.

        Under TEST: back to the confirmed build (the test build stays, inactive). On the
        confirmed build: the other slot's build runs under TEST — confirming it is the
        only way it takes over the confirmed status, so a restart without CONFIRM comes
        back to the build that was confirmed.
        """
        state = self.state(name)
        active, confirmed = state["active"], state["confirmed"]
        if active and confirmed and active != confirmed:
            state.update(active=confirmed, test=None)
            self._write_state(name, state)
            return (f"{name}: left {self._label(name, active)} (under test), running the "
                    f"confirmed {self._label(name, confirmed)}")  # fmt: skip
        other = self.fallback(name, state) if active else None
        if other is None:
            raise SlotError(f"model {name} has no previous artifact to roll back to")
        state.update(active=other, test={"slot": other, "attempts_left": attempts})
        self._write_state(name, state)
        back = f"returns to {self._label(name, active)}" if confirmed else "keeps it"
        return (f"{name}: running {self._label(name, other)} under TEST; `semedge device "
                f"confirm` keeps it, a restart without that {back}")  # fmt: skip

    def boot(self) -> list[str]:
        """Count one agent start against every TEST slot; revert those out of attempts.

        A build under test with no confirmed build to return to keeps running, still
        unconfirmed (it is never promoted to confirmed by a restart).
        """
        reverted = []
        for name in self.models():
            state = self.state(name)
            test = state["test"]
            if not test:
                continue
            if test["attempts_left"] > 0:
                test["attempts_left"] -= 1
            elif state["confirmed"]:
                state.update(active=state["confirmed"], test=None)
                reverted.append(name)
            else:
                continue
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
