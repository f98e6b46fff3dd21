"""``semedge bench`` on a real ONNX Runtime artifact: percentiles, throughput, memory, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdk.bench import BenchError, bench, check_batches, parse_batches, summarize
from sdk.cli import main


def test_bench_reports_every_batch_size(onnx_artifact):
    report = bench(onnx_artifact, [2, 1], warmup_s=0.0, duration_s=0.02, min_iterations=5)
    assert (report["backend"], report["precision"]) == ("onnxrt", "fp32")
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["iterations"] >= 5
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["samples_per_s"] == pytest.approx(row["batch"] * row["inferences_per_s"])
    assert report["peak_rss_mb"] > 10 and report["device_memory_mb"] is None


def test_summary_percentiles_and_throughput():
    row = summarize(4, np.array([1.0, 2.0, 3.0, 4.0]))
    assert (row["p50_ms"], row["min_ms"], row["max_ms"], row["iterations"]) == (2.5, 1, 4, 4)
    assert row["inferences_per_s"] == pytest.approx(400.0)
    assert row["samples_per_s"] == pytest.approx(1600.0)


def test_cli_json_and_plot(onnx_artifact, capsys, tmp_path):
    png = tmp_path / "bench.png"
    args = ["--batch", "1,3", "--duration", "0.01", "--json", "--plot", str(png)]
    assert main(["bench", str(onnx_artifact), *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in report["results"]] == [1, 3]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ["", "0", "1,x", "-2", "1,,4"])
def test_bad_batch_sizes_are_one_line(text):
    with pytest.raises(BenchError, match="batch sizes >= 1"):
        parse_batches(text)


def test_batches_over_a_plans_maximum_are_refused_before_loading():
    check_batches({"target": {"max_batch": 8}}, [1, 8])
    with pytest.raises(BenchError, match="batch 16 exceeds the plan's maximum 8"):
        check_batches({"target": {"max_batch": 8}}, [1, 16])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "0"], "--duration > 0"),
        (["--iterations", "0"], "--iterations >= 1"),
        (["--batch", "a"], "batch sizes >= 1"),
    ],
)
def test_cli_bad_settings_are_one_line_errors(onnx_artifact, capsys, args, message):
    assert main(["bench", str(onnx_artifact), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_missing_artifact_is_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
