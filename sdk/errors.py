"""One error hierarchy for everything a user can get wrong.

Every :class:`SemedgeError` carries a single line that says what is wrong and what
to do; the CLI prints it (no traceback) and exits non-zero. Subsystems subclass it
(``DeltaError``, ``ArtifactError``, ...) so callers can catch one family.
"""

from __future__ import annotations

import importlib
from typing import Any


class SemedgeError(Exception):
    """A user-facing failure: one line, what is wrong and what to do."""

    exit_code = 2


class MissingDependencyError(SemedgeError):
    """An optional package (tensorrt, pycuda, a data package) is not installed."""


class UnknownModelError(SemedgeError):
    """A model name that is not in the registry."""


class CheckpointError(SemedgeError):
    """A checkpoint directory that is missing, incomplete or inconsistent."""


class BuildError(SemedgeError):
    """A model that cannot be built into an artifact (``sdk.build`` and the backends' builders)."""


class ChannelError(SemedgeError):
    """An invalid channel parameter (SNR out of range, flip probability outside [0, 0.5])."""


def missing(package: str, purpose: str, install: str) -> MissingDependencyError:
    """Build the standard error for an optional import that failed."""
    return MissingDependencyError(f"{package} is not installed, needed for {purpose}: {install}")


INSTALL = {
    "tensorrt": "use JetPack's python3-libnvinfer",
    "pycuda": "pip install 'semedge[jetson]'",
    "onnxruntime": "pip install onnxruntime",
}
"""How to get each optional package a backend imports lazily."""


def lazy_import(module: str, purpose: str) -> Any:
    """``module`` imported at first use; if it is absent, the one-line error for ``purpose``.

    The one way backends reach optional packages (``tensorrt``, ``pycuda.driver``,
    ``onnxruntime``), so ``import sdk`` never needs them and the message is uniform.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise missing(package, purpose, INSTALL.get(package, f"pip install {package}")) from None
