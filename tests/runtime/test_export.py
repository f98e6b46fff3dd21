"""ONNX export: every family and part matches torch; names, targets, top-K selection."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sdk.export import ExportError, export_onnx, select_targets
from sdk.models import available_models
from sdk.onnx_io import io_specs, read_metadata

VARIANTS = {"KEMTransceiver+etf": ("KEMTransceiver", {"etf": True})}
"""Extra configurations tested like families (sKEM = KEM with the ETF projection)."""


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _reference(model, part, x):
    with torch.no_grad():
        if part == "transmitter":
            return [model.transmitter(x).numpy()]
        z = x if part == "receiver" else model.transmitter(x)
        out = model.receiver(z)
        return [out[k].numpy() for k in model.tasks]


def _families() -> list[str]:
    from sdk.models.registry import MODELS

    found = available_models()
    return found + [v for v, (base, _) in VARIANTS.items() if base in MODELS]


@pytest.mark.parametrize("family", _families())
@pytest.mark.parametrize("part", ["transmitter", "receiver", "chain"])
def test_onnx_matches_torch(family, part, tmp_path, real_images, small, rel):
    name, extra = VARIANTS.get(family, (family, {}))
    model = small(name, **extra)
    path = export_onnx(model, tmp_path / "m.onnx", part)
    sess = _session(path)
    images = {"random": torch.rand(5, *model.input_shape)}
    if tuple(model.input_shape) == (3, 32, 32):
        images["real"] = torch.from_numpy(real_images)
    for kind, x in images.items():
        if part == "receiver":
            with torch.no_grad():
                x = model.transmitter(x)
        outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        for got, want in zip(outs, _reference(model, part, x), strict=True):
            assert got.shape == want.shape
            assert rel(got, want) < 1e-5, (kind, part)


def test_names_batch_and_opset(tmp_path, small):
    model = small("DeepJSCC")
    path = export_onnx(model, tmp_path / "m.onnx", "chain", opset=18)
    proto = onnx.load(str(path))
    inputs, outputs = io_specs(proto)
    assert inputs == [{"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32"}]
    assert [o["name"] for o in outputs] == ["recon", "logits"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    sess = _session(path)
    for batch in (1, 7):
        recon, logits = sess.run(None, {"image": np.random.rand(batch, 3, 32, 32).astype("f4")})
        assert recon.shape == (batch, 3, 32, 32) and logits.shape == (batch, 10)
    meta = read_metadata(path)
    assert meta["model_class"] == "DeepJSCC" and meta["part"] == "chain"
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(model, tmp_path / "old.onnx", opset=16)


def test_delta_targets_become_named_inputs(tmp_path, small, rel):
    model = small("DeepJSCC")
    path = export_onnx(model, tmp_path / "m.onnx", "receiver", delta_targets="decoder")
    proto = onnx.load(str(path))
    names = [v.name for v in proto.graph.input]
    decoder = [n for n, _ in model.named_parameters() if n.startswith("receiver.")]
    assert names == ["symbols", *decoder]  # every decoder weight, PReLU slopes included
    # the weights keep their values as defaults: the file runs without feeding them
    z = model.transmitter(torch.rand(2, 3, 32, 32)).detach()
    recon = _session(path).run(["recon"], {"symbols": z.numpy()})[0]
    assert rel(recon, model.receiver(z)["recon"].detach().numpy()) < 1e-5


def test_target_selection_errors(small):
    model = small("DeepJSCC")
    assert select_targets(model, "receiver.to_image.*", "receiver") == [
        "receiver.to_image.weight",
        "receiver.to_image.bias",
    ]
    with pytest.raises(ExportError, match="match no parameter"):
        select_targets(model, "nothing.*", "chain")
    with pytest.raises(ExportError, match="not part of the transmitter"):
        select_targets(model, "decoder", "transmitter")
    assert select_targets(model, "receiver.features.1.0.weight", "receiver") == [
        "receiver.features.1.0.weight"
    ]


def test_topk_plugin_without_topk_attention_is_an_error(tmp_path, small):
    with pytest.raises(ExportError, match="no top-K attention"):
        export_onnx(small("DeepJSCC"), tmp_path / "m.onnx", topk_plugin=True)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_with_delta_file_targets(tmp_path, checkpoint):
    import subprocess
    import sys

    from sdk.checkpoint import load_checkpoint
    from sdk.delta import Delta, DeltaEntry, save_delta
    from sdk.fingerprint import model_fingerprint

    model = load_checkpoint(checkpoint)
    shape = tuple(model.receiver.to_image.weight.shape)
    entry = DeltaEntry(np.array([0, 5], np.int64), np.array([0.1, -0.1], np.float32), shape)
    delta = Delta("hue", model_fingerprint(model), 0.99, {"receiver.to_image.weight": entry})
    path = save_delta(delta, tmp_path / "hue.delta.safetensors")
    out = tmp_path / "rx.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdk.cli",
            "export",
            str(checkpoint),
            "--part",
            "receiver",
            "--delta-targets",
            str(path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "symbols -> outputs recon, logits" in proc.stdout
    names = [v.name for v in onnx.load(str(out)).graph.input]
    assert names == ["symbols", "receiver.to_image.weight"]
