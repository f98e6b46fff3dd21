"""``semedge train / eval`` end to end, and their one-line errors (quickstart: tests/demo)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sdk.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--model", "deepjscc", "--data", "digits", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--arg", "hidden=8", "--batch-size", "256", "--snr", "5,15"]) == 0
    return out


def test_train_then_eval_with_plot_and_json(trained, tmp_path, capsys):
    capsys.readouterr()
    png, shown = tmp_path / "sweep.png", tmp_path / "shown.png"
    ck = str(trained / "checkpoint")
    figures = ["--plot", str(png), "--examples", str(shown)]
    assert main(["eval", ck, "--data", "digits", "--snr", "0,10", *figures]) == 0
    table = capsys.readouterr().out
    assert "PSNR dB" in table and "acc %" in table and table.count("DeepJSCC") == 2
    assert png.read_bytes()[:4] == b"\x89PNG" and shown.read_bytes()[:4] == b"\x89PNG"
    # the --out folder, and the dataset it was trained on by default
    assert main(["eval", str(trained), "--snr", "10"]) == 0
    assert "DeepJSCC" in capsys.readouterr().out
    shifted = ["eval", ck, "--data", "digits", "--snr", "10", "--domain", "rotation"]
    assert main([*shifted, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["domain"] == "rotation" and 0 <= rows[0]["accuracy"] <= 1
    assert set(rows[0]) == {"model", "snr_db", "psnr", "ssim", "accuracy", "domain"}


def test_resume_flag_extends_a_run(trained, capsys):
    base = ["train", "--data", "digits", "--out", str(trained), "--arg", "hidden=8"]
    base += ["--batch-size", "256", "--snr", "5,15"]
    assert main([*base, "--epochs", "2"]) == 2  # refuses to overwrite without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "epoch" and lines[2].split()[0] == "2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "cifar", "--out", "{tmp}"], "unknown dataset 'cifar'"),
        (["train", "--model", "NoNet", "--data", "digits", "--out", "{tmp}"], "unknown model"),
        (["train", "--data", "digits", "--snr", "0,100", "--out", "{tmp}"], "outside"),
        (["train", "--data", "digits", "--arg", "hidden", "--out", "{tmp}"], "KEY=VALUE"),
        (["eval", "{tmp}", "--data", "digits"], "not a checkpoint"),
        (["eval", "{ck}", "--data", "digits", "--snr", "1000"], "not linear"),
        (["eval", "{ck}", "--data", "digits", "--domain", "fog"], "unknown domain"),
        (["eval", "{ck}", "--data", "mnist"], "expects 1x16x16 images"),
        (["train", "--data", "digits", "--epochs", "0", "--out", "{tmp}"], "epochs >= 1"),
        (["train", "--data", "digits", "--out", "/proc/semedge/run"], "cannot create the output"),
        (["adapt", "zfda", "{ck}", "--domain", "fog", "--out", "{tmp}/d"], "unknown domain 'fog'"),
        (["keygen", "--out", "/proc/semedge/key"], "check the path, its permissions"),
    ],
)
def test_bad_input_is_one_line(argv, message, trained, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, ck=trained / "checkpoint") for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_entry_point_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "eval", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("semedge eval: error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
