"""A full disk at every writer: the old file survives, no temporary stays, one line.

Each case runs the real command in a subprocess whose file-size limit (RLIMIT_FSIZE)
is below the size of what it writes, so the write fails half way as on a full disk
(Python ignores SIGXFSZ, so the write raises EFBIG instead of killing the process).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")  # POSIX only

# One process runs every case (torch is imported once): the soft file-size limit is set
# before each command and lifted after it; each command's stderr is captured apart.
DRIVER = """
import contextlib, io, json, resource, sys, traceback
from sdk.cli import main
results = {}
for case, limit, argv in json.load(open(sys.argv[1])):
    err = io.StringIO()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:  # escaped the CLI: recorded as the traceback a user would see
            code = "crashed"
            traceback.print_exc()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    results[case] = {"code": code, "stderr": err.getvalue()}
json.dump(results, open(sys.argv[2], "w"))
"""

# (case, argv, target the command (re)writes, limit in bytes or the kind whose good
# file's size halved is the limit); {k} are good inputs, {target} the output
CASES = [
    ("export", ["export", "{checkpoint}", "--part", "receiver", "--out", "{target}"],
     "m.onnx", "onnx"),
    ("adapt zfda", ["adapt", "zfda", "{checkpoint}", "--domain", "rotation", "--epochs", "1",
     "--limit", "16", "--sparsity", "0.1", "--side", "encoder", "--out", "{target}"],
     "a.delta.safetensors", 2000),
    ("build", ["build", "{checkpoint}", "--backend", "onnxrt", "--part", "receiver",
     "--out", "{target}"], "artifact", "onnx"),
    ("build --tar", ["build", "{checkpoint}", "--backend", "onnxrt", "--part", "receiver",
     "--out", "{target_stem}", "--tar"], "artifact.tar", "artifact tar"),
    ("eval --plot", ["eval", "{checkpoint}", "--snr", "10", "--plot", "{target}"],
     "sweep.png", 2000),
    ("eval --examples", ["eval", "{checkpoint}", "--snr", "10", "--examples", "{target}"],
     "shown.png", 2000),
    ("sign delta", ["sign", "{delta_copy}", "--key", "{key}"], "d.delta.safetensors.sig", 32),
    ("sign tar", ["sign", "{target}", "--key", "{key}"], "artifact.tar", "artifact tar"),
    ("keygen", ["keygen", "--out", "{target_stem}"], "fleet.key", 40),
    ("train", ["train", "--data", "digits", "--epochs", "1", "--arg", "hidden=8",
     "--batch-size", "512", "--out", "{target}"], "run", "checkpoint weights"),
]  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def old_version(kinds: dict[str, Path], target: Path) -> None:
    """Put a previous good version at ``target`` (the thing the failed write must keep)."""
    if target.name == "artifact":
        shutil.copytree(kinds["artifact"], target)
    elif target.name == "artifact.tar":
        shutil.copy(kinds["artifact tar"], target)
    elif target.suffix == ".sig":
        shutil.copy(kinds["signature"], target)
    elif target.name != "fleet.key" and target.name != "run":
        target.write_bytes(b"the previous version\n")


@pytest.fixture(scope="module")
def runs(kinds, tmp_path_factory):
    """``case -> (folder, target, snapshot before, {"code", "stderr"})`` of every case."""
    import json

    from matplotlib import font_manager  # noqa: F401  # its cache exists before the limit

    sizes = {k: v.stat().st_size for k, v in kinds.items() if v.is_file()}
    sizes["checkpoint weights"] = (kinds["checkpoint"] / "model.safetensors").stat().st_size
    names = {k.replace(" ", "_"): v for k, v in kinds.items()}
    plan, cases = [], {}
    for case, argv, name, limit in CASES:
        folder = tmp_path_factory.mktemp("disk")
        target = folder / name
        delta_copy = folder / "d.delta.safetensors"
        shutil.copy(kinds["delta"], delta_copy)
        old_version(kinds, target)
        stem = folder / name.removesuffix(".tar").removesuffix(".key")
        argv = [a.format(target=target, target_stem=stem, delta_copy=delta_copy, **names)
                for a in argv]  # fmt: skip
        limit = limit if isinstance(limit, int) else sizes[limit] // 2
        plan.append((case, limit, argv))
        cases[case] = (folder, target, snapshot(folder))
    work = tmp_path_factory.mktemp("driver")
    (work / "plan.json").write_text(json.dumps(plan, default=str))
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(work / "plan.json"), str(work / "results.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "nothing reached the real stderr outside the commands"
    results = json.loads((work / "results.json").read_text())
    return {case: (*cases[case], results[case]) for case in cases}


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(case, runs):
    folder, target, before, result = runs[case]
    err = result["stderr"]
    progress = ("it/s", "s/it")  # tqdm bars of train/adapt, written before the failure
    lines = [ln for ln in err.splitlines() if ln.strip() and not any(p in ln for p in progress)]
    assert result["code"] != 0, f"{case} wrote everything under its size limit"
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(lines) == 1 and "cannot write" in lines[0], err
    after = snapshot(folder)
    if case == "train":  # nothing was there before; the half-written run must not be
        assert not (target / "train_state.pt").exists()
        assert not [n for n in after if ".tmp" in n or Path(n).name.startswith(".")], after
    else:
        assert after == before, f"{case}: the old version changed or a temporary stayed"
