"""Calibration: symmetric Q/DQ, exclusions, accuracy within the reported bounds, cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from calibration.calibrate import calibrate
from calibration.qdq import QUANTIZED_OPS, zero_points


def _graph(path):
    model = onnx.load(str(path))
    del model.metadata_props[:]
    return model.SerializeToString()


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_every_zero_point_is_zero(method, receiver_onnx, settings, tmp_path):
    out = calibrate(receiver_onnx, tmp_path / "q.onnx", settings(method=method), show=False).path
    points = zero_points(onnx.load(str(out)))
    assert len(points) > 10  # Q/DQ pairs were inserted
    assert all(np.all(zp == 0) for zp in points.values())


def test_excluded_layers_have_no_qdq(receiver_onnx, settings, tmp_path):
    result = calibrate(
        receiver_onnx, tmp_path / "q.onnx", settings(exclude=("*features.1*",)), show=False
    )
    model = onnx.load(str(result.path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    layers = {n.name: n for n in model.graph.node if n.op_type in QUANTIZED_OPS}
    assert any("features.1" in n for n in result.excluded)
    for name in result.excluded:
        assert all(producer.get(i) != "DequantizeLinear" for i in layers[name].input), name
    quantized = [n for n in layers if n not in result.excluded]
    assert quantized and all(
        producer.get(layers[n].input[1]) == "DequantizeLinear" for n in quantized
    )


def test_int8_stays_within_the_reported_bounds(receiver_onnx, settings, tmp_path):
    from calibration.inputs import model_data, task_metrics
    from calibration.sensitivity import run_model
    from sdk.onnx_io import read_metadata

    path = tmp_path / "q.onnx"
    result = calibrate(receiver_onnx, path, settings(budget_db=0.5, keep_heads=False), show=False)
    assert len(result.layers) == 6 and all("psnr" in d for d in result.layers.values())
    assert result.fp32["psnr"] - result.int8["psnr"] <= 0.5
    meta = read_metadata(receiver_onnx)
    dims = onnx.load(str(receiver_onnx)).graph.input[0].type.tensor_type.shape.dim
    data = model_data(meta, "symbols", tuple(d.dim_value for d in dims[1:]), None, 64, "test")
    fp32, q = run_model(receiver_onnx, data), run_model(path, data)
    drop = task_metrics(data, fp32)["psnr"] - task_metrics(data, q)["psnr"]
    assert abs(drop) <= 0.5  # unseen test split, same bound
    assert np.abs(q["recon"] - fp32["recon"]).max() < 0.05  # images in [0, 1]


def test_sensitivity_stops_within_budget_or_with_every_layer_float(
    receiver_onnx, settings, tmp_path
):
    from calibration.sensitivity import Budget

    path = tmp_path / "q.onnx"
    tight = settings(budget_db=1e-4, keep_heads=False, heldout=16)
    result = calibrate(receiver_onnx, path, tight, show=False)
    model = onnx.load(str(path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    drops = {k: result.fp32[k] - result.int8[k] for k in result.fp32}
    within = Budget(1e-4).ratio(drops) <= 1
    assert within or sorted(result.excluded) == sorted(n.name for n in layers)
    for node in layers:  # the graph is what the record says
        quantized = producer.get(node.input[1]) == "DequantizeLinear"
        assert quantized == (node.name not in result.excluded), node.name


def test_calibration_is_deterministic(receiver_onnx, settings, tmp_path, monkeypatch):
    outs = []
    for run in ("a", "b"):
        monkeypatch.setenv("SEMEDGE_CACHE", str(tmp_path / run))  # both compute afresh
        result = calibrate(receiver_onnx, tmp_path / f"{run}.onnx", settings(), show=False)
        assert not result.cache_hit
        outs.append((_graph(result.path), result.cache_key))
    assert outs[0] == outs[1]


def test_a_cache_hit_skips_calibration(receiver_onnx, settings, tmp_path, monkeypatch):
    import calibration.calibrate as module

    first = calibrate(receiver_onnx, tmp_path / "a.onnx", settings(method="minmax"), show=False)

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration data was read on a cache hit")

    monkeypatch.setattr(module, "batch_reader", no_calibration)
    again = calibrate(receiver_onnx, tmp_path / "b.onnx", settings(method="minmax"), show=False)
    assert again.cache_hit and again.cache_key == first.cache_key
    assert _graph(again.path) == _graph(first.path)
    other = settings(method="minmax", samples=31)  # different data -> a different key
    with pytest.raises(AssertionError, match="cache hit"):
        calibrate(receiver_onnx, tmp_path / "c.onnx", other, show=False)


def test_cli_calibrate_and_build_int8(receiver_onnx, ckpt, tmp_path, capsys):
    from sdk import artifact
    from sdk.cli import main

    out = tmp_path / "rx.int8.onnx"
    argv = ["calibrate", str(receiver_onnx), "--out", str(out), "--samples", "16"]
    plot = ["--plot", str(tmp_path / "layers.png")]
    assert (
        main([*argv, "--method", "percentile", "--budget-db", "0.5", "--heldout", "16", *plot]) == 0
    )
    assert (tmp_path / "layers.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert f"wrote {out}: int8 percentile" in printed and "psnr: fp32" in printed
    assert zero_points(onnx.load(str(out)))
    build = ["build", str(ckpt), "--backend", "onnxrt", "--part", "receiver", "--precision"]
    int8 = ["int8", "--calib-samples", "16", "--calib-method", "minmax"]
    assert main([*build, *int8, "--out", str(tmp_path / "a")]) == 0
    assert "ConvTranspose layer(s) have no int8 kernel" in capsys.readouterr().err
    manifest = artifact.read_manifest(tmp_path / "a")
    assert manifest["precision"] == "int8" and manifest["calibration"]["method"] == "minmax"
    assert len(manifest["calibration"]["cache_key"]) == 64
