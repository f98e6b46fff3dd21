"""Command-line values shared by several ``semedge`` commands.

Kept out of :mod:`sdk.commands` (whose every module is a subcommand) and free of
torch at import time.
"""

from __future__ import annotations

import argparse
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from sdk.errors import SemedgeError


class OptionError(SemedgeError):
    """A command-line value that cannot be parsed."""


_RST_MARKUP = re.compile(r"``(.+?)``|:[a-z]+:`(.+?)`")
_NUMBER = r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_NEGATIVE_NUMBERS = re.compile(rf"^-{_NUMBER}(,(-?{_NUMBER})?)*$")  # -5 | -0.5 | -5,0,5


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends in ``(default: X)`` where X means something (not None,
    False or an empty list), and reStructuredText markup from docstrings (double
    backquotes, ``:class:`` roles) reads as plain `x`."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        given = "%(default)" in text or "(default:" in text
        if meaningful_default(action.default) and action.option_strings and not given:
            text = f"{text} (default: %(default)s)".strip()
        return text or None

    def _format_text(self, text: str) -> str:
        plain = _RST_MARKUP.sub(lambda m: f"`{m.group(1) or m.group(2)}`", text)
        return super()._format_text(plain)


def meaningful_default(default: Any) -> bool:
    """Whether help should show ``default`` (None, False and [] mean "not given")."""
    return not (
        default is None or default is False or default == [] or default == argparse.SUPPRESS
    )


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks (a module docstring)."""


class Parser(argparse.ArgumentParser):
    """The parser of ``semedge`` and of every subcommand (``add_parser`` reuses this class).

    * A value that starts with a minus and is a number or a comma-separated list of numbers
      (``--snr -5,0,5``, ``--strength -0.5``, ``1e-3``) is a value, not an option:
      argparse alone only accepts a single plain negative number.
    * Help shows every meaningful default (:class:`HelpFormatter`).
    * A usage mistake is one line on stderr, like every other error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBERS

    def error(self, message: str) -> NoReturn:
        """A usage mistake is one line too, pointing at the help (not the whole usage)."""
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def check_figure_path(path: str | None) -> None:
    """Refuse a figure file name matplotlib cannot write, before any work is done."""
    if path is None:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise OptionError(
            f"cannot write a figure to {path}: name it .png (or {', '.join(sorted(formats))})"
        )


def whole_number(text: str) -> int:
    """An ``int`` option that cannot be negative (counts: attempts, steps)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def parse_snrs(text: str) -> list[float]:
    """``"-5,0,5"`` -> ``[-5.0, 0.0, 5.0]`` (dB), range-checked like the channels do."""
    from sdk.models.channels import check_snr

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"SNRs must be comma-separated numbers in dB, got {text!r}") from None
    if not values:
        raise OptionError("give at least one SNR in dB, e.g. --snr 0,10,20")
    for v in values:
        check_snr(v)
    return values


def parse_value(text: str) -> Any:
    """A JSON value (``32``, ``true``, ``"x"``), a fraction (``1/12``) or a bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return text


def parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """``["hidden=32", "gdn=true"]`` -> ``{"hidden": 32, "gdn": True}``."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionError(f"{flag} takes KEY=VALUE, got {item!r}")
        pairs[key.strip()] = parse_value(value.strip())
    return pairs
