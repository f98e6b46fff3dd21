"""Artifact directories and tars: round trip, tamper detection, device compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest

from sdk import artifact
from sdk.artifact import ArtifactError, ArtifactIncompatibleError


def _manifest(backend: str = "onnxrt", target: dict | None = None) -> dict:
    return artifact.make_manifest(
        name="t",
        model_class="DeepJSCC",
        part="chain",
        base_fingerprint="ab" * 32,
        backend=backend,
        precision="fp32",
        inputs=[{"name": "image", "shape": [-1, 3, 16, 16], "dtype": "float32"}],
        outputs=[{"name": "recon", "shape": [-1, 3, 16, 16], "dtype": "float32"}],
        target=target,
        source="ckpt",
    )


@pytest.fixture
def art(tmp_path):
    return artifact.write_artifact(
        tmp_path / "art", _manifest(), {"model.onnx": b"\x01" * 1000, "extra/x.bin": b"abc"}
    )


def test_dir_and_tar_round_trip(art, tmp_path):
    m = artifact.verify_artifact(art)
    assert m["files"]["model.onnx"]["size"] == 1000
    tar = artifact.pack(art, tmp_path / "a.tar")
    assert artifact.verify_artifact(tar) == m
    assert artifact.manifest_bytes(tar) == (art / "manifest.json").read_bytes()
    assert tar.read_bytes() == artifact.pack(art, tmp_path / "b.tar").read_bytes()  # reproducible
    out = artifact.extract(tar, tmp_path / "x")
    assert (out / "extra/x.bin").read_bytes() == b"abc"
    with artifact.opened(tar) as (d, m2):
        assert m2 == m and (d / "model.onnx").is_file()
    assert not d.exists()  # temporary extraction is cleaned up


def test_tar_with_top_folder_is_read(art, tmp_path):
    path = tmp_path / "top.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(art, arcname="art")
    assert artifact.verify_artifact(path)["model"]["name"] == "t"


def test_tampered_payload(art, tmp_path):
    data = bytearray((art / "model.onnx").read_bytes())
    data[10] ^= 1
    (art / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        artifact.verify_artifact(art)


def test_truncated_and_missing(art):
    (art / "model.onnx").write_bytes(b"\x01" * 999)
    with pytest.raises(ArtifactError, match="999 bytes"):
        artifact.verify_artifact(art)
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        artifact.verify_artifact(art)


def test_missing_in_tar(art, tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(art / "manifest.json", arcname="manifest.json")
    with pytest.raises(ArtifactError, match="missing from the tar"):
        artifact.verify_artifact(path)


def test_malicious_tar_member(art, tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(art / "manifest.json", arcname="manifest.json")
        tar.add(art / "model.onnx", arcname="../model.onnx")
    with pytest.raises(ArtifactError, match="plain relative file"):
        artifact.verify_artifact(path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m.pop("files"), "lacks"),
        (lambda m: m.update(backend="tflite"), "unknown backend"),
        (lambda m: m["files"].update({"../x": {"sha256": "0", "size": 1}}), "relative"),
    ],
)
def test_bad_manifest(art, edit, match):
    m = json.loads((art / "manifest.json").read_text())
    edit(m)
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=match):
        artifact.read_manifest(art)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        artifact.read_manifest(tmp_path)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ArtifactError, match="neither"):
        artifact.read_manifest(tmp_path / "x.txt")
    (tmp_path / "m").mkdir()
    (tmp_path / "m/manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifact.read_manifest(tmp_path / "m")


def test_failed_write_leaves_existing_artifact(art, tmp_path):
    before = (art / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError):
        artifact.write_artifact(art, _manifest(), {"model.onnx": tmp_path / "does-not-exist"})
    assert (art / "manifest.json").read_bytes() == before


TARGET = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "builder_flags": ["FP16"]}
ORIN = {"tensorrt_version": "10.3.0.30", "compute_capability": "8.7"}


@pytest.mark.parametrize(
    "facts, match",
    [
        (ORIN, None),
        ({"tensorrt_version": "10.13.0", "compute_capability": "11.0"}, "sm_87 / TensorRT 10.3"),
        ({"tensorrt_version": "10.4.0", "compute_capability": "8.7"}, "this device is sm_87"),
        ({"tensorrt_version": None, "compute_capability": None}, "no TensorRT"),
    ],
)
def test_check_compatible(facts, match):
    m = _manifest("trt", TARGET)
    if match is None:
        artifact.check_compatible(m, facts)
        return
    with pytest.raises(ArtifactIncompatibleError, match=match) as exc:
        artifact.check_compatible(m, facts)
    assert "semedge build ckpt" in str(exc.value) and "\n" not in str(exc.value)


def test_version_compatible_plans_accept_newer_tensorrt():
    m = _manifest("trt", {**TARGET, "builder_flags": ["VERSION_COMPATIBLE"]})
    artifact.check_compatible(m, {"tensorrt_version": "10.5.1", "compute_capability": "8.7"})
    with pytest.raises(ArtifactIncompatibleError):
        artifact.check_compatible(m, {"tensorrt_version": "10.2", "compute_capability": "8.7"})


def test_onnx_artifacts_run_anywhere():
    artifact.check_compatible(_manifest(), {"tensorrt_version": None, "compute_capability": None})


def test_l4t_version(tmp_path):
    f = tmp_path / "rel"
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    assert artifact.l4t_version(f) == "36.4.0"
    assert artifact.l4t_version(tmp_path / "none") is None


def test_module_is_torch_free():
    code = "import sys, sdk.artifact; print(any(m in sys.modules for m in ('torch', 'onnx')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
