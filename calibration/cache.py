"""Calibration range cache keyed by (model hash, data hash, method, settings).

Collecting activation ranges is the slow part of calibration (one run over every
sample with every intermediate tensor as an output); quantizing with known ranges is
a graph rewrite. ONNX Runtime's ``quantize_static`` reads and writes such ranges as a
JSON file (``calibration_cache_path``); semedge names that file by the SHA-256 of
everything that determines it, so a hit is always valid and a change in any input is
always a miss. The key goes into the artifact manifest (``calibration.cache_key``) so
an artifact says which calibration made it.

Location: ``$SEMEDGE_CACHE/calibration`` or ``~/.cache/semedge/calibration``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdk.files import write_bytes


def cache_dir() -> Path:
    """Where calibration ranges are kept (created on first use)."""
    root = os.environ.get("SEMEDGE_CACHE") or Path.home() / ".cache" / "semedge"
    return Path(root) / "calibration"


def data_hash(samples: np.ndarray) -> str:
    """SHA-256 of the samples' shape, dtype and bytes."""
    h = hashlib.sha256(f"{samples.shape}|{samples.dtype}".encode())
    h.update(np.ascontiguousarray(samples).tobytes())
    return h.hexdigest()


def cache_key(
    model_bytes: bytes, samples: np.ndarray, method: str, settings: dict[str, Any]
) -> str:
    """The key of a calibration: SHA-256 over model, data, method and settings."""
    fields = {
        "model": hashlib.sha256(model_bytes).hexdigest(),
        "data": data_hash(samples),
        "method": method,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def ranges_path(key: str) -> Path:
    """The range file for ``key`` (it may not exist yet)."""
    return cache_dir() / f"{key}.json"


def store(computed: Path, key: str) -> Path:
    """Move a freshly computed range file into the cache atomically."""
    return write_bytes(ranges_path(key), computed.read_bytes())
