"""Deltas and updates on one model: random sequences of activate / deactivate / disabled /
merge always leave exactly the expected bits, and the base is restored exactly."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sdk.delta import (
    Delta,
    DeltaEntry,
    DeltaOverlapError,
    TorchDeltas,
    Update,
)
from sdk.fingerprint import fingerprint_arrays, model_fingerprint

from .conftest import make_update, tiny


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.PReLU(4), torch.nn.Linear(4, 2))


def _changes(model: torch.nn.Module) -> dict[str, Delta | Update]:
    rng = np.random.default_rng(0)
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    fp = model_fingerprint(model)

    def delta(name: str, names: list[str]) -> Delta:
        entries = {}
        for n in names:
            idx = np.sort(rng.choice(params[n].size, 2, replace=False)).astype(np.int64)
            entries[n] = DeltaEntry(idx, rng.standard_normal(2).astype(np.float16), params[n].shape)
        return Delta(name, fp, 0.5, entries)

    def update(name: str, names: list[str]) -> Update:
        entries = {n: rng.standard_normal(params[n].shape).astype(np.float32) for n in names}
        return Update(name, fp, fp, entries)

    return {
        "d1": delta("d1", ["0.weight"]),
        "d2": delta("d2", ["2.weight", "0.bias"]),
        "u1": update("u1", ["2.weight", "2.bias"]),  # overlaps d2
        "u2": update("u2", ["1.weight"]),
        "u3": update("u3", ["0.bias", "1.weight", "2.bias"]),  # overlaps d2
    }


def expected(base: dict[str, np.ndarray], active: list[Delta | Update]) -> dict[str, np.ndarray]:
    """``base`` with the active changes applied, computed independently in numpy."""
    out = {n: a.copy() for n, a in base.items()}
    for change in active:
        for name, entry in change.entries.items():
            if isinstance(change, Update):
                out[name] = np.asarray(entry, dtype=np.float32).copy()
            else:
                flat = out[name].reshape(-1)
                flat[entry.indices] = base[name].reshape(-1)[entry.indices] + entry.values.astype(
                    np.float32
                )
    return out


class Switching(RuleBasedStateMachine):
    """Updates swapped in by rebinding parameters (the torch default)."""

    model = _tiny_model()
    adapters = TorchDeltas(model)
    changes = _changes(model)
    for _name, _change in changes.items():
        adapters.load(_change, _name)
    base: ClassVar = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    base_fp = model_fingerprint(model)

    def __init__(self) -> None:
        super().__init__()
        self.adapters.deactivate()
        self.active: dict[str, str] = {}  # kind -> name

    def _current(self) -> dict[str, np.ndarray]:
        return {n: p.detach().numpy().copy() for n, p in self.model.named_parameters()}

    def _want(self) -> dict[str, np.ndarray]:
        return expected(self.base, [self.changes[n] for n in self.active.values()])

    @rule(name=st.sampled_from(["d1", "d2", "u1", "u2", "u3"]))
    def activate(self, name: str) -> None:
        change = self.changes[name]
        others = [self.changes[n] for k, n in self.active.items() if k != change.kind]
        if any(set(change.entries) & set(o.entries) for o in others):
            before = self._current()
            with pytest.raises(DeltaOverlapError):
                self.adapters.activate(name)
            assert all(before[n].tobytes() == a.tobytes() for n, a in self._current().items())
            return
        self.adapters.activate(name)
        self.active[change.kind] = name

    @rule(name=st.sampled_from([None, "d1", "d2", "u1", "u2", "u3"]))
    def deactivate(self, name: str | None) -> None:
        self.adapters.deactivate(name)
        if name is None:
            self.active.clear()
        elif self.active.get(self.changes[name].kind) == name:
            del self.active[self.changes[name].kind]

    @rule()
    def disabled(self) -> None:
        with self.adapters.disabled():
            assert self.adapters.active_names == []
            assert model_fingerprint(self.model) == self.base_fp
        assert set(self.adapters.active_names) == set(self.active.values())

    @rule()
    def merge(self) -> None:
        assert self.adapters.merge() == fingerprint_arrays(self._want())

    @invariant()
    def weights_are_exactly_expected(self) -> None:
        want = self._want()
        for name, values in self._current().items():
            assert values.tobytes() == want[name].tobytes(), name

    def teardown(self) -> None:
        self.adapters.deactivate()
        assert model_fingerprint(self.model) == self.base_fp


class CopySwitching(Switching):
    """Updates copied into the flat buffer (what engines without rebinding do)."""

    model = _tiny_model()
    adapters = TorchDeltas(model, rebind_updates=False)
    changes = _changes(model)
    for _name, _change in changes.items():
        adapters.load(_change, _name)
    base: ClassVar = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    base_fp = model_fingerprint(model)


@pytest.mark.parametrize("machine", [Switching, CopySwitching], ids=["rebind", "copy"])
def test_random_delta_and_update_sequences_restore_the_base_exactly(machine):
    run_state_machine_as_test(
        machine, settings=settings(max_examples=1000, stateful_step_count=10, deadline=None)
    )


def test_merge_writes_a_checkpoint_with_the_new_fingerprint(tmp_path):
    from sdk.checkpoint import load_checkpoint

    rx = tiny("DeepJSCC", 2)
    base = model_fingerprint(rx)
    update = make_update(rx, ["receiver.to_image.weight"], seed=3)
    adapters = TorchDeltas(rx)
    adapters.activate(adapters.load(update))
    assert adapters.merge(tmp_path / "merged") == update.result_fingerprint
    assert model_fingerprint(load_checkpoint(tmp_path / "merged")) == update.result_fingerprint
    adapters.deactivate()
    assert model_fingerprint(rx) == base
