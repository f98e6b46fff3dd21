"""A/B slot store in-process: test/confirm/rollback bookkeeping and stale slots."""

from __future__ import annotations

import json
import shutil

import pytest

from firmware_bridge.slots import SlotError, SlotStore, safe_name, safe_path
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


def test_rollback_and_missing_previous(store_with_two):
    store = store_with_two
    store.rollback("rx")
    assert version(store) == "1"
    shutil.rmtree(store.model_dir("rx") / "B")  # previous slot gone (e.g. crash mid-stage)
    assert store.state("rx")["previous"] is None
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
