"""Command-line values shared by several ``semedge`` commands.

Kept out of :mod:`sdk.commands` (whose every module is a subcommand) and free of
torch at import time.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from sdk.errors import SemedgeError


class OptionError(SemedgeError):
    """A command-line value that cannot be parsed."""


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
