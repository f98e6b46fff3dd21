"""The one error family of calibration (a :class:`~sdk.errors.SemedgeError`)."""

from __future__ import annotations

from sdk.errors import SemedgeError


class CalibrationError(SemedgeError):
    """Calibration data that does not fit the model, an unknown method, a failed quantization."""


def first_line(exc: BaseException) -> str:
    """The first line of an untyped third-party error, for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
