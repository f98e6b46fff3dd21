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

from sdk.errors import SemedgeError

META_PREFIX = "semedge."


class OnnxFileError(SemedgeError):
    """A path that is not a readable ONNX model."""


def load_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """The model in ``path``, or one :class:`OnnxFileError` line saying why it is not one.

    Protobuf parses many byte strings without complaint, so a model without a graph or an
    opset counts as unreadable too.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise OnnxFileError(f"{path} {what}; give an .onnx file from: semedge export CKPT")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf's DecodeError, onnx's own errors, OSError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise OnnxFileError(
            f"{path} is not a readable ONNX model ({reason}); export it again: semedge export CKPT"
        ) from None
    if not model.graph.node or not model.opset_import:
        raise OnnxFileError(
            f"{path} holds no ONNX graph (empty, truncated or another kind of file); export it "
            "again: semedge export CKPT"
        )
    return model


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
        model = load_onnx(model, load_external_data=False)
    out = {}
    for prop in model.metadata_props:
        if prop.key.startswith(META_PREFIX):
            out[prop.key[len(META_PREFIX) :]] = json.loads(prop.value)
    return out


__all__ = [
    "META_PREFIX",
    "OnnxFileError",
    "io_specs",
    "load_onnx",
    "read_metadata",
    "tensor_specs",
]
