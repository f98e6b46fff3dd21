"""semedge SDK: semantic-communication transceivers from training to the Jetson.

Heavy submodules (torch, onnxruntime, tensorrt) load lazily, so ``import sdk`` and
torch-free parts such as :mod:`sdk.artifact` stay cheap; ``sdk.Runtime`` is the one
entry point for edge applications.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"Runtime": "sdk.runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")
