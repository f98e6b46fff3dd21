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

import fcntl
import functools
import json
import os
import re
import shutil
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sdk import artifact
from sdk.delta import DeltaOverlapError, changed_parameters, check_disjoint, safetensors_header
from sdk.errors import SemedgeError
from sdk.files import atomic_file

SLOTS = ("A", "B")
STATE = "state.json"
LOCK = "state.lock"
"""Per model: held (``flock``, exclusive) across every read-modify-write of ``state.json``."""
CRASH_ENV = "SEMEDGE_AGENT_CRASH_AT"
STOP_ENV = "SEMEDGE_AGENT_STOP_AT"
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


class NoModel(SlotError):
    """No installed model fits the request (none installed, not that name, several fit)."""


class BrokenState(SlotError):
    """A model's ``state.json`` that cannot be read or makes no sense (that model only)."""


class ChangeError(SlotError):
    """A weight change that cannot be applied, reverted or removed (it says why and what to do)."""


class NoSuchFile(ChangeError):
    """The named delta, update, slot or file is not on the device."""


class WrongBase(ChangeError):
    """A delta/update made for another base than the running model."""


class InUse(ChangeError):
    """The file or slot is active (or confirmed): deactivate it first."""


class Downgrade(ChangeError):
    """A delta/update whose security counter is below the highest installed for the model."""


def check_floor(what: str, counter: int, floor: int, name: str) -> None:
    """:class:`Downgrade` if a change's security ``counter`` is below ``floor``, the highest
    installed for model ``name`` (an old, replayed file): the agent's rule, the app's too."""
    if counter < floor:
        raise Downgrade(
            f"{what} has security counter {counter}, below the highest installed ({floor}) for "
            f"{name}; adapt it again with --security-counter {floor} or higher"
        )


def change_counter(header: dict[str, Any], filename: str) -> int:
    """The ``security_counter`` a delta/update header carries (0 if it has none)."""
    try:
        counter = int(header.get("security_counter", 0))
    except (TypeError, ValueError):
        counter = -1
    if not 0 <= counter < 2**31:
        raise ChangeError(f"{filename} has a malformed security_counter; adapt it again")
    return counter


CHANGE_KINDS = {"delta": "deltas", "update": "updates"}
"""Weight-change kinds (ZFDA deltas, SLF updates) and the folder each lives in."""
EMPTY_CHANGES = {"delta": None, "update": None}
OFF_VERBS = {"delta": "deactivate-delta", "update": "rollback-update"}
"""The ``semedge device`` verb that switches off the active change of each kind."""


def change_kind(filename: str) -> str:
    """``delta`` or ``update`` from a ``*.delta.safetensors`` / ``*.update.safetensors`` name."""
    for kind in CHANGE_KINDS:
        if safe_name(filename) and filename.endswith(f".{kind}.safetensors"):
            return kind
    raise SlotError(f"{filename!r} is not a plain *.delta.safetensors or *.update.safetensors name")


def delta_header(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file from its first bytes."""
    return safetensors_header(data).get("__metadata__") or {}


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """:func:`safetensors_header` of a file, reading only its header."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        return safetensors_header(head + f.read(min(n, 100_000_000)))


def read_header(path: Path) -> dict[str, Any]:
    """:func:`delta_header` of a file, reading only its header."""
    return read_safetensors_header(path).get("__metadata__") or {}


def _other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def crash_point(step: str) -> None:
    """Test hook: SIGKILL this process when ``SEMEDGE_AGENT_CRASH_AT`` names ``step`` (a power
    cut), SIGSTOP it when ``SEMEDGE_AGENT_STOP_AT`` does (a writer paused there: races)."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_ENV) == step:
        os.kill(os.getpid(), signal.SIGSTOP)


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
    """Replace ``path`` with ``data`` through the SDK's one atomic writer (temp file, fsync,
    rename, directory fsync); ``step`` names the crash points power-cut tests stop at."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
        if step:
            crash_point(f"{step}-written")
    if step:
        crash_point(f"{step}-renamed")


def read_state(model_dir: Path) -> dict[str, Any]:
    """A model's ``state.json``: ``active``, ``confirmed``, ``test``, ``security_counter``,
    ``change_counter`` (the highest security counter of a delta/update ever installed) and
    per-slot active ``changes`` (read-only; what an app reads too).

    A format-1 file (no ``confirmed``) reads as its meaning was: the active slot is
    confirmed unless under test, in which case ``previous`` was.
    """
    path = model_dir / STATE
    try:
        return _parse_state(json.loads(path.read_text()))
    except FileNotFoundError:
        return {"active": None, "confirmed": None, "test": None, "security_counter": 0,
                "change_counter": 0, "changes": {}}  # fmt: skip
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise BrokenState(
            f"{path} is unreadable ({reason}); restore it, or delete it and flash the model again"
        ) from None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_attempts(attempts: Any) -> None:
    if not _count(attempts):
        raise SlotError(f"test attempts must be a whole number >= 0, not {attempts!r}")


def _parse_state(state: Any) -> dict[str, Any]:
    """The checked content of a ``state.json``; ValueError saying what is wrong."""
    if not isinstance(state, dict) or "active" not in state:
        raise ValueError("not an object with 'active'")
    if "confirmed" not in state:
        state["confirmed"] = state.get("previous") if state.get("test") else state["active"]
    active, confirmed = state["active"], state["confirmed"]
    for key in ("active", "confirmed"):
        if state[key] not in (None, *SLOTS):
            raise ValueError(f"{key} is {state[key]!r}, not A, B or null")
    test = state.get("test") if active != confirmed else None
    if test is not None and not (
        isinstance(test, dict) and test.get("slot") in SLOTS and _count(test.get("attempts_left"))
    ):
        raise ValueError(f"test is {test!r}, not {{slot, attempts_left}}")
    for key in ("security_counter", "change_counter"):
        if not _count(state.get(key, 0)):
            raise ValueError(f"{key} is {state[key]!r}, not a non-negative integer")
    changes = state.get("changes") or {}
    if not isinstance(changes, dict) or not all(
        slot in SLOTS
        and isinstance(on, dict)
        and set(on) <= set(CHANGE_KINDS)
        and all(f is None or safe_name(f) for f in on.values())
        for slot, on in changes.items()
    ):
        raise ValueError("changes is not {slot: {delta, update: file name or null}}")
    return {
        "active": active,
        "confirmed": confirmed,
        "test": test,
        "security_counter": state.get("security_counter", 0),
        "change_counter": state.get("change_counter", 0),
        "changes": {k: v for k, v in changes.items() if any(v.values())},
    }


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exclusive(
    method: Callable[Concatenate[SlotStore, str, _P], _R],
) -> Callable[Concatenate[SlotStore, str, _P], _R]:
    """A :class:`SlotStore` method that changes model ``name``, run under its :meth:`lock`."""

    @functools.wraps(method)
    def locked(self: SlotStore, name: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.lock(name):
            return method(self, name, *args, **kwargs)

    return locked


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

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold model ``name``'s lock (``flock`` on ``models/<name>/state.lock``, exclusive): every
        read-modify-write of its ``state.json`` runs under it, so the agent and another
        process (``semedge adapt --install``) never lose each other's change."""
        mdir = self.model_dir(name)
        mdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(mdir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _valid(self, name: str, slot: str | None) -> bool:
        if slot not in SLOTS:
            return False
        try:
            artifact.verify_artifact(self.model_dir(name) / str(slot))
        except SemedgeError:
            return False
        return True

    def state(self, name: str) -> dict[str, Any]:
        """The model's state (:func:`read_state`)."""
        return read_state(self.model_dir(name))

    def active_changes(self, name: str, slot: str | None = None) -> dict[str, str | None]:
        """``{"delta": file|None, "update": file|None}`` active on ``slot`` (default: active)."""
        state = self.state(name)
        slot = slot or state["active"]
        return {**EMPTY_CHANGES, **state["changes"].get(slot, {})}

    def _write_state(self, name: str, state: dict[str, Any], step: str = "state") -> None:
        changes = {slot: c for slot, c in state["changes"].items() if any(c.values())}
        state = {"format": "semedge.slots", "format_version": 2, **state, "changes": changes}
        data = json.dumps(state, indent=2)
        try:  # never write a state that would not read back (the model would be stuck)
            _parse_state(json.loads(data))
        except ValueError as exc:
            raise SlotError(f"state of {name} not changed: {exc}") from None
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
        table: dict[str, dict[str, Any]] = {}
        for name in self.models():
            try:
                state = self.state(name)
            except BrokenState as exc:
                table[name] = {"error": str(exc)}
                continue
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
                            "size": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
                            "signed": (path / artifact.SIGNATURE).is_file(),
                        }
                    except SemedgeError:
                        slots[slot] = {"invalid": True}
            files = {
                kind: sorted(p.name for p in (self.model_dir(name) / folder).glob(f"*.{kind}.*")
                             if not p.name.endswith(".sig"))
                for kind, folder in CHANGE_KINDS.items()
            }  # fmt: skip
            table[name] = {
                **state,
                "previous": self.fallback(name, state),
                "slots": slots,
                "deltas": files["delta"],
                "updates": files["update"],
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

    @_exclusive
    def stage(self, name: str, tar: Path) -> str:
        """Write the artifact ``tar`` into :meth:`write_target` of ``name``; returns that slot.

        When that slot runs a build under test, the state first returns to the confirmed
        build (its own atomic write), so the slot being overwritten never runs.
        """
        mdir = self.model_dir(name)
        mdir.mkdir(parents=True, exist_ok=True)
        state = self.state(name)
        slot = self.write_target(state)
        if state["active"] == slot or slot in state["changes"]:
            state["changes"].pop(slot, None)
            if state["active"] == slot:
                state.update(active=state["confirmed"], test=None)
            self._write_state(name, state, step="leave-test")
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

    @_exclusive
    def activate(self, name: str, slot: str, *, test: bool, attempts: int = 0) -> None:
        """Run ``slot``: under TEST (``attempts`` agent restarts, then back to the confirmed
        build) or permanently (it becomes the confirmed build — a CONFIRM of that slot)."""
        if not self._valid(name, slot):
            raise SlotError(f"slot {slot} of {name} holds no valid artifact; flash it again")
        _check_attempts(attempts)
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

    @_exclusive
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

    @_exclusive
    def rollback(self, name: str, attempts: int = 0) -> str:
        """Leave the running build; returns what changed, in words.

        Under TEST: back to the confirmed build (the test build stays, inactive). On the
        confirmed build: the other slot's build runs under TEST — confirming it is the
        only way it takes over the confirmed status, so a restart without CONFIRM comes
        back to the build that was confirmed.
        """
        _check_attempts(attempts)
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

    def boot(self, warn: Callable[[str], None] = lambda line: None) -> list[str]:
        """Count one agent start against every TEST slot; revert those out of attempts;
        returns the models reverted. A model whose state is broken is skipped (``warn``
        gets one line), the others boot.

        A build under test with no confirmed build to return to keeps running, still
        unconfirmed (it is never promoted to confirmed by a restart).
        """
        reverted = []
        folders = sorted(p.name for p in (self.root / "models").iterdir() if p.is_dir())
        for name in filter(safe_name, folders):  # a first flash cut short has no state yet
            try:
                if self._boot_model(name):
                    reverted.append(name)
            except BrokenState as exc:
                warn(f"skipped model {name}: {exc}")
        return reverted

    @_exclusive
    def _boot_model(self, name: str) -> bool:
        """Clean up after a power cut (under the lock: never another process's write in
        progress), then count one agent start against ``name``'s TEST slot; True if it went
        back to confirmed."""
        self._sweep(name)
        state = self.state(name)
        test = state["test"]
        if not test:
            return False
        if test["attempts_left"] > 0:
            test["attempts_left"] -= 1
        elif state["confirmed"]:
            state.update(active=state["confirmed"], test=None)
        else:
            return False
        self._write_state(name, state)
        return state["test"] is None

    def _sweep(self, name: str) -> None:
        """Delete what a power cut left half-done in model ``name``: temp files and slot
        directories of writes that never reached their rename, and slots whose removal it
        interrupted."""
        mdir = self.model_dir(name)
        for pattern in (".*.tmp", ".*.trash", "deltas/.*.tmp", "updates/.*.tmp"):
            for leftover in mdir.glob(pattern):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------ weight changes

    def change_path(self, name: str, filename: str) -> Path:
        return self.model_dir(name) / CHANGE_KINDS[change_kind(filename)] / filename

    def check_counter(self, name: str, filename: str, header: dict[str, Any]) -> int:
        """The change's security counter; :class:`Downgrade` if it is below the highest
        installed for ``name`` (an old, replayed file)."""
        counter = change_counter(header, filename)
        check_floor(filename, counter, self.state(name)["change_counter"], name)
        return counter

    @_exclusive
    def install_change(
        self, name: str, src: Path, filename: str, signature: bytes | None = None
    ) -> Path:
        """Place a delta/update file (and its ``.sig``) beside the model, atomically; a file
        of that name that is active somewhere is refused (deactivate it first), as is one
        whose security counter is below the highest installed. A higher counter is written
        to the state *before* the file lands, so a power cut never leaves a lower floor."""
        path = self.change_path(name, filename)
        if path.exists() and self._active_in(name, filename):
            raise InUse(f"{filename} is active on {name}; deactivate it before replacing it")
        counter = self.check_counter(name, filename, read_header(src))
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state(name)
        if counter > state["change_counter"]:
            self._write_state(name, {**state, "change_counter": counter}, step="change-counter")
        if signature:
            write_atomic(path.with_name(f"{filename}.sig"), signature)
        else:
            path.with_name(f"{filename}.sig").unlink(missing_ok=True)
        write_atomic(path, src.read_bytes(), step="change")
        return path

    @staticmethod
    def _counter_or_none(header: dict[str, Any], filename: str) -> int | None:
        try:
            return change_counter(header, filename)
        except ChangeError:
            return None

    def _active_in(self, name: str, filename: str) -> list[str]:
        changes = self.state(name)["changes"]
        return sorted(slot for slot, c in changes.items() if filename in c.values())

    def changes(self, name: str) -> list[dict[str, Any]]:
        """Every delta/update file of ``name``: size, SHA-256, fingerprints, security counter,
        signed, active on."""
        out = []
        for kind, folder in CHANGE_KINDS.items():
            for path in sorted((self.model_dir(name) / folder).glob(f"*.{kind}.safetensors")):
                try:
                    meta = read_header(path)
                except (OSError, ValueError):
                    meta = {"invalid": "unreadable header"}
                out.append({
                    "file": path.name, "kind": kind, "size": path.stat().st_size,
                    "sha256": artifact.file_sha256(path),
                    "base_fingerprint": meta.get("base_fingerprint"),
                    "result_fingerprint": meta.get("result_fingerprint"),
                    "domain": meta.get("domain"),
                    "security_counter": self._counter_or_none(meta, path.name),
                    "signed": path.with_name(f"{path.name}.sig").is_file(),
                    "active_in": self._active_in(name, path.name),
                })  # fmt: skip
        return out

    def base_fingerprint(self, name: str, slot: str | None = None) -> str | None:
        """The base every delta and update on ``slot`` (default: active) must name: its
        artifact's. None when the slot holds no valid artifact."""
        slot = slot or self.state(name)["active"]
        if slot is None or not self._valid(name, slot):
            return None
        return str(artifact.read_manifest(self.model_dir(name) / slot)["base_fingerprint"])

    def models_on_base(self, fingerprint: Any) -> list[str]:
        """The models whose running build has base ``fingerprint`` (a broken one has none)."""
        fitting = []
        for name in self.models():
            try:
                if self.base_fingerprint(name) == fingerprint:
                    fitting.append(name)
            except BrokenState:
                continue
        return fitting

    def check_base(self, name: str, filename: str, header: dict[str, Any]) -> None:
        """:class:`WrongBase` unless the change's ``base_fingerprint`` (its header metadata)
        is the running build's — the rule ``sdk.delta.DeltaCore`` loads by: a delta made
        on an updated model cannot be loaded."""
        base, running = header.get("base_fingerprint"), self.base_fingerprint(name)
        if running is None:
            raise NoSuchFile(f"model {name} runs no valid artifact; flash one first")
        if base != running:
            raise WrongBase(
                f"{filename} is for base {str(base)[:12]}…, the running build of {name} is "
                f"{str(running)[:12]}…; adapt against the running build (deltas and updates "
                "both apply to its base)"
            )

    def _tensors(self, name: str, filename: str) -> dict[str, Any]:
        """The safetensors header (tensor names, metadata) of a change file on the device."""
        try:
            return read_safetensors_header(self.change_path(name, filename))
        except (OSError, ValueError) as exc:
            raise ChangeError(f"{filename} on {name} has an unreadable header ({exc}); flash "
                              "it again") from None  # fmt: skip

    @_exclusive
    def apply_change(self, name: str, filename: str) -> str:
        """Make a delta (one at a time) or update active on the running slot; returns what
        changed. Both must name the slot's base, and a delta and an update active together
        must change different tensors (``sdk.delta.check_disjoint``, read from the headers):
        so the app always loads what is active. Touches nothing on refusal."""
        kind, path = change_kind(filename), self.change_path(name, filename)
        state = self.state(name)
        slot = state["active"]
        if slot is None:
            raise NoSuchFile(f"model {name} runs no artifact; flash one first")
        if not path.is_file():
            raise NoSuchFile(f"no {kind} {filename} on {name}; flash it first (see: semedge "
                              "device list)")  # fmt: skip
        current = {**EMPTY_CHANGES, **state["changes"].get(slot, {})}
        if current[kind] == filename:  # it met the rules when it was activated
            return f"{name}: {kind} {filename} was already active on {slot}; nothing changed"
        header = self._tensors(name, filename)
        meta = header.get("__metadata__") or {}
        self.check_counter(name, filename, meta)
        self.check_base(name, filename, meta)
        other_kind = "update" if kind == "delta" else "delta"
        other = current[other_kind]
        if other:
            try:
                check_disjoint(
                    f"{kind} {filename}", changed_parameters(header),
                    f"{other_kind} {other}", changed_parameters(self._tensors(name, other)),
                    f"semedge device {OFF_VERBS[other_kind]} first",
                )  # fmt: skip
            except DeltaOverlapError as exc:
                raise InUse(str(exc)) from None
        state["changes"][slot] = {**current, kind: filename}
        self._write_state(name, state)
        was = f" (replacing {current[kind]})" if current[kind] else ""
        return f"{name}: {kind} {filename} active on {self._label(name, slot)}{was}"

    @_exclusive
    def revert_change(self, name: str, kind: str) -> str:
        """Deactivate the running slot's delta, or roll back its update; returns what changed."""
        state = self.state(name)
        slot = state["active"]
        current = self.active_changes(name)
        if not slot or not current[kind]:
            return f"{name}: no {kind} is active; nothing changed"
        state["changes"][slot] = {**current, kind: None}
        self._write_state(name, state)
        verb = "deactivated" if kind == "delta" else "rolled back"
        return f"{name}: {verb} {kind} {current[kind]} on {self._label(name, slot)}"

    @_exclusive
    def remove(self, name: str, what: str) -> str:
        """Delete a delta/update file that is active nowhere, or a slot that neither runs nor
        holds the confirmed build; returns what was freed."""
        state = self.state(name)
        if what in SLOTS:
            if what in (state["active"], state["confirmed"]):
                role = "running" if what == state["active"] else "confirmed"
                raise InUse(f"slot {what} of {name} holds the {role} build; only an "
                                  "inactive, unconfirmed slot can be removed")  # fmt: skip
            path = self.model_dir(name) / what
            if not path.is_dir():
                raise NoSuchFile(f"slot {what} of {name} is empty; nothing to remove")
            freed = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if what in state["changes"]:
                state["changes"].pop(what)
                self._write_state(name, state)
            trash = path.with_name(f".{what}.trash")
            os.replace(path, trash)
            fsync_dir(path.parent)
            crash_point("trash-renamed")
            shutil.rmtree(trash)
            return f"{name}: removed slot {what}, {freed} bytes freed"
        path = self.change_path(name, what)
        if not path.is_file():
            raise NoSuchFile(f"no file {what} on {name}; see: semedge device list")
        if self._active_in(name, what):
            verb = OFF_VERBS[change_kind(what)]
            raise InUse(f"{what} is active on {name} slot {self._active_in(name, what)[0]};"
                              f" semedge device {verb} first")  # fmt: skip
        freed = path.stat().st_size
        path.unlink()
        path.with_name(f"{what}.sig").unlink(missing_ok=True)
        fsync_dir(path.parent)
        return f"{name}: removed {what}, {freed} bytes freed"

    def find_model(self, filename: str) -> list[str]:
        """The models holding a change file called ``filename``."""
        return [m for m in self.models() if self.change_path(m, filename).is_file()]

    def pick_model(
        self, name: str | None = None, *, base: Any = None, filename: str | None = None
    ) -> str:
        """``name``, else the one installed model a request fits: with ``base`` the one whose
        running build has that fingerprint (the only model even if not: the caller's
        :meth:`check_base` then names both bases), with ``filename`` the one holding it.
        :class:`NoModel` (or :class:`WrongBase` when no model runs ``base``) otherwise."""
        installed = self.models()
        listed = f"installed: {', '.join(installed) or 'none'}"
        if name is not None:
            if name not in installed:
                raise NoModel(f"no installed model {name!r} ({listed}); flash it first")
            return name
        if not installed:
            raise NoModel("no model is installed yet; flash an artifact first")
        fitting = installed
        if base is not None and len(installed) > 1:  # one model: its base check says more
            fitting = self.models_on_base(base)
            if not fitting:
                raise WrongBase(f"no model runs base {str(base)[:12]}… ({listed}); adapt "
                                "against a running model")  # fmt: skip
        if filename is not None:
            fitting = [m for m in fitting if m in self.find_model(filename)] or fitting
        if len(fitting) > 1:
            raise NoModel(f"{len(fitting)} models fit ({', '.join(fitting)}); name one with "
                          "--model")  # fmt: skip
        return fitting[0]
