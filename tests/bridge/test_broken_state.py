"""One model's broken ``state.json`` (garbage, wrong types, a non-integer counter) is that
model's problem only: the agent boots, STATUS and LIST name the model with an ``error``
that says what to do, verbs on it get one line, every other model works."""

from __future__ import annotations

import json

import pytest

from firmware_bridge.slots import BrokenState, SlotStore, read_state
from sdk import artifact

from .bridge_helpers import make_artifact
from .test_verbs import BASE, OTHER, Device

BROKEN = {
    "garbage": "{not json",
    "not an object": "[1, 2]",
    "no active": '{"confirmed": "A"}',
    "odd slot": '{"active": "C", "confirmed": "A"}',
    "counter text": '{"active": "A", "confirmed": "A", "security_counter": "x"}',
    "counter float": '{"active": "A", "confirmed": "A", "change_counter": 1.5}',
    "test wrong type": '{"active": "B", "confirmed": "A", "test": "soon"}',
    "changes a list": '{"active": "A", "confirmed": "A", "changes": ["A"]}',
    "change path": '{"active": "A", "confirmed": "A", "changes": {"A": {"delta": "../x"}}}',
}


def two_models(root) -> SlotStore:
    """``rx`` (broken below) and ``tx``, each confirmed in slot A."""
    store = SlotStore(root)
    for name, fingerprint in (("rx", BASE), ("tx", OTHER)):
        art = make_artifact(root.parent / name, name=name, fingerprint=fingerprint)
        store.activate(name, store.stage(name, artifact.pack(art)), test=False)
    return store


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_state_is_one_line_and_only_its_models(tmp_path, text):
    store = two_models(tmp_path / "root")
    path = store.model_dir("rx") / "state.json"
    path.write_text(text)
    with pytest.raises(BrokenState, match="restore it, or delete it and flash") as err:
        read_state(store.model_dir("rx"))
    assert len(str(err.value).splitlines()) == 1
    warned: list[str] = []
    assert store.boot(warn=warned.append) == []
    assert len(warned) == 1 and warned[0].startswith("skipped model rx: ")
    table = store.describe()
    assert table["rx"] == {"error": str(err.value)}
    assert table["tx"]["active"] == "A"
    assert path.read_text() == text  # nothing rewrote it


def test_the_agent_serves_the_other_models(tmp_path):
    """A real agent process over a pty: boots past the broken model, STATUS and LIST show
    it with its error, its verbs are refused in one line, the other model's verbs work."""
    two_models(tmp_path / "root")
    state = tmp_path / "root/models/rx/state.json"
    state.write_text('{"active": "A", "confirmed": "A", "security_counter": "seven"}')
    dev = Device(tmp_path)
    try:
        status = json.loads(dev.ok("status", "--json"))["models"]
        assert "security_counter is 'seven'" in status["rx"]["error"]
        assert status["tx"]["active"] == "A"
        listing = dev.ok("list")
        assert "rx: ERROR" in listing and "slot A v1" in listing
        assert "tx: active A (v1)" in dev.ok("status")
        for verb in (("confirm",), ("rollback",), ("deactivate-delta",), ("remove", "B")):
            said = dev.refused(*verb, "--model", "rx", code="state.json is unreadable")
            assert "delete it and flash the model again" in said
        assert "nothing changed" in dev.ok("confirm", "--model", "tx")
    finally:
        dev.agent.kill()
        _, err = dev.agent.communicate(timeout=10)
        dev.close()
    skipped = [line for line in err.decode().splitlines() if "skipped model rx" in line]
    assert len(skipped) == 1 and "state.json is unreadable" in skipped[0]
