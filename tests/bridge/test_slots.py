"""A/B slot store in-process: test/confirm/rollback bookkeeping and stale slots."""

from __future__ import annotations

import json
import shutil

import pytest

from firmware_bridge.slots import NoSuchFile, SlotError, SlotStore, safe_name, safe_path
from sdk import artifact

from .bridge_helpers import make_artifact


@pytest.fixture
def store_with_two(tmp_path):
    store = SlotStore(tmp_path / "root")
    for i, version in enumerate(("1", "2")):
        tar = artifact.pack(make_artifact(tmp_path / f"v{version}", seed=i, version=version))
        slot = store.stage("rx", tar)
        store.activate("rx", slot, test=False)
    return store


def version(store: SlotStore) -> str:
    manifest = store.active_manifest("rx")
    assert manifest is not None
    return str(manifest["model"]["version"])


def test_stage_writes_only_the_inactive_slot(store_with_two, tmp_path):
    store = store_with_two
    assert store.state("rx")["active"] == "B" and version(store) == "2"
    before = (store.model_dir("rx") / "B" / "model.onnx").read_bytes()
    tar = artifact.pack(make_artifact(tmp_path / "v3", seed=7, version="3"))
    assert store.stage("rx", tar) == "A"
    assert (store.model_dir("rx") / "B" / "model.onnx").read_bytes() == before
    assert version(store) == "2"  # staging alone switches nothing


def test_test_attempts_count_agent_starts(store_with_two, tmp_path):
    store = store_with_two
    tar = artifact.pack(make_artifact(tmp_path / "v3", seed=7, version="3"))
    store.activate("rx", store.stage("rx", tar), test=True, attempts=1)
    assert version(store) == "3"
    assert store.boot() == [] and version(store) == "3"  # first restart: still on trial
    assert store.boot() == ["rx"] and version(store) == "2"  # second: reverted
    assert store.state("rx")["test"] is None


def test_reflash_before_confirm_keeps_the_confirmed_build(tmp_path):
    """Issue 10 #2: v1 permanent, v2 TEST, v2 again: v1 must survive, and a restart
    must come back to it and show it (not the never-confirmed v2) as confirmed."""
    store = SlotStore(tmp_path / "root")
    v1, v2 = (artifact.pack(make_artifact(tmp_path / f"v{v}", seed=i, version=v))
              for i, v in enumerate("12"))  # fmt: skip
    store.activate("rx", store.stage("rx", v1), test=False)
    for _ in range(2):
        assert store.stage("rx", v2) == "B"  # never A, which holds the confirmed v1
        store.activate("rx", "B", test=True)
    assert artifact.read_manifest(store.model_dir("rx") / "A")["model"]["version"] == "1"
    assert store.boot() == ["rx"]
    state = store.describe()["rx"]
    assert (state["active"], state["confirmed"], state["test"]) == ("A", "A", None)
    assert version(store) == "1"


def test_rollback_twice_never_confirms_a_test_build(tmp_path):
    """Issue 10 #2: rolling back twice re-ran the rolled-back TEST build as confirmed."""
    store = SlotStore(tmp_path / "root")
    for i, v in enumerate("12"):
        tar = artifact.pack(make_artifact(tmp_path / f"v{v}", seed=i, version=v))
        store.activate("rx", store.stage("rx", tar), test=v == "2")
    assert store.rollback("rx") == "rx: left B (v2) (under test), running the confirmed A (v1)"
    said = store.rollback("rx")
    assert "running B (v2) under TEST" in said and "returns to A (v1)" in said
    assert store.state("rx")["confirmed"] == "A" and store.state("rx")["test"] is not None
    assert store.boot() == ["rx"] and version(store) == "1"


def test_confirm_says_what_changed(tmp_path):
    store = SlotStore(tmp_path / "root")
    for i, v in enumerate("12"):
        tar = artifact.pack(make_artifact(tmp_path / f"v{v}", seed=i, version=v))
        store.activate("rx", store.stage("rx", tar), test=v == "2")
    assert store.confirm("rx") == (
        "rx: confirmed B (v2), it survives restarts; A (v1) is no longer kept as fallback"
    )
    assert store.confirm("rx") == "rx: B (v2) was already confirmed; nothing changed"


def test_format_1_state_reads_as_it_meant(store_with_two):
    store = store_with_two
    path = store.model_dir("rx") / "state.json"
    old = {"format": "semedge.slots", "format_version": 1, "active": "A", "previous": "B",
           "test": {"slot": "A", "attempts_left": 0}, "security_counter": 0}  # fmt: skip
    path.write_text(json.dumps(old))
    assert store.state("rx")["confirmed"] == "B"
    path.write_text(json.dumps({**old, "test": None}))
    assert store.state("rx")["confirmed"] == "A"


def test_rollback_and_missing_previous(store_with_two):
    store = store_with_two
    store.rollback("rx")
    assert version(store) == "1"
    store.confirm("rx")
    shutil.rmtree(store.model_dir("rx") / "B")  # previous slot gone (e.g. crash mid-stage)
    assert store.describe()["rx"]["previous"] is None
    with pytest.raises(SlotError, match="no previous"):
        store.rollback("rx")


def test_state_file_is_complete_json(store_with_two):
    state = json.loads((store_with_two.model_dir("rx") / "state.json").read_text())
    assert state["format"] == "semedge.slots" and state["active"] in ("A", "B")
    assert not list(store_with_two.model_dir("rx").glob(".*tmp*"))


@pytest.mark.parametrize("name", ["..", "../x", "/etc", "a/b", "a b", "x;rm", "", "é", "a" * 65])
def test_unsafe_names(name):
    assert not safe_name(name)


def test_safe_paths():
    assert safe_path("model.onnx") and safe_path("plugins/libsemedge.so")
    assert not safe_path("../model.onnx") and not safe_path("/model.onnx")
    assert not safe_path("a//b") and not safe_path("a/../b")


def test_a_root_that_cannot_hold_models_is_a_one_line_refusal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SlotError, match="give --root a writable directory"):
        SlotStore(blocker / "root")


def test_a_change_without_a_base_needs_a_running_build(tmp_path):
    """A header naming no base never matches a model that runs nothing valid."""
    store = SlotStore(tmp_path / "root")
    store.stage("rx", artifact.pack(make_artifact(tmp_path / "v1")))  # staged, never run
    with pytest.raises(NoSuchFile, match="runs no valid artifact; flash one first"):
        store.check_base("rx", "x.delta.safetensors", {})


@pytest.mark.parametrize("attempts", [-1, 1.5, "2", True])
def test_test_attempts_that_would_not_read_back_are_refused(store_with_two, tmp_path, attempts):
    """A state the store could not read back would lock the model out: refused, unchanged."""
    store = store_with_two
    tar = artifact.pack(make_artifact(tmp_path / "v3", seed=7, version="3"))
    slot = store.stage("rx", tar)
    before = (store.model_dir("rx") / "state.json").read_bytes()
    with pytest.raises(SlotError, match="test attempts must be a whole number") as e:
        store.activate("rx", slot, test=True, attempts=attempts)
    assert "\n" not in str(e.value)
    with pytest.raises(SlotError, match="test attempts"):
        store.rollback("rx", attempts=attempts)
    assert (store.model_dir("rx") / "state.json").read_bytes() == before


def test_the_store_never_writes_a_state_it_cannot_read(store_with_two):
    store = store_with_two
    before = (store.model_dir("rx") / "state.json").read_bytes()
    with pytest.raises(SlotError, match="state of rx not changed: active is 'C'"):
        store._write_state("rx", {**store.state("rx"), "active": "C"})
    assert (store.model_dir("rx") / "state.json").read_bytes() == before


def test_pick_model_names_what_fits(tmp_path):
    from firmware_bridge.slots import NoModel, WrongBase

    store = SlotStore(tmp_path / "root")
    with pytest.raises(NoModel, match="no model is installed yet"):
        store.pick_model()
    for name, fp in (("rx", "ab" * 32), ("tx", "cd" * 32)):
        art = make_artifact(tmp_path / name, name=name, fingerprint=fp)
        store.activate(name, store.stage(name, artifact.pack(art)), test=False)
    assert store.pick_model(base="cd" * 32) == "tx"
    assert store.pick_model("rx", base="cd" * 32) == "rx"  # a named model is taken as named
    with pytest.raises(WrongBase, match=r"no model runs base efefefefefef… \(installed: rx, tx\)"):
        store.pick_model(base="ef" * 32)
    with pytest.raises(NoModel, match=r"2 models fit \(rx, tx\); name one with --model"):
        store.pick_model()
    with pytest.raises(NoModel, match="no installed model 'zz'"):
        store.pick_model("zz")


def test_activating_the_active_delta_again_is_not_a_downgrade(tmp_path):
    """A delta active at counter 1 stays valid when a counter-2 file raises the floor
    (the rule the app follows too); asking for it again changes nothing."""
    from .bridge_helpers import make_delta

    store = SlotStore(tmp_path / "root")
    art = make_artifact(tmp_path / "v1", fingerprint="ab" * 32)
    store.activate("rx", store.stage("rx", artifact.pack(art)), test=False)
    old = make_delta(tmp_path / "old.delta.safetensors", "ab" * 32, counter=1)
    new = make_delta(tmp_path / "new.delta.safetensors", "ab" * 32, counter=2)
    for delta in (old, new):
        store.install_change("rx", delta, delta.name)
        if delta is old:
            store.apply_change("rx", old.name)
    assert "already active" in store.apply_change("rx", old.name)
    assert store.active_changes("rx")["delta"] == old.name
