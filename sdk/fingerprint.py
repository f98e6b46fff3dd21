"""Base fingerprint: which exact weights a delta or an update was made for.

SHA-256 over every parameter and buffer, in sorted name order, of
``name \\0 dtype \\0 shape-json \\0 nbytes(8, LE) raw-little-endian-bytes``.
The core works on numpy arrays so runtimes without torch (ONNX Runtime, the device
agent) compute the same value; :func:`model_fingerprint` is the torch adapter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


def fingerprint_arrays(named: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> str:
    """Hex SHA-256 of named arrays (see module docstring for the exact byte layout)."""
    items = dict(named.items() if isinstance(named, Mapping) else named)
    h = hashlib.sha256()
    for name in sorted(items):
        arr = np.ascontiguousarray(items[name])
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        h.update(name.encode())
        h.update(b"\0" + arr.dtype.name.encode() + b"\0")
        h.update(json.dumps(list(arr.shape)).encode() + b"\0")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a torch model's parameters and buffers (state_dict order ignored)."""
    state = model.state_dict(keep_vars=False)
    return fingerprint_arrays((name, t.detach().cpu().numpy()) for name, t in state.items())
