"""Plugin libraries (the Top-K memory plugin) loaded into TensorRT's registry, checked.

Used by the builder before parsing and by the runner before deserializing a plan: a
library TensorRT refuses is a one-line error, never a parse failure later on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk.errors import SemedgeError


class PluginError(SemedgeError):
    """A plugin library that is missing or that TensorRT refuses to load."""


def load_plugins(trt: Any, libraries: Sequence[str | Path]) -> None:
    """Load plugin libraries into TensorRT's registry; a refused one is a one-line error."""
    registry = trt.get_plugin_registry()
    for library in map(Path, libraries):
        if not library.is_file():
            raise PluginError(f"plugin library {library} is missing; copy the whole artifact")
        if registry.load_library(str(library)) is None:
            raise PluginError(
                f"TensorRT refused plugin library {library} (built for another TensorRT, CUDA "
                "or GPU?); rebuild it on this device: python -m kernels.build --plugin"
            )
