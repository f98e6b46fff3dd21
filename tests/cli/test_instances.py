"""The bad inputs a new user actually hit (issue 10), each a specific one-line error."""

from __future__ import annotations

import shutil

import pytest

from sdk.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["adapt", "zfda", "{ck}", "--domain", "hue", "--data", "patches", "--epochs", "1",
          "--limit", "8", "--out", "{tmp}/d.delta.safetensors"], "expects 1x16x16 images"),
        (["eval", "{ck}", "--snr", "10", "--plot", "{tmp}/x.xyz"], "name it .png"),
        (["eval", "{ck}", "--snr", "10", "--examples", "{tmp}/x"], "name it .png"),
        (["bench", "{art}", "--plot", "{tmp}/x.xyz"], "name it .png"),
        (["train", "--data", "digits", "--arg", "hidden=-5", "--out", "{tmp}/r"],
         "cannot build DeepJSCC"),
        (["export", "{ck}", "--opset", "99", "--out", "{tmp}/m.onnx"], "opset 99 is not supported"),
        (["export", "{ck}", "--opset", "16", "--out", "{tmp}/m.onnx"], "opset 16 is not supported"),
        (["flash", "{tmp}/renamed.safetensors", "--port", "{tmp}/no-port"], "is a delta file"),
        (["eval"], "give a CHECKPOINT, or a pairing with --tx CKPT --rx CKPT"),
        (["train", "--epochs", "many", "--out", "{tmp}/r"], "invalid int value"),
    ],
)  # fmt: skip
def test_reported_bad_input_is_one_specific_line(argv, message, kinds, tmp_path, capsys):
    shutil.copy(kinds["delta"], tmp_path / "renamed.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(ck=kinds["checkpoint"], art=kinds["artifact"], tmp=tmp_path) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    assert code != 0
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.out == "", "refused before any work (no table, no graph dump)"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
