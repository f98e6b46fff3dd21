"""Torch-free facts about an exported ONNX file: I/O specs and semedge metadata.

Used by the runtime on devices that have ONNX Runtime but no torch, and by
:mod:`sdk.export` when writing the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

META_PREFIX = "semedge."


def tensor_specs(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    """``[{"name", "shape" (-1 = dynamic), "dtype"}]`` for ONNX value infos."""
    specs = []
    for v in values:
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        specs.append({"name": v.name, "shape": shape, "dtype": dtype})
    return specs


def io_specs(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Data inputs (weight inputs excluded) and outputs of an exported model."""
    weights = set(read_metadata(model).get("delta_targets", []))
    inputs = [v for v in model.graph.input if v.name not in weights]
    return tensor_specs(inputs), tensor_specs(model.graph.output)


def read_metadata(model: onnx.ModelProto | str | Path) -> dict[str, Any]:
    """The ``semedge.*`` metadata of an exported model (JSON values decoded)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    out = {}
    for prop in model.metadata_props:
        if prop.key.startswith(META_PREFIX):
            out[prop.key[len(META_PREFIX) :]] = json.loads(prop.value)
    return out


__all__ = ["META_PREFIX", "io_specs", "read_metadata", "tensor_specs"]
