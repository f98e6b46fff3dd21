"""TensorRT path end to end; runs only where TensorRT and a CUDA GPU exist (e.g. a Jetson)."""

from __future__ import annotations

import numpy as np
import pytest

from sdk import Runtime, artifact
from sdk.backends.trt.builder import precision_settings
from sdk.build import tensorrt_usable

pytestmark = pytest.mark.skipif(
    not tensorrt_usable(), reason="needs TensorRT and a CUDA GPU (run on the Jetson)"
)


@pytest.fixture(scope="module")
def plan(checkpoint, tmp_path_factory):
    from sdk.build import build

    out = tmp_path_factory.mktemp("trt") / "rx"
    return build(checkpoint, out, backend="trt", part="receiver", delta_targets="decoder")


def test_plan_manifest_records_the_device(plan):
    manifest = artifact.verify_artifact(plan)
    facts = artifact.local_device_facts()
    assert manifest["target"]["compute_capability"] == facts["compute_capability"]
    target = manifest["target"]
    assert "REFIT_INDIVIDUAL" in target["builder_flags"]
    assert target["tf32"] is False and target["dla_core"] is None
    assert (
        target["strongly_typed"]
        == precision_settings(facts["tensorrt_version"], "fp32")["strongly_typed"]
    )
    artifact.check_compatible(manifest, facts)


def test_trt_matches_onnxrt_and_switches_deltas(plan, onnx_artifact, checkpoint, tmp_path):
    from sdk.checkpoint import load_checkpoint
    from sdk.delta import Delta, DeltaEntry, save_delta
    from sdk.fingerprint import model_fingerprint

    model = load_checkpoint(checkpoint)
    name = "receiver.to_image.weight"
    shape = tuple(dict(model.named_parameters())[name].shape)
    idx = np.arange(0, int(np.prod(shape)), 7, dtype=np.int64)
    entry = DeltaEntry(idx, np.full(len(idx), 0.05, np.float32), shape)
    delta = save_delta(
        Delta("hue", model_fingerprint(model), 0.9, {name: entry}), tmp_path / "h.delta.safetensors"
    )
    z = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    with Runtime.load(plan) as trt, Runtime.load(onnx_artifact) as ort:
        assert trt.delta_mode == "refit"
        base = trt.infer(z)
        np.testing.assert_allclose(base["recon"], ort.infer(z)["recon"], atol=1e-3)
        trt.activate_delta(delta)
        ort.activate_delta(delta)
        np.testing.assert_allclose(trt.infer(z)["recon"], ort.infer(z)["recon"], atol=1e-3)
        assert trt.runner.delta_core().take_changed() == set()  # refitted exactly once
        trt.deactivate_delta()
        assert np.array_equal(trt.infer(z)["recon"], base["recon"])
