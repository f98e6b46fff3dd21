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


def test_int8_artifact_is_held_to_task_drops_not_elementwise(checkpoint, tmp_path):
    from sdk.build import build
    from sdk.runtime.compare import compare_tasks, judged_by_tasks

    art = build(checkpoint, tmp_path / "q", backend="onnxrt", precision="int8", part="receiver")
    rows = compare_backends(art, ["torch", "onnxrt"], atol=1e-5, rtol=1e-5)
    assert {r.inputs for r in rows} == {"random", "real"}  # real: symbols of real images
    assert not any(r.passed for r in rows if r.output == "recon")
    assert judged_by_tasks(art) == "int8" and judged_by_tasks(checkpoint) is None
    tasks = compare_tasks(art, ["torch", "onnxrt"], count=64)
    assert [t.metric for t in tasks] == ["psnr"]  # patches: no labels
    assert abs(tasks[0].drop) <= 0.5 and tasks[0].passed
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "compare", str(art), "--heldout", "64"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "int8 artifact: held to PSNR drop <= 0.5 dB" in proc.stdout
    strict = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdk.cli",
            "compare",
            str(art),
            "--budget-db=-1",
        ],  # int8 cannot gain 1 dB
        capture_output=True,
        text=True,
    )
    assert strict.returncode == 1 and "FAILED (PSNR drop <= -1 dB" in strict.stdout
