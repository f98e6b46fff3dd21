"""Runtime.load on artifacts: verification, refusals, input checks, backends agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sdk import Runtime, artifact
from sdk.artifact import ArtifactError, ArtifactIncompatibleError
from sdk.runtime import InputError, RunnerError


@pytest.fixture(scope="module")
def symbols(checkpoint, real_images):
    with Runtime.load(checkpoint, part="transmitter") as tx:
        return tx.infer(real_images)["symbols"]


def test_artifact_dir_and_tar_run_like_torch(onnx_artifact, checkpoint, symbols, rel, tmp_path):
    manifest = artifact.verify_artifact(onnx_artifact)
    assert manifest["model"]["part"] == "receiver" and manifest["backend"] == "onnxrt"
    assert manifest["inputs"][0]["name"] == "symbols" and manifest["delta_targets"]
    with Runtime.load(checkpoint, part="receiver") as ref:
        want = ref.infer({"symbols": symbols})
    tar = artifact.pack(onnx_artifact, tmp_path / "rx.tar")
    for source in (onnx_artifact, tar):
        with Runtime.load(source) as rt:
            got = rt.infer(symbols)
            assert rt.info()["delta_mode"] == "inputs"
            assert rt.info()["base_fingerprint"] == manifest["base_fingerprint"]
        assert set(got) == {"recon", "logits"}
        for key in got:
            assert rel(got[key], want[key]) < 1e-5


def test_tar_workdir_is_removed(onnx_artifact, tmp_path):
    tar = artifact.pack(onnx_artifact, tmp_path / "rx.tar")
    rt = Runtime.load(tar)
    workdir = rt.runner.path.parent
    assert workdir.is_dir()
    rt.close()
    assert not workdir.exists()


@pytest.fixture
def copy(onnx_artifact, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(onnx_artifact, dst)
    return dst


def test_tampered_payload_is_refused(copy):
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        Runtime.load(copy)


def test_missing_payload_is_refused(copy):
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Runtime.load(copy)


def _rewrite(directory, **changes):
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_plan_for_another_device_is_refused(copy):
    # a TensorRT plan built on a Jetson Orin; this machine has no TensorRT / GPU
    target = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "builder_flags": []}
    _rewrite(copy, backend="trt", target=target)
    with pytest.raises(ArtifactIncompatibleError, match=r"sm_87 / TensorRT 10\.3") as exc:
        Runtime.load(copy)
    assert "semedge build" in str(exc.value)


def test_wrong_backend_requested(onnx_artifact):
    with pytest.raises(ArtifactIncompatibleError, match="onnxrt artifact, not trt"):
        Runtime.load(onnx_artifact, backend="trt")


def test_manifest_io_must_match_model(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["inputs"][0]["name"] = "image"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest lists"):
        Runtime.load(copy)


def test_wrong_inputs_get_clear_errors(onnx_artifact, symbols):
    with Runtime.load(onnx_artifact) as rt:
        with pytest.raises(InputError, match=r"shape \[4, 100\], expected symbols \[B, 1024\]"):
            rt.infer(np.zeros((4, 100), np.float32))
        with pytest.raises(InputError, match="dtype float64"):
            rt.infer(symbols.astype(np.float64))
        with pytest.raises(InputError, match="unknown"):
            rt.infer({"image": symbols})
        with pytest.raises(InputError, match="shape"):
            rt.infer(symbols[0])
        # nothing was broken by the bad calls
        assert rt.infer(symbols)["recon"].shape == (len(symbols), 3, 32, 32)


def test_inactive_runner_and_unknown_backend(onnx_artifact):
    rt = Runtime.load(onnx_artifact)
    rt.close()
    for use in (lambda: rt.infer(np.zeros((1, 1024), np.float32)), lambda: rt.inputs):
        with pytest.raises(RunnerError, match=r"closed; load the model again with Runtime\.load"):
            use()
    assert hasattr(Runtime, "load")  # the method the message names exists
    with pytest.raises(RunnerError, match="unknown backend"):
        Runtime.load(onnx_artifact, backend="tflite")


def test_int8_artifact_is_close_to_fp32(checkpoint, tmp_path, real_images):
    from sdk.build import build

    out = build(checkpoint, tmp_path / "int8", backend="onnxrt", precision="int8")
    manifest = artifact.verify_artifact(out)
    assert manifest["precision"] == "int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with Runtime.load(out) as q, Runtime.load(checkpoint) as ref:
        got, want = q.infer(real_images)["recon"], ref.infer(real_images)["recon"]
    assert 0 < np.abs(got - want).mean() < 0.02  # quantized, and still the same model


def test_cli_errors_are_one_line(copy, tmp_path):
    (copy / "model.onnx").write_bytes(b"broken")
    for argv in (
        ["compare", str(copy), "--backends", "onnxrt,torch"],
        ["build", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--backend", "onnxrt"],
        ["build", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "o"), "--backend", "trt"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "sdk.cli", *argv], capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "error:" in proc.stderr, proc.stderr


def test_trt_runner_names_the_missing_dependency(onnx_artifact):
    from sdk.backends.trt.runner import TrtRunner
    from sdk.errors import MissingDependencyError

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        manifest = artifact.read_manifest(onnx_artifact)
        with pytest.raises(MissingDependencyError, match="tensorrt is not installed"):
            TrtRunner(onnx_artifact / "model.plan", manifest, onnx_artifact).activate()
    else:
        pytest.skip("TensorRT is installed here; tests/gpu covers the real runner")


def test_onnx_artifacts_load_without_torch(onnx_artifact):
    """Edge devices may have ONNX Runtime but no torch: loading must not import it."""
    code = (
        "import sys, numpy as np, sdk\n"
        f"rt = sdk.Runtime.load({str(onnx_artifact)!r})\n"
        "out = rt.infer(np.zeros((1, 1024), np.float32))\n"
        "print(out['recon'].shape, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "(1, 3, 32, 32) False", proc.stderr
