"""semedge compare: agreement is reported as PASS, a real divergence as FAIL."""

from __future__ import annotations

import subprocess
import sys

from sdk.runtime.compare import compare_backends, format_rows


def test_torch_and_onnxrt_agree(checkpoint):
    rows = compare_backends(checkpoint, ["torch", "onnxrt"])
    assert {(r.inputs, r.output) for r in rows} == {
        (k, o) for k in ("random", "real") for o in ("recon", "logits")
    }
    assert all(r.passed and r.max_abs < 1e-5 for r in rows)
    assert "PASS" in format_rows(rows, "torch")


def test_int8_artifact_fails_a_strict_tolerance(checkpoint, tmp_path):
    from sdk.build import build

    art = build(checkpoint, tmp_path / "q", backend="onnxrt", precision="int8", part="receiver")
    rows = compare_backends(art, ["torch", "onnxrt"], atol=1e-5, rtol=1e-5)
    assert {r.inputs for r in rows} == {"random", "real"}  # real: symbols of real images
    assert not any(r.passed for r in rows if r.output == "recon")
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "compare", str(art), "--atol", "1e-5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "FAIL" in proc.stdout
