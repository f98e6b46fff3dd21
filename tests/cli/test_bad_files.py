"""Every command that reads a file, given every kind of broken file: one line, nothing changed.

The matrix is command argument × file kind × what is wrong with the file. Every case
must exit non-zero with exactly one line on stderr that is a real diagnosis (not the
CLI's "internal error" safety net, never a traceback), and leave every file it could see
as it was (hashes of the good inputs and of the case's folder before and after).
Cases run in-process (``sdk.cli.main``); a few run the console entry point in a
subprocess to show that no traceback reaches a real stderr.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdk.cli import main

HOW = ("missing", "directory", "empty", "truncated", "garbage", "wrong kind")
# a good file of another kind, for "wrong kind"
WRONG = {
    "checkpoint": "artifact",
    "artifact": "checkpoint",
    "artifact tar": "delta",
    "delta": "onnx",
    "update": "delta",
    "onnx": "delta",
    "key": "signature",
    "public key": "onnx",
    "signature": "key",
    "data folder": "checkpoint",
}
# where a command takes several kinds, "wrong kind" is one it does not take
WRONG_FOR = {"compare": "delta", "bench": "delta", "Runtime.load": "delta"}
DIRECTORY_KINDS = {"checkpoint", "artifact", "data folder"}

# (argument, file kind, argv); {X} is the broken file, {out} a fresh folder, {name} a good
# input of that kind.
NO_PORT = "{out}/no-such-port"
BENCH = ["--batch", "1", "--warmup", "0", "--duration", "0.01", "--iterations", "1"]
SLOTS = [
    ("eval CKPT", "checkpoint", ["eval", "{X}", "--snr", "10"]),
    ("eval --delta", "delta", ["eval", "{checkpoint}", "--snr", "10", "--delta", "{X}"]),
    ("eval --data", "data folder", ["eval", "{checkpoint}", "--snr", "10", "--data", "{X}"]),
    ("adapt zfda CKPT", "checkpoint",
     ["adapt", "zfda", "{X}", "--domain", "hue", "--epochs", "1", "--limit", "8",
      "--out", "{out}/a.delta.safetensors"]),
    ("adapt zfda --data", "data folder",
     ["adapt", "zfda", "{checkpoint}", "--domain", "hue", "--data", "{X}",
      "--out", "{out}/a.delta.safetensors"]),
    ("export CKPT", "checkpoint", ["export", "{X}", "--out", "{out}/m.onnx"]),
    ("export --delta-targets", "delta",
     ["export", "{checkpoint}", "--part", "receiver", "--delta-targets", "{X}",
      "--out", "{out}/m.onnx"]),
    ("build CKPT", "checkpoint", ["build", "{X}", "--backend", "onnxrt", "--out", "{out}/a"]),
    ("build ONNX", "onnx", ["build", "{X}", "--backend", "onnxrt", "--out", "{out}/a"]),
    ("build --delta-targets", "delta",
     ["build", "{checkpoint}", "--backend", "onnxrt", "--part", "receiver",
      "--delta-targets", "{X}", "--out", "{out}/a"]),
    ("compare CKPT", "checkpoint", ["compare", "{X}"]),
    ("compare ONNX", "onnx", ["compare", "{X}", "--backends", "onnxrt"]),
    ("compare ARTIFACT", "artifact", ["compare", "{X}", "--backends", "onnxrt"]),
    ("compare TAR", "artifact tar", ["compare", "{X}", "--backends", "onnxrt"]),
    ("bench ARTIFACT", "artifact", ["bench", "{X}", *BENCH]),
    ("bench TAR", "artifact tar", ["bench", "{X}", *BENCH]),
    ("bench ONNX", "onnx", ["bench", "{X}", *BENCH]),
    ("delta inspect", "delta", ["delta", "inspect", "{X}"]),
    ("delta inspect --against", "checkpoint", ["delta", "inspect", "{delta}", "--against", "{X}"]),
    ("sign ARTIFACT", "artifact", ["sign", "{X}", "--key", "{key}"]),
    ("sign TAR", "artifact tar", ["sign", "{X}", "--key", "{key}"]),
    ("sign DELTA", "delta", ["sign", "{X}", "--key", "{key}"]),
    ("sign --key", "key", ["sign", "{delta}", "--key", "{X}"]),
    ("flash ARTIFACT", "artifact", ["flash", "{X}", "--port", NO_PORT]),
    ("flash TAR", "artifact tar", ["flash", "{X}", "--port", NO_PORT]),
    ("flash DELTA", "delta", ["flash", "{X}", "--port", NO_PORT]),
    ("flash DELTA.sig", "signature", ["flash", "{signed}", "--port", NO_PORT]),
    ("update inspect", "update", ["update", "inspect", "{X}"]),
    ("update apply PKG", "update", ["update", "apply", "{checkpoint}", "{X}", "--out", "{out}/c"]),
    ("update apply CKPT", "checkpoint", ["update", "apply", "{X}", "{update}", "--out", "{out}/c"]),
    ("eval --update", "update",
     ["eval", "--tx", "{checkpoint}", "--rx", "{checkpoint}", "--update", "{X}", "--snr", "10"]),
    ("sign UPDATE", "update", ["sign", "{X}", "--key", "{key}"]),
    ("flash UPDATE", "update", ["flash", "{X}", "--port", NO_PORT]),
    ("agent --trusted-key", "public key",
     ["agent", "--port", NO_PORT, "--root", "{out}/root", "--trusted-key", "{X}"]),
]  # fmt: skip
CASES = [(slot, kind, argv, how) for slot, kind, argv in SLOTS for how in HOW]


def tree_hash(root: Path) -> dict[str, str]:
    """Every path under ``root``: the SHA-256 of a file, ``dir`` for a directory."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def break_file(
    kinds: dict[str, Path], kind: str, how: str, where: Path, wrong: str | None = None
) -> Path:
    """A broken ``kind`` in ``where``, named like a good one (``wrong``: the kind to use for
    "wrong kind")."""
    good = kinds[kind]
    name = good.name if kind != "data folder" else "images"
    bad = where / name
    other = kinds[wrong or WRONG[kind]]
    garbage = np.random.default_rng(0).bytes(512)
    if how == "missing":
        return where / f"missing-{name}"
    if kind in DIRECTORY_KINDS:
        if how == "directory":  # a file where the folder should be
            bad.write_bytes(garbage)
        elif how == "empty":
            bad.mkdir()
        elif how == "wrong kind":
            shutil.copytree(other, bad) if other.is_dir() else shutil.copy(other, bad)
        else:
            shutil.copytree(good, bad)
            files = sorted(
                (p for p in bad.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
            )
            if how == "truncated":  # the payload, cut in half
                files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size // 2])
            else:  # the description (config.json / manifest.json) overwritten
                files[0].write_bytes(garbage)
        return bad
    if how == "directory":
        bad.mkdir()
    elif how == "empty":
        bad.write_bytes(b"")
    elif how == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif how == "garbage":
        bad.write_bytes(garbage)
    else:
        bad.write_bytes(other.read_bytes() if other.is_file() else garbage)
    return bad


def case_argv(argv: list[str], kinds: dict[str, Path], x: Path, out: Path) -> list[str]:
    names = {k.replace(" ", "_"): v for k, v in kinds.items()}
    return [a.format(X=x, out=out, **names) for a in argv]


@pytest.fixture
def scene(kinds, tmp_path):
    """``(where, good inputs)``: the case's folder, and the good files it may read."""
    where = tmp_path / "case"
    where.mkdir()
    good = dict(kinds)
    signed = where / "signed.delta.safetensors"  # a delta whose .sig is the broken file
    shutil.copy(kinds["delta"], signed)
    good["signed"] = signed
    return where, good


@pytest.mark.parametrize(
    ("slot", "kind", "argv", "how"), CASES, ids=[f"{s} | {h}" for s, _, _, h in CASES]
)
def test_broken_input_is_one_line_and_changes_nothing(slot, kind, argv, how, scene, capsys):
    where, good = scene
    if kind == "signature":
        x = break_file(good, kind, how, where)
        target = Path(f"{good['signed']}.sig")
        if x.exists():
            x.rename(target)
        if how == "missing":
            pytest.skip("an unsigned delta is valid; without a port it fails on the port")
    else:
        x = break_file(good, kind, how, where, WRONG_FOR.get(argv[0]))
    good_root = good["checkpoint"].parent.parent
    before = (tree_hash(where), tree_hash(good_root))
    capsys.readouterr()
    code = main(case_argv(argv, good, x, where / "out"))
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "no-such-port" not in err, "the file is checked before the port is opened"
    assert (tree_hash(where), tree_hash(good_root)) == before


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("kind", ["checkpoint", "onnx", "artifact", "artifact tar"])
def test_runtime_load_refuses_a_broken_source_with_one_line(kinds, kind, how, tmp_path):
    from sdk import Runtime
    from sdk.errors import SemedgeError

    bad = break_file(kinds, kind, how, tmp_path, WRONG_FOR["Runtime.load"])
    with pytest.raises(SemedgeError) as caught:
        Runtime.load(bad).close()
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "{X}", "--backend", "onnxrt", "--out", "{out}/a"],
        ["compare", "{X}", "--backends", "onnxrt"],
        ["flash", "{X}", "--port", NO_PORT],
    ],
)
def test_console_entry_point_prints_no_traceback(kinds, argv, tmp_path):
    """The same, through a real process: nothing but the one line reaches stderr."""
    bad = break_file(kinds, "onnx", "truncated", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", *case_argv(argv, kinds, bad, tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
