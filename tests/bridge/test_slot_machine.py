"""The A/B slot state machine, tested as one: random flash / activate / confirm / rollback /
restart / power-cut sequences, and the weight-change verbs (install, activate/apply,
deactivate/roll back, remove a file or slot), against the tables in docs/flashing.md.

After every step: a confirmed build exists whenever one existed before (and changes only
by a CONFIRM or a permanent activation), what ``describe()`` (the STATUS reply) says
matches the files on disk and the table, every active change is a file on disk, the
change security counter (the highest installed) never goes down, even across power cuts,
and every slot's active delta/update pair loads on ``sdk.delta.DeltaCore`` as
``sdk.Runtime.open_device`` loads it (both on the build's base, different tensors).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware_bridge import slots
from firmware_bridge.slots import InUse, NoSuchFile, SlotError, SlotStore, WrongBase, change_kind
from sdk import artifact
from sdk.delta import DeltaCore, load_change

from .bridge_helpers import make_artifact, make_delta, make_update

VERSIONS = ("1", "2", "3")
STORE_STEPS = ("leave-test-written", "leave-test-renamed", "extracted", "old-removed",
               "renamed", "state-written", "state-renamed")  # fmt: skip
"""Every crash point a SlotStore write passes (the agent's own ones are tested over ptys)."""
BASE, RESULT = "ab" * 32, "12" * 32  # every build's base; the update's result
CHANGES = {  # file -> (base, result of an update, security counter, the tensor it changes)
    "d1.delta.safetensors": (BASE, None, 0, "w"),  # a downgrade once d2.. are installed
    "d2.delta.safetensors": (BASE, None, 2, "w"),
    "d3.delta.safetensors": (BASE, None, 2, "v"),  # the update's tensor: never beside it
    "alien.delta.safetensors": ("34" * 32, None, 0, "w"),
    "u.update.safetensors": (BASE, RESULT, 2, "v"),
    "on-u.delta.safetensors": (RESULT, None, 2, "w"),  # made on the updated model: refused
}
SIZE = 400  # bytes of values: a delta changes half of its tensor, an update all of it
CHANGE_STEPS = ("change-counter-written", "change-counter-renamed", "change-written",
                "change-renamed")  # fmt: skip
"""Crash points of installing a change: the raised counter, then the file."""


class PowerCut(BaseException):
    """Stands in for the power going off at a crash point (nothing after it runs)."""


@cache
def change_file(name: str) -> Path:
    base, result, counter, param = CHANGES[name]
    where = Path(tempfile.mkdtemp(prefix="semedge-changes-"))
    if result is None:
        return make_delta(where / name, base, SIZE // 2, counter, param)
    return make_update(where / name, base, result, SIZE, counter, param)


@cache
def build(version: str) -> Path:
    """One packed artifact per version, shared by every example."""
    where = Path(tempfile.mkdtemp(prefix="semedge-slots-"))
    return artifact.pack(make_artifact(where / f"v{version}", size=300, seed=int(version),
                                       version=version))  # fmt: skip


def other(slot: str) -> str:
    return "B" if slot == "A" else "A"


class SlotMachine(RuleBasedStateMachine):
    """``self.files`` / ``active`` / ``confirmed`` / ``test`` are the table's expectation."""

    def __init__(self) -> None:
        super().__init__()
        self.no_fsync = pytest.MonkeyPatch()  # durability is not under test here (power cuts
        self.no_fsync.setattr(os, "fsync", lambda fd: None)  # are raised exceptions): speed
        self.tmp = Path(tempfile.mkdtemp(prefix="semedge-machine-"))
        self.store = SlotStore(self.tmp)
        self.files: dict[str, str] = {}  # slot -> version it holds
        self.active: str | None = None
        self.confirmed: str | None = None
        self.test: int | None = None  # attempts left while the active build is under test
        self.ever_confirmed: str | None = None  # version confirmed most recently
        self.installed: set[str] = set()  # change files on the device
        self.on: dict[str, dict[str, str]] = {}  # slot -> {kind: file} active there
        self.floor = 0  # highest security counter of a change installed

    def teardown(self) -> None:
        self.no_fsync.undo()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ the table

    def target(self) -> str:
        keep = self.confirmed or self.active
        return other(keep) if keep else "A"

    def leave_test_for_install(self) -> None:
        self.on.pop(self.target(), None)
        if self.active == self.target():
            self.active, self.test = self.confirmed, None

    def run_build(self, slot: str, mode: str, attempts: int) -> None:
        if mode == "none":
            return
        self.active = slot
        if mode == "test" and slot != self.confirmed:
            self.test = attempts
        else:
            self.confirmed, self.test = slot, None
            self.ever_confirmed = self.files[slot]

    def restart(self) -> None:
        self.store = SlotStore(self.tmp)
        self.store.boot()
        if self.test is not None:
            if self.test > 0:
                self.test -= 1
            elif self.confirmed:
                self.active, self.test = self.confirmed, None

    # ------------------------------------------------------------ rules

    @initialize(installed=st.booleans())
    def start(self, installed: bool) -> None:
        """Half the runs start from an empty device, half from a confirmed v1 with every
        change file present (so short runs reach the change verbs' interesting states)."""
        if installed:
            self.flash("1", "permanent", 0)
            for name in sorted(CHANGES, key=lambda n: CHANGES[n][2]):
                self.install_change(name, None)

    @rule(version=st.sampled_from(VERSIONS), mode=st.sampled_from(("test", "permanent", "none")),
          attempts=st.integers(0, 1))  # fmt: skip
    def flash(self, version: str, mode: str, attempts: int) -> None:
        slot = self.store.stage("rx", build(version))
        assert slot == self.target()
        self.leave_test_for_install()
        self.files[slot] = version
        if mode != "none":
            self.store.activate("rx", slot, test=mode == "test", attempts=attempts)
        self.run_build(slot, mode, attempts)

    @rule()
    def confirm(self) -> None:
        if self.active is None:
            with pytest.raises(SlotError, match="flash one first"):
                self.store.confirm("rx")
            return
        said = self.store.confirm("rx")
        if self.active == self.confirmed:
            assert "nothing changed" in said
        else:
            assert f"confirmed {self.active} (v{self.files[self.active]})" in said
            self.confirmed, self.test = self.active, None
            self.ever_confirmed = self.files[self.active]

    @rule(attempts=st.integers(0, 1))
    def rollback(self, attempts: int) -> None:
        if self.active and self.confirmed and self.active != self.confirmed:
            said = self.store.rollback("rx", attempts)
            assert f"left {self.active}" in said and f"confirmed {self.confirmed}" in said
            self.active, self.test = self.confirmed, None
        elif self.active and other(self.active) in self.files:
            said = self.store.rollback("rx", attempts)
            self.active, self.test = other(self.active), attempts
            assert f"running {self.active} (v{self.files[self.active]}) under TEST" in said
        else:
            with pytest.raises(SlotError, match="no previous"):
                self.store.rollback("rx", attempts)

    @rule()
    def agent_restart(self) -> None:
        self.restart()

    @rule(version=st.sampled_from(VERSIONS), mode=st.sampled_from(("test", "permanent")),
          step=st.sampled_from(STORE_STEPS))  # fmt: skip
    def power_cut_during_install(self, version: str, mode: str, step: str) -> None:
        def cut(at: str) -> None:
            if at == step:
                raise PowerCut

        patch = pytest.MonkeyPatch()
        patch.setattr(slots, "crash_point", cut)
        slot = self.target()
        try:
            self.store.stage("rx", build(version))
            self.store.activate("rx", slot, test=mode == "test", attempts=0)
            cut_at = None
        except PowerCut:
            cut_at = step
        finally:
            patch.undo()
        # what the files hold at the cut, step by step, in the order the store passes them
        if cut_at != "leave-test-written":
            self.leave_test_for_install()
        if cut_at == "old-removed":
            self.files.pop(slot, None)
        elif cut_at not in ("leave-test-written", "leave-test-renamed", "extracted"):
            self.files[slot] = version
            if cut_at not in ("renamed", "state-written"):
                self.run_build(slot, mode, 0)
        self.restart()

    @rule(name=st.sampled_from(sorted(CHANGES)), cut=st.sampled_from((None, *CHANGE_STEPS)))
    def install_change(self, name: str, cut: str | None) -> None:
        refusal = (
            InUse
            if any(name in on.values() for on in self.on.values())
            else slots.Downgrade
            if CHANGES[name][2] < self.floor
            else None
        )
        if refusal:
            with pytest.raises(refusal):
                self.store.install_change("rx", change_file(name), name)
            return
        raises = CHANGES[name][2] > self.floor
        done = self.powered(lambda: self.store.install_change("rx", change_file(name), name), cut)
        if raises and cut != "change-counter-written":
            self.floor = CHANGES[name][2]
        if done or cut == "change-renamed":
            self.installed.add(name)
        if not done:
            self.restart()

    def expected_apply(self, name: str) -> type[SlotError] | None:
        """The table's refusal of activating ``name`` now, or None if it applies."""
        if self.active is None or name not in self.installed:
            return NoSuchFile
        if CHANGES[name][2] < self.floor:
            return slots.Downgrade
        if CHANGES[name][0] != BASE:
            return WrongBase  # deltas and updates both apply to the build's own base
        kind = change_kind(name)
        beside = self.on.get(self.active, {}).get("update" if kind == "delta" else "delta")
        if beside and CHANGES[beside][3] == CHANGES[name][3]:
            return InUse  # a delta and an update active together change different tensors
        return None

    @rule(name=st.sampled_from(sorted(CHANGES)), cut=st.sampled_from((None, *STORE_STEPS)))
    def activate_change(self, name: str, cut: str | None) -> None:
        refusal = self.expected_apply(name)
        if refusal:
            with pytest.raises(refusal):
                self.store.apply_change("rx", name)
            return
        done = self.powered(lambda: self.store.apply_change("rx", name), cut)
        if done or cut == "state-renamed":
            assert self.active is not None
            self.on.setdefault(self.active, {})[change_kind(name)] = name
        if not done:
            self.restart()

    @precondition(lambda self: "update" in self.on.get(self.active or "", {}))
    @rule(name=st.sampled_from(("on-u.delta.safetensors", "d2.delta.safetensors",
                                "d3.delta.safetensors")))  # fmt: skip
    def activate_delta_beside_the_update(self, name: str) -> None:
        """Made likely on purpose: random draws rarely line up an update, then a delta."""
        self.activate_change(name, None)

    @rule(kind=st.sampled_from(("delta", "update")))
    def revert_change(self, kind: str) -> None:
        on = self.on.get(self.active or "", {})
        said = self.store.revert_change("rx", kind)
        if kind in on:
            del on[kind]
        else:
            assert "nothing changed" in said

    @rule(what=st.sampled_from((*sorted(CHANGES), "A", "B")))
    def remove(self, what: str) -> None:
        if what in slots.SLOTS:
            if what in (self.active, self.confirmed):
                expected: type[SlotError] | None = InUse
            else:
                expected = None if what in self.files else NoSuchFile
        elif what not in self.installed:
            expected = NoSuchFile
        else:
            expected = InUse if any(what in on.values() for on in self.on.values()) else None
        if expected:
            with pytest.raises(expected):
                self.store.remove("rx", what)
            return
        assert "bytes freed" in self.store.remove("rx", what)
        if what in slots.SLOTS:
            del self.files[what]
            self.on.pop(what, None)
        else:
            self.installed.discard(what)

    def powered(self, action, cut: str | None) -> bool:
        """Run ``action`` with the power going off at crash point ``cut``; True if it ran
        to the end."""

        def off(at: str) -> None:
            if at == cut:
                raise PowerCut

        patch = pytest.MonkeyPatch()
        patch.setattr(slots, "crash_point", off)
        try:
            action()
            return True
        except PowerCut:
            return False
        finally:
            patch.undo()

    # ------------------------------------------------------------ invariants

    @invariant()
    def a_confirmed_build_survives(self) -> None:
        state = self.store.state("rx")
        if self.ever_confirmed is not None:
            assert state["confirmed"] is not None
            held = artifact.verify_artifact(self.store.model_dir("rx") / state["confirmed"])
            assert held["model"]["version"] == self.ever_confirmed

    @invariant()
    def every_slots_changes_load_as_the_app_loads_them(self) -> None:
        """What ``Runtime.open_device`` does with a slot's record: the update, then the
        delta, activated on one ``DeltaCore`` of the build's base (refusals raise)."""
        for on in self.store.state("rx")["changes"].values():
            weights = {p: np.zeros(SIZE // 4, np.float32) for p in ("v", "w")}
            core = DeltaCore(weights, BASE)
            for kind in ("update", "delta"):
                if on.get(kind):
                    core.activate(load_change(self.store.change_path("rx", on[kind])))

    @invariant()
    def the_change_counter_never_goes_down(self) -> None:
        assert self.store.state("rx")["change_counter"] == self.floor

    @invariant()
    def status_matches_the_table_and_the_files(self) -> None:
        if "rx" not in self.store.models():
            assert self.active is None
            return
        status = self.store.describe()["rx"]
        assert (status["active"], status["confirmed"]) == (self.active, self.confirmed)
        assert (status["test"] or {}).get("attempts_left") == self.test
        assert status["previous"] == (other(self.active) if self.active and other(self.active)
                                      in self.files else None)  # fmt: skip
        on_disk = {}
        for slot in slots.SLOTS:
            path = self.store.model_dir("rx") / slot
            if path.exists():
                on_disk[slot] = artifact.verify_artifact(path)["model"]["version"]
        assert on_disk == self.files
        assert {s: v["version"] for s, v in status["slots"].items()} == on_disk
        if self.active:
            assert self.active in on_disk  # the running build is always complete
        assert status["changes"] == {slot: {"delta": None, "update": None, **on}
                                     for slot, on in self.on.items() if on}  # fmt: skip
        for on in self.on.values():
            for name in on.values():
                assert self.store.change_path("rx", name).is_file()
        assert {f for k in ("deltas", "updates") for f in status[k]} == self.installed


SlotMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=24, deadline=None)
test_slot_state_machine = SlotMachine.TestCase
