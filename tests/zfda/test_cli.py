"""``semedge adapt zfda`` and ``semedge delta inspect``: real runs and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sdk.checkpoint import save_checkpoint
from sdk.cli import main
from sdk.delta import load_delta


@pytest.fixture
def checkpoint(tmp_path):
    from sdk.models import DeepJSCC

    torch.manual_seed(0)
    model = DeepJSCC(in_channels=1, image_size=28, bandwidth_ratio=1 / 6, hidden=8)
    return save_checkpoint(model, tmp_path / "ckpt")


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_adapt_then_inspect(checkpoint, tmp_path, capsys):
    out = tmp_path / "rot.delta.safetensors"
    argv = ["adapt", "zfda", str(checkpoint), "--domain", "rotation", "--data", "mnist"]
    argv += ["--limit", "64", "--epochs", "1", "--batch-size", "32", "--out", str(out)]
    assert main(argv) == 0
    assert "rotation" in capsys.readouterr().out
    delta = load_delta(out)
    assert delta.domain == "rotation" and delta.nnz > 0
    assert main(["delta", "inspect", str(out), "--json", "--against", str(checkpoint)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["compatible_with"] == str(checkpoint)
    assert info["bytes"] == out.stat().st_size and info["nnz"] == delta.nnz
    assert all(name.startswith("receiver.") for name in info["layers"])
    assert main(["delta", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "index encoding gap8" in text and "receiver.to_image.weight" in text
    evaluate = ["eval", str(checkpoint), "--data", "mnist", "--snr", "10", "--domain", "rotation"]
    assert main([*evaluate, "--json"]) == 0
    (plain,) = json.loads(capsys.readouterr().out)
    figures = ["--plot", str(tmp_path / "p.png"), "--examples", str(tmp_path / "e.png")]
    assert main([*evaluate, "--json", "--delta", str(out), *figures]) == 0
    base, adapted = json.loads(capsys.readouterr().out)  # both, labelled
    assert (base["model"], adapted["model"]) == ("DeepJSCC base", "DeepJSCC + rotation delta")
    assert base["psnr"] == plain["psnr"] != adapted["psnr"]  # the delta was applied, then off
    assert (tmp_path / "p.png").is_file() and (tmp_path / "e.png").is_file()


@pytest.mark.parametrize("data", ["mnist", "digits"])
@pytest.mark.parametrize("side", ["decoder", "both"])
def test_adapt_a_classifier_with_its_training_losses(tmp_path, capsys, data, side):
    """The issue's repro: a checkpoint with a classification head, trained with recorded
    loss weights. ZFDA keeps the labels under the shift and uses those weights."""
    from sdk.data import load_dataset
    from sdk.train import build_for_data

    torch.manual_seed(0)
    model = build_for_data("DeepJSCC", {"hidden": 4}, load_dataset(data, "val"))
    weights = {"recon": 1.0, "logits": 0.0, "mask_logits": 1.0, "aux": 1.0}
    train = {"data": data, "loss_weights": weights}
    checkpoint = save_checkpoint(model, tmp_path / "ckpt", extra={"train": train})
    out = tmp_path / "rot.delta.safetensors"
    argv = ["adapt", "zfda", str(checkpoint), "--domain", "rotation", "--side", side]
    argv += ["--limit", "32", "--epochs", "1", "--sparsity", "0.1", "--out", str(out)]

    def first_loss() -> float:
        assert main(argv) == 0
        return float(capsys.readouterr().out.split("loss ")[-1].split(" ->")[0])

    assert first_loss() < 0.5  # the pixel MSE alone: logits weighted 0 as in training
    train["loss_weights"] = {**weights, "logits": 1.0}
    save_checkpoint(model, tmp_path / "ckpt", extra={"train": train})
    assert first_loss() > 1.0  # plus the cross-entropy of an untrained classifier
    assert "receiver.classifier.2.weight" in load_delta(out).entries


def test_wrong_base_is_one_line(checkpoint, tmp_path, capsys):
    from sdk.models import DeepJSCC

    out = tmp_path / "rot.delta.safetensors"
    argv = ["adapt", "zfda", str(checkpoint), "--domain", "rotation", "--data", "mnist"]
    assert main([*argv, "--limit", "32", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    torch.manual_seed(1)
    other = save_checkpoint(
        DeepJSCC(in_channels=1, image_size=28, bandwidth_ratio=1 / 6, hidden=8), tmp_path / "o"
    )
    err = one_line_error(capsys, ["delta", "inspect", str(out), "--against", str(other)])
    assert "was made for base" in err and "semedge adapt zfda" in err
    err = one_line_error(capsys, ["eval", str(other), "--data", "mnist", "--delta", str(out)])
    assert "was made for base" in err


def test_bad_settings_are_one_line(checkpoint, tmp_path, capsys):
    base = ["adapt", "zfda", str(checkpoint), "--data", "mnist", "--out", str(tmp_path / "x")]
    assert "sparsity" in one_line_error(
        capsys, [*base, "--domain", "rotation", "--sparsity", "0.5"]
    )
    assert "unknown domain" in one_line_error(capsys, [*base, "--domain", "fog"])
    assert "--limit" in one_line_error(capsys, [*base, "--domain", "rotation", "--limit", "0"])
    err = one_line_error(capsys, [*base[:4], "patches", *base[5:], "--domain", "hue"])
    assert "expects 1x28x28 images" in err
    assert not (tmp_path / "x").exists()


def test_corrupt_delta_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "bad.delta.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    result = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "delta", "inspect", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "truncated or corrupt" in result.stderr


def test_study_options_reach_the_delta(checkpoint, tmp_path, capsys):
    out = tmp_path / "c.delta.safetensors"
    argv = ["adapt", "zfda", str(checkpoint), "--domain", "contrast", "--data", "mnist"]
    argv += ["--limit", "32", "--epochs", "1", "--out", str(out), "--score-init", "weight"]
    argv += ["--budget-rule", "size", "--mask-update", "fixed", "--values-optimizer", "sgd"]
    assert main(argv) == 0
    extra = load_delta(out).extra
    assert (extra["score_init"], extra["budget_rule"]) == ("weight", "size")
    assert (extra["mask_update"], extra["values_optimizer"]) == ("fixed", "sgd")
    capsys.readouterr()
    err = one_line_error(capsys, [*argv[:-8], "--mask-period", "0"])
    assert "mask_period" in err


def test_help_shows_the_defaults():
    from sdk.adapt.zfda import ZFDAConfig

    text = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "adapt", "zfda", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    d = ZFDAConfig()
    for flag, default in [
        ("--score-init", d.score_init),
        ("--budget-rule", d.budget_rule),
        ("--mask-update", d.mask_update),
        ("--values-optimizer", d.values_optimizer),
    ]:
        assert flag in text and f"(default: {default})" in " ".join(text.split())


def test_cli_defaults_and_choices_are_the_configs():
    import argparse

    from sdk.adapt import zfda
    from sdk.commands.adapt import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["adapt"]  # type: ignore[union-attr]
    z = sub._subparsers._group_actions[0].choices["zfda"]  # type: ignore[union-attr]
    actions = {a.dest: a for a in z._actions}
    config = zfda.ZFDAConfig()
    for dest in (
        "sparsity",
        "side",
        "epochs",
        "batch_size",
        "lr_scores",
        "lr_values",
        "value_dtype",
        "seed",
        "score_init",
        "budget_rule",
        "mask_update",
        "mask_period",
        "values_optimizer",
    ):
        assert actions[dest].default == getattr(config, dest), dest
    assert tuple(actions["score_init"].choices) == zfda.SCORE_INITS
    assert tuple(actions["budget_rule"].choices) == zfda.BUDGET_RULES
    assert tuple(actions["mask_update"].choices) == zfda.MASK_UPDATES
    assert tuple(actions["values_optimizer"].choices) == zfda.VALUE_OPTIMIZERS
