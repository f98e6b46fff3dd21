"""An INT8 artifact with delta targets switches ZFDA deltas and restores its base bit-exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sdk import Runtime
from tests.runtime.conftest import relative_error
from tests.runtime.test_delta_switching import _delta

TOUCHED = ["receiver.features.2.0.weight", "receiver.to_image.weight", "receiver.to_image.bias"]


@pytest.fixture(scope="module")
def deltas(ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deltas")
    return [_delta(ckpt, TOUCHED, d, i, tmp) for i, d in enumerate(("hue", "rotation"))]


@pytest.fixture(scope="module")
def symbols(ckpt):
    from sdk.data import sample_images

    with Runtime.load(ckpt, part="transmitter") as tx:
        return tx.infer(sample_images((3, 32, 32), "patches", 8))["symbols"]


def test_targets_are_float_inputs_in_front_of_quantize_linear(int8):
    model = onnx.load(str(int8[0]))
    consumers = {i: n.op_type for n in model.graph.node for i in n.input}
    inputs = {v.name for v in model.graph.input}
    assert "receiver.features.2.0.weight" in inputs
    assert consumers["receiver.features.2.0.weight"] == "QuantizeLinear"
    floats = {i.name: i.data_type for i in model.graph.initializer}
    assert floats["receiver.features.2.0.weight"] == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("mode", [None, "rebuild"])
def test_switching_is_bit_exact_and_follows_the_delta(mode, int8, ckpt, deltas, symbols):
    rt = Runtime.load(int8[0], delta_mode=mode)
    ref = Runtime.load(ckpt, part="receiver")
    base = rt.infer(symbols)
    for delta in (*deltas, deltas[0]):
        rt.activate_delta(delta)
        ref.activate_delta(delta)
        got, want = rt.infer(symbols), ref.infer(symbols)
        assert not np.array_equal(got["recon"], base["recon"])
        assert relative_error(got["recon"], want["recon"]) < 0.05  # int8 error, not a missing delta
    rt.deactivate_delta()
    again = rt.infer(symbols)
    assert all(np.array_equal(again[k], v) for k, v in base.items())


def test_any_switch_sequence_gives_each_state_its_own_exact_output(int8, deltas, symbols):
    """Hypothesis stateful: whatever the order, a state's output never changes by a bit."""
    from hypothesis import settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

    runtime = Runtime.load(int8[0])
    seen: dict[int | None, dict[str, np.ndarray]] = {}

    class Switching(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            runtime.deactivate_delta()
            self.active: int | None = None

        @rule(which=st.sampled_from(range(len(deltas))))
        def activate(self, which: int) -> None:
            runtime.activate_delta(deltas[which])
            self.active = which

        @rule()
        def deactivate(self) -> None:
            runtime.deactivate_delta()
            self.active = None

        @invariant()
        def output_is_the_states_own(self) -> None:
            got = runtime.infer(symbols)
            want = seen.setdefault(self.active, got)
            assert all(np.array_equal(got[k], v) for k, v in want.items())

    Switching.TestCase.settings = settings(max_examples=8, stateful_step_count=6, deadline=None)
    Switching.TestCase().runTest()
    assert len(seen) == len(deltas) + 1  # base and every delta were visited


def test_an_int8_artifact_without_targets_says_how_to_rebuild_and_that_works(
    ckpt, deltas, symbols, tmp_path
):
    from sdk.build import build
    from sdk.runtime import DeltaTargetError

    fixed = build(
        ckpt, tmp_path / "a", backend="onnxrt", precision="int8", part="receiver", calib_samples=16
    )
    with pytest.raises(DeltaTargetError, match="--precision int8 --delta-targets decoder"):
        Runtime.load(fixed).activate_delta(deltas[0])
    rebuilt = build(
        ckpt,
        tmp_path / "b",
        backend="onnxrt",
        precision="int8",
        part="receiver",
        calib_samples=16,
        delta_targets="decoder",  # what the message says
    )
    rt = Runtime.load(rebuilt)
    base = rt.infer(symbols)
    rt.activate_delta(deltas[0])
    assert not np.array_equal(rt.infer(symbols)["recon"], base["recon"])
    rt.deactivate_delta()
    assert np.array_equal(rt.infer(symbols)["recon"], base["recon"])
