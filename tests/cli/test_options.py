"""Shared option parsing of every ``semedge`` command: negative numbers, help, listing."""

from __future__ import annotations

import argparse

import pytest

from sdk.cli import build_parser, main
from sdk.options import meaningful_default


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("semedge",)):
    """``(path, parser)`` for ``parser`` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


ALL = list(subcommands(build_parser()))


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["eval", "CKPT", "--snr", "-5,0,5"], "snr", "-5,0,5"),
        (["eval", "CKPT", "--snr", "-10"], "snr", "-10"),
        (["eval", "CKPT", "--snr", "-7.5,-2.5"], "snr", "-7.5,-2.5"),
        (["train", "--out", "o", "--snr", "-5,15"], "snr", "-5,15"),
        (
            ["adapt", "zfda", "CKPT", "--domain", "hue", "--out", "d", "--strength", "-.5"],
            "strength",
            -0.5,
        ),
        (["compare", "CKPT", "--atol", "-1e-3"], "atol", -1e-3),
    ],
)
def test_list_and_number_options_take_negative_values(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_options_still_look_like_options():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "CKPT", "--snr", "-x"])


def test_eval_runs_a_negative_snr_list(tiny_checkpoint, capsys):
    assert main(["eval", str(tiny_checkpoint), "--data", "digits", "--snr", "-5,0,5"]) == 0
    table = capsys.readouterr().out
    assert all(f" {snr} " in f" {table} " or f"{snr}" in table for snr in ("-5", "0", "5"))


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_help_shows_every_default_and_no_markup(path, parser):
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text and ":mod:" not in text
    assert "None" not in text
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        default = action.default
        if not meaningful_default(default):
            continue
        line = parser._get_formatter()._expand_help(action)
        assert f"(default: {default}" in line, f"{' '.join(path)} {action.option_strings[0]}"


@pytest.mark.parametrize(
    ("command", "option", "default"),
    [
        ("train", "--epochs", "10"),
        ("train", "--batch-size", "64"),
        ("train", "--lr", "0.001"),
        ("train", "--snr", "0,20"),
        ("train", "--model", "DeepJSCC"),
        ("eval", "--snr", "-5,0,5,10,15,20"),
        ("adapt zfda", "--epochs", "12"),
        ("adapt zfda", "--lr-scores", "1.0"),
        ("adapt zfda", "--lr-values", "0.01"),
    ],
)
def test_help_text_names_the_defaults_users_ask_for(command, option, default, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    options = text[text.index("options:") :]
    entry = options[options.index(option + " ") :]
    assert f"(default: {default})" in entry[: entry.find(" --", 3)]


def test_models_lists_every_readme_name_aligned(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[1:]]
    for wanted in ("DeepJSCC", "GAI", "KEM", "sKEM", "VQ"):
        assert wanted in names
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(starts) == 1, "the class column starts at one place on every line"


def test_skem_name_builds_a_kem_with_etf():
    from sdk.models.registry import build_model

    model = build_model("skem", image_size=16, hidden=8, slots=2, topk=4)
    assert type(model).__name__ == "KEMTransceiver" and model.config["etf"] is True
