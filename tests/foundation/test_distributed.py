"""``semedge train`` under torchrun: 2 CPU processes (gloo); only rank 0 writes and reports."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from sdk.checkpoint import load_checkpoint


def test_torchrun_two_processes_train_and_write_once(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += ["-m", "sdk.cli", "train", "--data", "digits", "--epochs", "2", "--out", str(out)]
    cmd += ["--arg", "hidden=8", "--batch-size", "128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert [row["epoch"] for row in state["history"]] == [1.0, 2.0]
    model = load_checkpoint(out / "checkpoint")
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["weights"][name]), name
