"""Weight changes — ZFDA deltas and SLF updates: file formats, validation, bit-exact switching.

Both kinds are "a named weight change with a saved base" for one exact base model
(named by its fingerprint): a *delta* is a set of sparse additive modifications
``w[i] = w0[i] + v[i]`` (ZFDA), an *update* replaces whole tensors with new values
(SLF's unfrozen decoder layers). Both share one validation path, one apply/restore
core and one set of verbs. Layers:

* :class:`Delta` / :func:`load_delta` / :func:`save_delta` — the ``*.delta.safetensors``
  file (layout in ``docs/formats.md``). Loading validates *everything* (format,
  checksum, dtypes, index order and range, finite values) and raises a specific
  :class:`DeltaError` subclass with a one-line message.
* :class:`Update` / :func:`load_update` / :func:`save_update` — the
  ``*.update.safetensors`` package, validated the same way; :func:`load_change` reads
  either kind.
* :class:`DeltaCore` — engine-agnostic apply/restore over numpy weight buffers that
  share memory with an engine (torch, ONNX Runtime, TensorRT refit arrays). A change is
  *prepared* once (checked against the engine's names, shapes and fingerprint; indices
  turned into global offsets into one flat buffer, whole tensors into contiguous
  ranges); activating a delta is one gather, one add and one scatter per flat buffer,
  an update one copy per contiguous range, and deactivating writes the saved base
  values back — so restoring is bit-exact by construction (never ``w + d - d``). One
  delta and one update can be active together when they change different tensors.
* :class:`Adapters` — the PEFT-like verbs over a core: ``load``, ``activate`` (set),
  ``deactivate``, ``disabled()`` (context manager), ``list``, ``unload``, ``inspect``;
  :class:`TorchDeltas` adds ``merge`` (bake into a checkpoint) on a live torch model and
  makes every parameter a view into one contiguous tensor per dtype so the core's fast
  path applies. ``sdk.Runtime`` exposes the same verbs on every backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sdk.errors import SemedgeError
from sdk.files import atomic_file

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "semedge.delta"
FORMAT_VERSION = 1
KIND = "zfda"
INDEX_ENCODINGS = ("int32", "gap8")
"""``int32``: absolute indices (always readable). ``gap8``: uint8 gaps + uint32 escapes."""
VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
SUFFIX = ".delta.safetensors"
UPDATE_FORMAT = "semedge.update"
UPDATE_FORMAT_VERSION = 1
UPDATE_KIND = "slf"
UPDATE_SUFFIX = ".update.safetensors"
FREEZE_SIDES = ("output", "input")
_MAX_INT32 = 2**31 - 1
_REQUIRED_METADATA = ("format", "format_version", "kind", "base_fingerprint", "domain")


class DeltaError(SemedgeError):
    """A delta that cannot be read or applied; nothing was changed."""


class DeltaFileError(DeltaError):
    """The file is missing, truncated, corrupt, or its tensors do not match its metadata."""


class DeltaFormatError(DeltaError):
    """Not a semedge delta, or a format/version/kind/encoding this semedge cannot read."""


class DeltaFingerprintError(DeltaError):
    """The delta was made for a different base model."""


class DeltaUnknownParameterError(DeltaError):
    """The delta names a parameter the model does not have."""


class DeltaShapeError(DeltaError):
    """A parameter's shape differs from the model's, or index/value counts differ."""


class DeltaIndexRangeError(DeltaError):
    """An index points outside its parameter."""


class DeltaIndexOrderError(DeltaError):
    """Indices are not strictly increasing (unsorted or duplicated)."""


class DeltaValueError(DeltaError):
    """A value is NaN or infinite."""


class DeltaDtypeError(DeltaError):
    """Indices or values have a dtype the format does not allow."""


class DeltaNameError(DeltaError):
    """A change name that is not loaded (or already taken) in an :class:`Adapters`."""


class DeltaOverlapError(DeltaError):
    """A delta and an update that would change the same tensor at the same time."""


@dataclass(frozen=True)
class DeltaEntry:
    """Sparse modification of one parameter: strictly increasing flat ``indices`` (int64)."""

    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def validate(self, name: str) -> None:
        """Raise the specific :class:`DeltaError` for anything malformed in this entry."""
        if self.indices.dtype != np.int64 or self.indices.ndim != 1:
            raise DeltaDtypeError(
                f"{name}: indices must be a 1-D int64 array, got {self.indices.dtype}"
                f" with {self.indices.ndim} dims"
            )
        if self.values.dtype not in VALUE_DTYPES or self.values.ndim != 1:
            raise DeltaDtypeError(
                f"{name}: values must be a 1-D float16 or float32 array, got {self.values.dtype}"
            )
        if len(self.indices) != len(self.values):
            raise DeltaShapeError(
                f"{name}: {len(self.indices)} indices but {len(self.values)} values; "
                "re-create the delta"
            )
        if not len(self.indices):
            return
        if self.indices[0] < 0 or self.indices[-1] >= self.size:
            bad = self.indices[(self.indices < 0) | (self.indices >= self.size)]
            first = int(bad[0]) if len(bad) else int(self.indices[-1])
            raise DeltaIndexRangeError(
                f"{name}: index {first} is outside the parameter of shape {list(self.shape)} "
                f"({self.size} elements); the delta is corrupt or for another model"
            )
        steps = np.diff(self.indices)
        if len(steps) and steps.min() <= 0:
            at = int(np.argmax(steps <= 0))
            what = "duplicated" if steps[at] == 0 else "not increasing"
            raise DeltaIndexOrderError(
                f"{name}: indices must be strictly increasing, but index "
                f"{int(self.indices[at + 1])} at position {at + 1} is {what}; the delta is corrupt"
            )
        if not np.isfinite(self.values).all():
            count = int((~np.isfinite(self.values)).sum())
            raise DeltaValueError(
                f"{name}: {count} value(s) are NaN or infinite; re-train or re-save the delta"
            )


@dataclass
class Delta:
    """A per-domain sparse delta for the base model with fingerprint ``base_fingerprint``."""

    domain: str
    base_fingerprint: str
    sparsity: float
    entries: dict[str, DeltaEntry]
    index_encoding: str = "gap8"
    extra: dict[str, str] = field(default_factory=dict)
    kind: ClassVar[str] = KIND

    @property
    def name(self) -> str:
        """The delta's default adapter name: its domain."""
        return self.domain

    @property
    def nnz(self) -> int:
        return sum(len(e.indices) for e in self.entries.values())

    def validate(self) -> None:
        """Check every entry on its own (dtypes, counts, range, order, finiteness)."""
        for name, entry in self.entries.items():
            entry.validate(name)

    def check_against(self, shapes: Mapping[str, Sequence[int]], fingerprint: str) -> None:
        """Raise unless this delta can be applied to a model with these shapes and fingerprint."""
        _check_base(
            f"delta for domain {self.domain!r}",
            self.base_fingerprint,
            {n: e.shape for n, e in self.entries.items()},
            shapes,
            fingerprint,
            "adapt this checkpoint again (semedge adapt zfda CKPT ...)",
        )
        self.validate()

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description: domain, fingerprint, nnz and % per parameter."""
        layers = {
            name: {
                "shape": list(e.shape),
                "nnz": len(e.indices),
                "percent": 100.0 * len(e.indices) / max(e.size, 1),
                "value_dtype": e.values.dtype.name,
            }
            for name, e in sorted(self.entries.items())
        }
        adapted = sum(e.size for e in self.entries.values())
        return {
            "domain": self.domain,
            "base_fingerprint": self.base_fingerprint,
            "sparsity": self.sparsity,
            "index_encoding": self.index_encoding,
            "nnz": self.nnz,
            "adapted_parameters": adapted,
            "percent_of_adapted": 100.0 * self.nnz / max(adapted, 1),
            "layers": layers,
        }


def _check_base(
    what: str,
    base_fingerprint: str,
    own: Mapping[str, Sequence[int]],
    shapes: Mapping[str, Sequence[int]],
    fingerprint: str,
    fix: str,
) -> None:
    """The checks every change kind shares: the base's fingerprint, names and shapes."""
    if base_fingerprint != fingerprint:
        raise DeltaFingerprintError(
            f"{what} was made for base {base_fingerprint[:12]}… but this model is "
            f"{fingerprint[:12]}…; {fix}"
        )
    kind = what.split()[0]
    for name, shape in own.items():
        if name not in shapes:
            raise DeltaUnknownParameterError(
                f"{kind} names parameter {name!r} which this model does not have; "
                "it was made for a different architecture"
            )
        if tuple(shapes[name]) != tuple(shape):
            raise DeltaShapeError(
                f"{name}: {kind} shape {list(shape)} != model shape "
                f"{list(shapes[name])}; it was made for a different architecture"
            )


@dataclass
class Update:
    """New values of whole parameters (SLF: the unfrozen decoder layers) for one exact base.

    ``base_fingerprint`` names the receiver the update applies to, ``result_fingerprint``
    the model it becomes (checked where the whole model is at hand, e.g. ``semedge update
    apply``); ``freeze``/``freeze_side`` say which ℓ decoder layers stayed frozen, and
    ``accounting`` records what producing it cost (bytes, steps, time, memory).
    """

    name: str
    base_fingerprint: str
    result_fingerprint: str
    entries: dict[str, np.ndarray]
    freeze: int = 0
    freeze_side: str = "output"
    accounting: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    kind: ClassVar[str] = UPDATE_KIND

    @property
    def value_dtype(self) -> str:
        dtypes = {v.dtype.name for v in self.entries.values()} or {"float32"}
        return dtypes.pop() if len(dtypes) == 1 else "mixed"

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.entries.values())

    def validate(self) -> None:
        """Values: float16/float32, one dtype for all, finite; a known freeze side."""
        if self.freeze_side not in FREEZE_SIDES:
            raise DeltaFormatError(
                f"freeze side {self.freeze_side!r} must be one of {', '.join(FREEZE_SIDES)}"
            )
        if self.value_dtype == "mixed":
            raise DeltaDtypeError("update values must all have one dtype (float16 or float32)")
        for name, values in self.entries.items():
            if values.dtype not in VALUE_DTYPES:
                raise DeltaDtypeError(
                    f"{name}: update values must be float16 or float32, got {values.dtype}"
                )
            if not np.isfinite(values).all():
                count = int((~np.isfinite(values)).sum())
                raise DeltaValueError(
                    f"{name}: {count} value(s) are NaN or infinite; re-run SLF or re-save it"
                )

    def check_against(self, shapes: Mapping[str, Sequence[int]], fingerprint: str) -> None:
        """Raise unless this update applies to a model with these shapes and fingerprint."""
        _check_base(
            f"update {self.name!r}",
            self.base_fingerprint,
            {n: v.shape for n, v in self.entries.items()},
            shapes,
            fingerprint,
            "run SLF against this receiver (semedge adapt slf --rx CKPT ...)",
        )
        self.validate()

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description: fingerprints, ℓ, side, bytes per parameter, accounting."""
        return {
            "name": self.name,
            "kind": self.kind,
            "base_fingerprint": self.base_fingerprint,
            "result_fingerprint": self.result_fingerprint,
            "freeze": self.freeze,
            "freeze_side": self.freeze_side,
            "value_dtype": self.value_dtype,
            "parameters": sum(v.size for v in self.entries.values()),
            "value_bytes": self.nbytes,
            "layers": {
                n: {"shape": list(v.shape), "bytes": v.nbytes}
                for n, v in sorted(self.entries.items())
            },
            "accounting": self.accounting,
        }


WeightChange = Delta | Update


# ---------------------------------------------------------------- index encodings


def encode_gap8(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing indices -> (uint8 gaps, uint32 escapes); gap 0 means "escaped".

    Gaps are ``i[k] - i[k-1]`` with ``i[-1] = -1`` (so every gap is >= 1); gaps above 255
    are written as byte 0 and their value goes, in order, into the escape array.
    """
    gaps = np.diff(indices, prepend=-1)
    big = gaps > 255
    if len(gaps) and gaps.max(initial=0) > np.iinfo(np.uint32).max:
        raise DeltaFormatError("a gap between indices exceeds 2^32-1; save with encoding int32")
    small = np.where(big, 0, gaps).astype(np.uint8)
    return small, gaps[big].astype(np.uint32)


def decode_gap8(gaps: np.ndarray, escapes: np.ndarray, name: str) -> np.ndarray:
    """Inverse of :func:`encode_gap8` (one vectorised pass)."""
    full = gaps.astype(np.int64)
    escaped = full == 0
    if int(escaped.sum()) != len(escapes):
        raise DeltaFileError(
            f"{name}: {int(escaped.sum())} escaped gaps but {len(escapes)} escape values; "
            "the file is corrupt"
        )
    full[escaped] = escapes
    return np.cumsum(full) - 1


# ---------------------------------------------------------------- files


def _payload_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(name.encode() + b"\0" + arr.dtype.name.encode() + b"\0")
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def save_delta(delta: Delta, path: str | Path, index_encoding: str | None = None) -> Path:
    """Validate and write ``delta`` atomically (temp file + rename); returns the path."""
    encoding = index_encoding or delta.index_encoding
    if encoding not in INDEX_ENCODINGS:
        raise DeltaFormatError(f"unknown index encoding {encoding!r}; use one of {INDEX_ENCODINGS}")
    delta.validate()
    tensors: dict[str, np.ndarray] = {}
    for name, entry in delta.entries.items():
        tensors[f"{name}.delta_values"] = entry.values
        if encoding == "int32":
            if entry.size > _MAX_INT32:
                raise DeltaFormatError(f"{name} is too large for int32 indices; use gap8")
            tensors[f"{name}.delta_indices"] = entry.indices.astype(np.int32)
        else:
            gaps, escapes = encode_gap8(entry.indices)
            tensors[f"{name}.delta_gaps"] = gaps
            tensors[f"{name}.delta_gap_escapes"] = escapes
    metadata = {
        **delta.extra,
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": KIND,
        "base_fingerprint": delta.base_fingerprint,
        "domain": delta.domain,
        "sparsity": repr(float(delta.sparsity)),
        "shapes": json.dumps({n: list(e.shape) for n, e in sorted(delta.entries.items())}),
        "index_encoding": encoding,
    }
    return _write_safetensors(tensors, metadata, Path(path))


def _write_safetensors(
    tensors: dict[str, np.ndarray], metadata: dict[str, str], path: Path
) -> Path:
    """Write through :func:`sdk.files.atomic_file`, with the payload checksum in the metadata."""
    from safetensors.numpy import save_file

    metadata = {**metadata, "payload_sha256": _payload_sha256(tensors)}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_change_file(path: str | Path) -> bytes:
    """A delta/update file's bytes, read once: check a signature against them and parse
    them (:func:`load_change` ``data``), so what was checked is what loads."""
    path = Path(path)
    if not path.is_file():
        if path.name.endswith(UPDATE_SUFFIX):
            raise DeltaFileError(f"{path}: no such update file; create one with: semedge adapt slf")
        raise DeltaFileError(f"{path}: no such delta file; create one with: semedge adapt zfda")
    return path.read_bytes()


def safetensors_header(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``) from its
    first bytes (8-byte LE length + JSON)."""
    if len(data) < 8:
        raise ValueError("not a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise ValueError("safetensors header length out of range")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
        raise ValueError("safetensors header or its __metadata__ is not an object")
    return header


def _read_safetensors(
    path: Path, data: bytes | None = None
) -> tuple[dict[str, str] | None, dict[str, np.ndarray]]:
    """Metadata and tensors of the safetensors file ``path``, parsed from ``data`` if given."""
    from safetensors.numpy import load

    try:
        data = path.read_bytes() if data is None else data
        tensors = load(data)
        metadata = safetensors_header(data).get("__metadata__")
    except BaseException as exc:  # safetensors raises (and may panic) on any corruption
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise DeltaFileError(
            f"not a readable safetensors file ({reason}); it is truncated or corrupt"
        ) from None
    return metadata, tensors


def _tensor(tensors: dict[str, np.ndarray], key: str, dtypes: tuple[Any, ...]) -> np.ndarray:
    if key not in tensors:
        raise DeltaFileError(f"tensor {key!r} is missing; the file is corrupt")
    arr = tensors.pop(key)
    if arr.dtype not in [np.dtype(d) for d in dtypes]:
        names = "/".join(np.dtype(d).name for d in dtypes)
        raise DeltaDtypeError(f"{key} has dtype {arr.dtype}, the format requires {names}")
    if arr.ndim != 1:
        raise DeltaShapeError(f"{key} must be 1-D, got shape {list(arr.shape)}")
    return arr


def _parse_metadata(metadata: dict[str, str] | None) -> tuple[dict[str, list[int]], float, str]:
    if not metadata or metadata.get("format") != FORMAT:
        raise DeltaFormatError("not a semedge delta (metadata format != 'semedge.delta')")
    missing = [k for k in (*_REQUIRED_METADATA, "shapes", "index_encoding") if k not in metadata]
    if missing:
        raise DeltaFormatError(f"metadata is missing {missing}; re-save the delta")
    if metadata["format_version"] != str(FORMAT_VERSION):
        raise DeltaFormatError(
            f"delta format_version {metadata['format_version']!r} is not supported by this "
            f"semedge (reads {FORMAT_VERSION}); upgrade semedge or re-create the delta"
        )
    if metadata["kind"] != KIND:
        raise DeltaFormatError(f"delta kind {metadata['kind']!r} is not {KIND!r}")
    if metadata["index_encoding"] not in INDEX_ENCODINGS:
        raise DeltaFormatError(
            f"unknown index_encoding {metadata['index_encoding']!r}; "
            f"this semedge reads {', '.join(INDEX_ENCODINGS)}"
        )
    try:
        shapes = json.loads(metadata["shapes"])
        sparsity = float(metadata.get("sparsity", "nan"))
        ok = isinstance(shapes, dict) and all(
            isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
            for s in shapes.values()
        )
    except (json.JSONDecodeError, ValueError):
        ok = False
    if not ok:
        raise DeltaFormatError("metadata 'shapes'/'sparsity' is malformed; re-save the delta")
    return shapes, sparsity, metadata["index_encoding"]


def load_delta(path: str | Path) -> Delta:
    """Read and fully validate a delta file; raises a specific :class:`DeltaError`."""
    change = load_change(path)
    if not isinstance(change, Delta):
        raise DeltaFormatError(f"{path}: is an update package, not a delta; use semedge update")
    return change


def describe_file(
    path: str | Path, load: Callable[[str | Path], WeightChange], against: str | Path | None = None
) -> dict[str, Any]:
    """What ``semedge delta|update inspect`` show: the file, its summary, and with
    ``against`` (a checkpoint) the proof that it applies there (raises if it does not)."""
    change = load(path)
    info = {"file": str(path), "bytes": Path(path).stat().st_size, **change.summary()}
    if against is not None:
        from sdk.checkpoint import load_checkpoint
        from sdk.fingerprint import model_fingerprint

        model = load_checkpoint(against)
        shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
        change.check_against(shapes, model_fingerprint(model))
        info["compatible_with"] = str(against)
    return info


def load_update(path: str | Path) -> Update:
    """Read and fully validate an update package; raises a specific :class:`DeltaError`."""
    change = load_change(path)
    if not isinstance(change, Update):
        raise DeltaFormatError(f"{path}: is a delta, not an update package; use semedge delta")
    return change


def load_change(path: str | Path, data: bytes | None = None) -> WeightChange:
    """Read and fully validate a delta or an update (by its ``format`` metadata); from
    ``data`` (the file's bytes, :func:`read_change_file`) when given, without reading
    ``path`` again."""
    path = Path(path)
    data = read_change_file(path) if data is None else data
    try:
        metadata, tensors = _read_safetensors(path, data)
        kind = (metadata or {}).get("format")
        if kind not in (FORMAT, UPDATE_FORMAT):
            raise DeltaFormatError(
                f"not a semedge delta or update (metadata format is {kind!r}, expected "
                f"{FORMAT!r} or {UPDATE_FORMAT!r})"
            )
        assert metadata is not None
        expected = metadata.get("payload_sha256")
        if expected is not None and _payload_sha256(tensors) != expected:
            raise DeltaFileError("payload checksum mismatch; the file is corrupt, copy it again")
        named = {SUFFIX: FORMAT, UPDATE_SUFFIX: UPDATE_FORMAT}
        suffix = next((x for x in named if path.name.endswith(x)), None)
        if suffix is not None and named[suffix] != kind:  # flash and sign go by the name
            right = path.name[: -len(suffix)] + (UPDATE_SUFFIX if suffix == SUFFIX
                                                  else SUFFIX)  # fmt: skip
            raise DeltaFormatError(f"holds a {kind} but is named like a {named[suffix]}; "
                                   f"rename it to {right}")  # fmt: skip
        if kind == UPDATE_FORMAT:
            return _update_from(metadata, tensors)
        return _delta_from(metadata, tensors)
    except DeltaError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def _delta_from(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> Delta:
    shapes, sparsity, encoding = _parse_metadata(metadata)
    entries = {}
    for name, shape in shapes.items():
        values = _tensor(tensors, f"{name}.delta_values", VALUE_DTYPES)
        if encoding == "int32":
            indices = _tensor(tensors, f"{name}.delta_indices", (np.int32,)).astype(np.int64)
        else:
            gaps = _tensor(tensors, f"{name}.delta_gaps", (np.uint8,))
            escapes = _tensor(tensors, f"{name}.delta_gap_escapes", (np.uint32,))
            indices = decode_gap8(gaps, escapes, name)
        entries[name] = DeltaEntry(indices, values, tuple(shape))
    if tensors:
        raise DeltaFileError(
            f"tensors {sorted(tensors)[:3]} belong to no parameter in 'shapes'; the file is corrupt"
        )
    extra = {k: v for k, v in metadata.items() if k not in _KNOWN_METADATA}
    delta = Delta(
        metadata["domain"], metadata["base_fingerprint"], sparsity, entries, encoding, extra
    )
    delta.validate()
    return delta


_KNOWN_METADATA = {
    *_REQUIRED_METADATA,
    "sparsity",
    "shapes",
    "index_encoding",
    "payload_sha256",
}
_UPDATE_METADATA = (
    "format",
    "format_version",
    "kind",
    "name",
    "base_fingerprint",
    "result_fingerprint",
    "freeze",
    "freeze_side",
    "parameters",
    "shapes",
    "value_dtype",
    "accounting",
)


def save_update(update: Update, path: str | Path) -> Path:
    """Validate and write ``update`` atomically (layout in ``docs/formats.md``)."""
    update.validate()
    metadata = {
        **update.extra,
        "format": UPDATE_FORMAT,
        "format_version": str(UPDATE_FORMAT_VERSION),
        "kind": UPDATE_KIND,
        "name": update.name,
        "base_fingerprint": update.base_fingerprint,
        "result_fingerprint": update.result_fingerprint,
        "freeze": str(update.freeze),
        "freeze_side": update.freeze_side,
        "parameters": json.dumps(sorted(update.entries)),
        "shapes": json.dumps({n: list(v.shape) for n, v in sorted(update.entries.items())}),
        "value_dtype": update.value_dtype,
        "accounting": json.dumps(update.accounting, sort_keys=True),
    }
    tensors = {n: np.ascontiguousarray(v) for n, v in update.entries.items()}
    return _write_safetensors(tensors, metadata, Path(path))


def _update_from(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> Update:
    missing = [k for k in _UPDATE_METADATA if k not in metadata]
    if missing:
        raise DeltaFormatError(f"metadata is missing {missing}; re-save the update")
    if metadata["format_version"] != str(UPDATE_FORMAT_VERSION):
        raise DeltaFormatError(
            f"update format_version {metadata['format_version']!r} is not supported by this "
            f"semedge (reads {UPDATE_FORMAT_VERSION}); upgrade semedge or re-create the update"
        )
    if metadata["kind"] != UPDATE_KIND:
        raise DeltaFormatError(f"update kind {metadata['kind']!r} is not {UPDATE_KIND!r}")
    try:
        names = json.loads(metadata["parameters"])
        shapes = json.loads(metadata["shapes"])
        accounting = json.loads(metadata["accounting"])
        freeze = int(metadata["freeze"])
        ok = (
            isinstance(names, list)
            and isinstance(shapes, dict)
            and isinstance(accounting, dict)
            and sorted(names) == sorted(shapes)
            and all(
                isinstance(s, list) and all(isinstance(d, int) for d in s) for s in shapes.values()
            )
        )
    except (json.JSONDecodeError, ValueError, TypeError):
        ok = False
    if not ok:
        raise DeltaFormatError(
            "metadata 'parameters'/'shapes'/'accounting'/'freeze' is malformed; re-save the update"
        )
    value_dtype = metadata["value_dtype"]
    if value_dtype not in [d.name for d in VALUE_DTYPES]:
        raise DeltaDtypeError(f"value_dtype {value_dtype!r} is not float16 or float32")
    entries = {}
    for name in names:
        if name not in tensors:
            raise DeltaFileError(f"parameter {name!r} is listed but missing; the file is corrupt")
        values = tensors.pop(name)
        if values.dtype.name != value_dtype:
            raise DeltaDtypeError(
                f"{name} has dtype {values.dtype}, the update declares {value_dtype}"
            )
        if list(values.shape) != shapes[name]:
            raise DeltaShapeError(
                f"{name} has shape {list(values.shape)} but the metadata says {shapes[name]}; "
                "the file is corrupt"
            )
        entries[name] = values
    if tensors:
        raise DeltaFileError(
            f"tensors {sorted(tensors)[:3]} are not in the parameter list; the file is corrupt"
        )
    update = Update(
        metadata["name"],
        metadata["base_fingerprint"],
        metadata["result_fingerprint"],
        entries,
        freeze,
        metadata["freeze_side"],
        accounting,
        {k: v for k, v in metadata.items() if k not in (*_UPDATE_METADATA, "payload_sha256")},
    )
    update.validate()
    return update


# ---------------------------------------------------------------- apply / restore


@dataclass
class _Segment:
    """The part of a prepared delta that lands in one flat buffer."""

    flat: np.ndarray
    index: np.ndarray  # global positions in ``flat`` (intp), increasing
    values: np.ndarray  # in ``flat``'s dtype
    saved: np.ndarray  # base values, filled on activate
    work: np.ndarray  # scratch for base + value


@dataclass
class _Block:
    """A contiguous range ``flat[start:stop]`` that an update replaces (whole tensors)."""

    flat: np.ndarray
    start: int
    stop: int
    values: np.ndarray  # in ``flat``'s dtype, 1-D
    saved: np.ndarray  # base values, filled on activate


@dataclass
class PreparedDelta:
    """A change (``delta``: a :class:`Delta` or an :class:`Update`) checked against one
    :class:`DeltaCore`, with its global indices or ranges precomputed."""

    delta: WeightChange
    core: DeltaCore
    segments: list[_Segment]
    blocks: list[_Block] = field(default_factory=list)
    swaps: dict[str, np.ndarray] = field(default_factory=dict)  # name -> new tensor (rebind)

    @property
    def kind(self) -> str:
        return self.delta.kind

    @property
    def names(self) -> set[str]:
        return set(self.delta.entries)


def check_disjoint(
    what: str, names: Set[str], active: str, active_names: Set[str], fix: str
) -> None:
    """The rule for a delta and an update active together (here and on the device's
    ``SlotStore``): they change different tensors. :class:`DeltaOverlapError` otherwise."""
    shared = names & active_names
    if shared:
        raise DeltaOverlapError(f"{what} and the active {active} both change {min(shared)}; {fix}")


def changed_parameters(header: Mapping[str, Any]) -> set[str]:
    """The parameters a delta/update file changes, from its safetensors header alone (the
    tensor names: a delta stores ``P.delta_values`` per parameter ``P``, an update ``P``)."""
    tensors = [name for name in header if name != "__metadata__"]
    if (header.get("__metadata__") or {}).get("format") == FORMAT:
        return {n.removesuffix(".delta_values") for n in tensors if n.endswith(".delta_values")}
    return set(tensors)


def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


class DeltaCore:
    """Apply and restore deltas and updates on an engine's weight buffers.

    ``buffers`` maps parameter names to arrays that share memory with the engine;
    ``fingerprint`` is the base fingerprint of exactly those weights. Buffers that lie
    inside one of ``flats`` (1-D contiguous arrays, e.g. one tensor holding all of a
    model's parameters) are addressed through it, so a delta touching many tensors is
    still a single vectorised gather/scatter (and an update of neighbouring tensors one
    copy); any other buffer is its own segment. At most one change per kind is active
    (activating another of the same kind switches); a delta and an update may be active
    together only when they change different tensors.

    ``rebind(name, array)``, where an engine can point a tensor at other memory (torch
    ``Parameter.data``, an ONNX Runtime weight input), makes an update O(tensors) instead
    of O(bytes): its prepared tensors are swapped in, and rolling back points the engine
    at the original buffer again — which was never written, so it is the saved base.
    """

    def __init__(
        self,
        buffers: Mapping[str, np.ndarray],
        fingerprint: str,
        flats: Sequence[np.ndarray] = (),
        rebind: Callable[[str, np.ndarray], None] | None = None,
    ) -> None:
        self.fingerprint = fingerprint
        self._buffers = dict(buffers)
        self._rebind = rebind
        self.shapes = {name: tuple(buf.shape) for name, buf in buffers.items()}
        self._place: dict[str, tuple[np.ndarray, int]] = {}
        for name, buf in buffers.items():
            if not (buf.flags.c_contiguous and buf.flags.writeable):
                raise ValueError(f"buffer {name!r} must be C-contiguous and writeable")
            self._place[name] = self._locate(buf, flats)
        self._active: dict[str, PreparedDelta] = {}
        self._changed: set[str] = set()

    @staticmethod
    def _locate(buf: np.ndarray, flats: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
        start = _address(buf)
        for flat in flats:
            base = _address(flat)
            inside = base <= start and start + buf.nbytes <= base + flat.nbytes
            if inside and flat.dtype == buf.dtype and (start - base) % buf.itemsize == 0:
                return flat, (start - base) // buf.itemsize
        return buf.reshape(-1), 0

    @property
    def active(self) -> str | None:
        """Domain of the active delta, or None when no delta is active."""
        prepared = self._active.get(KIND)
        return prepared.delta.name if prepared else None

    @property
    def active_delta(self) -> PreparedDelta | None:
        """The active delta (kind ``zfda``), if any."""
        return self._active.get(KIND)

    @property
    def active_changes(self) -> list[PreparedDelta]:
        """Every active change (delta and/or update), in activation order."""
        return list(self._active.values())

    def take_changed(self) -> set[str]:
        """Names of the tensors written since the last call (what an engine must refit)."""
        changed, self._changed = self._changed, set()
        return changed

    def prepare(self, change: WeightChange) -> PreparedDelta:
        """Validate ``change`` against this engine and precompute where it writes."""
        change.check_against(self.shapes, self.fingerprint)
        if isinstance(change, Update) and self._rebind is not None:
            swaps = {
                n: np.ascontiguousarray(v, dtype=self._buffers[n].dtype).reshape(self.shapes[n])
                for n, v in change.entries.items()
            }
            return PreparedDelta(change, self, [], [], swaps)
        if isinstance(change, Update):
            return PreparedDelta(change, self, [], self._blocks(change))
        groups: dict[int, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] = {}
        for name in sorted(change.entries, key=lambda n: self._place[n][1]):
            entry = change.entries[name]
            flat, offset = self._place[name]
            _, idx, vals = groups.setdefault(id(flat), (flat, [], []))
            idx.append(entry.indices + offset)
            vals.append(entry.values.astype(flat.dtype))
        segments = []
        for flat, idx, vals in groups.values():
            index = np.concatenate(idx).astype(np.intp)
            values = np.concatenate(vals)
            segments.append(
                _Segment(flat, index, values, np.empty_like(values), np.empty_like(values))
            )
        return PreparedDelta(change, self, segments)

    def _blocks(self, update: Update) -> list[_Block]:
        """One block per run of tensors that are neighbours in the same flat buffer."""
        blocks: list[_Block] = []
        pieces: list[np.ndarray] = []
        for name in sorted(
            update.entries, key=lambda n: (id(self._place[n][0]), self._place[n][1])
        ):
            flat, start = self._place[name]
            values = update.entries[name].astype(flat.dtype).reshape(-1)
            last = blocks[-1] if blocks else None
            if last is not None and last.flat is flat and last.stop == start:
                last.stop += values.size
                pieces.append(values)
                continue
            if last is not None:
                last.values = np.concatenate(pieces)
            blocks.append(_Block(flat, start, start + values.size, values, values))
            pieces = [values]
        if blocks:
            blocks[-1].values = np.concatenate(pieces)
        for block in blocks:
            block.saved = np.empty_like(block.values)
        return blocks

    def activate(self, change: WeightChange | PreparedDelta) -> None:
        """Validate, then apply ``change`` (restoring the active one of its kind first).

        Raises :class:`DeltaOverlapError`, changing nothing, when an active change of the
        other kind writes one of the same tensors.
        """
        prepared = change if isinstance(change, PreparedDelta) else self.prepare(change)
        if prepared.core is not self:
            prepared = self.prepare(prepared.delta)
        current = self._active.get(prepared.kind)
        if prepared is current:
            return
        for other in self._active.values():
            if other.kind != prepared.kind:
                check_disjoint(
                    f"{prepared.kind} {prepared.delta.name!r}", prepared.names,
                    f"{other.kind} {other.delta.name!r}", other.names,
                    f"deactivate {other.delta.name!r} first",
                )  # fmt: skip
        if current is not None:
            self._restore(current)
        for seg in prepared.segments:
            self._apply_segment(seg)
        for block in prepared.blocks:
            self._apply_block(block)
        for name, values in prepared.swaps.items():
            self._rebind(name, values)  # type: ignore[misc]  # swaps exist only with rebind
        self._active[prepared.kind] = prepared
        self._changed |= prepared.names

    def deactivate(self, kind: str | None = None) -> None:
        """Write saved base values back (bit-exact) for ``kind``, or every active change."""
        for prepared in list(self._active.values())[::-1]:
            if kind in (None, prepared.kind):
                self._restore(prepared)

    def _restore(self, prepared: PreparedDelta) -> None:
        """Saved values back in reverse order of writing (tied tensors end at the base)."""
        for name in prepared.swaps:
            self._rebind(name, self._buffers[name])  # type: ignore[misc]
        for block in prepared.blocks[::-1]:
            self._restore_block(block)
        for seg in prepared.segments[::-1]:
            self._restore_segment(seg)
        del self._active[prepared.kind]
        self._changed |= prepared.names

    # Where the weights live decides how a segment (delta) or block (update) is written:
    # numpy here; on device-resident weights (sdk.backends.trt.device_deltas.DeviceDeltaCore)
    # the sparse-delta CUDA kernel and device-to-device copies.
    def _apply_segment(self, seg: _Segment) -> None:
        np.take(seg.flat, seg.index, out=seg.saved)
        np.add(seg.saved, seg.values, out=seg.work)
        seg.flat[seg.index] = seg.work

    def _restore_segment(self, seg: _Segment) -> None:
        seg.flat[seg.index] = seg.saved

    def _apply_block(self, block: _Block) -> None:
        np.copyto(block.saved, block.flat[block.start : block.stop])
        block.flat[block.start : block.stop] = block.values

    def _restore_block(self, block: _Block) -> None:
        block.flat[block.start : block.stop] = block.saved


# ---------------------------------------------------------------- adapters


class Adapters:
    """Named weight changes over one :class:`DeltaCore`: the PEFT-like verbs.

    ``load`` validates and registers, ``activate`` sets (switching within a kind),
    ``deactivate`` restores, ``disabled()`` runs a block on the base weights, ``list``,
    ``unload`` and ``inspect`` manage what is loaded. ``on_change`` runs after every
    write (a runtime makes the new weights take effect there); if it fails the previous
    state is put back before the error propagates.
    """

    def __init__(self, core: DeltaCore, on_change: Callable[[], None] | None = None) -> None:
        self.core = core
        self._on_change = on_change or (lambda: None)
        self._loaded: dict[str, PreparedDelta] = {}

    @property
    def fingerprint(self) -> str:
        return self.core.fingerprint

    @property
    def active(self) -> str | None:
        """Name of the most recently activated change still active, or None."""
        names = self.active_names
        return names[-1] if names else None

    @property
    def active_names(self) -> list[str]:
        """Names of every active change (a delta and an update may be active together)."""
        by_id = {id(p): n for n, p in self._loaded.items()}
        return [by_id[id(p)] for p in self.core.active_changes if id(p) in by_id]

    def load(self, source: str | Path | WeightChange, name: str | None = None) -> str:
        """Load (file or in-memory change), validate against this model, register as ``name``.

        ``name`` defaults to the delta's domain or the update's name. Returns the name.
        """
        change = source if isinstance(source, Delta | Update) else load_change(source)
        name = name or change.name
        if name in self._loaded:
            raise DeltaNameError(f"a change named {name!r} is already loaded; pass another name")
        self._loaded[name] = self.core.prepare(change)
        return name

    def name_of(self, change: WeightChange) -> str | None:
        """The name ``change`` (this very object) is loaded under, if it is."""
        return next((n for n, p in self._loaded.items() if p.delta is change), None)

    def _get(self, name: str) -> PreparedDelta:
        if name not in self._loaded:
            raise DeltaNameError(
                f"no change named {name!r} is loaded (loaded: {', '.join(self._loaded) or 'none'})"
            )
        return self._loaded[name]

    def _transition(self, step: Callable[[], None]) -> None:
        """Run ``step`` on the core, then ``on_change``; on failure put the old state back."""
        before = self.core.active_changes
        step()
        try:
            self._on_change()
        except BaseException:
            self._set_active(before)
            self._on_change()
            raise

    def activate(self, name: str) -> None:
        """Make change ``name`` active (an active change of the same kind is restored first)."""
        prepared = self._get(name)
        self._transition(lambda: self.core.activate(prepared))

    def deactivate(self, name: str | None = None, kind: str | None = None) -> None:
        """Restore the base weights of change ``name``, of the active change of ``kind``
        (``zfda`` or ``slf``), or by default of every active change."""
        if name is not None:
            prepared = self._get(name)
            if prepared not in self.core.active_changes:
                return
            kind = prepared.kind
        if any(kind in (None, p.kind) for p in self.core.active_changes):
            self._transition(lambda: self.core.deactivate(kind))

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run a block on the base weights, then put back exactly what was active before."""
        previous = self.core.active_changes
        self.deactivate()
        try:
            yield
        finally:
            self._transition(lambda: self._set_active(previous))

    def _set_active(self, changes: Sequence[PreparedDelta]) -> None:
        self.core.deactivate()
        for prepared in changes:
            self.core.activate(prepared)

    def unload(self, name: str) -> None:
        """Forget change ``name`` (deactivating it first if it is active)."""
        self.deactivate(name)
        del self._loaded[name]

    def list(self) -> list[str]:
        return list(self._loaded)

    def inspect(self, name: str) -> dict[str, Any]:
        """The change's summary (:meth:`Delta.summary` / :meth:`Update.summary`) and state."""
        prepared = self._get(name)
        return {
            **prepared.delta.summary(),
            "kind": prepared.kind,
            "active": prepared in self.core.active_changes,
        }


# ---------------------------------------------------------------- torch adapter


class TorchDeltas(Adapters):
    """PEFT-like switching of named deltas and updates on a live torch model (CPU).

    On construction every parameter becomes a view into one contiguous tensor per dtype
    (values unchanged, same ``Parameter`` objects), so a delta is one vectorised
    gather/scatter (``save_checkpoint`` still works: the views do not overlap); an update
    points its parameters at the update's tensors (``Parameter.data``) and back, or with
    ``rebind_updates=False`` copies them into the flat buffer (as engines without rebinding
    do).
    """

    def __init__(self, model: nn.Module, rebind_updates: bool = True) -> None:
        from sdk.fingerprint import model_fingerprint

        self.model = model
        fingerprint = model_fingerprint(model)
        unique: dict[int, torch.nn.Parameter] = {}
        for _, p in model.named_parameters():
            if p.device.type != "cpu":
                raise DeltaError("TorchDeltas works on CPU models; move the model with .cpu()")
            unique.setdefault(id(p), p)
        self._flats = self._flatten(list(unique.values()))
        named = dict(model.named_parameters(remove_duplicate=False))
        buffers = {name: p.detach().numpy() for name, p in named.items()}
        flats = [f.numpy() for f in self._flats]
        rebind = self._rebinder(named) if rebind_updates else None
        super().__init__(DeltaCore(buffers, fingerprint, flats, rebind))

    @staticmethod
    def _rebinder(named: dict[str, torch.nn.Parameter]) -> Callable[[str, np.ndarray], None]:
        """Point a parameter at other memory (an update's tensor, or its flat view again)."""
        import torch

        def rebind(name: str, array: np.ndarray) -> None:
            named[name].data = torch.from_numpy(array)

        return rebind

    @staticmethod
    def _flatten(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        import torch

        flats = []
        for dtype in sorted({p.dtype for p in params}, key=str):
            group = [p for p in params if p.dtype == dtype]
            flat = torch.empty(sum(p.numel() for p in group), dtype=dtype)
            offset = 0
            with torch.no_grad():
                for p in group:
                    view = flat[offset : offset + p.numel()].view_as(p)
                    view.copy_(p.data)
                    p.data = view
                    offset += p.numel()
            flats.append(flat)
        return flats

    def merge(self, out: str | Path | None = None) -> str:
        """Bake the active changes into a new checkpoint at ``out``; returns its fingerprint.

        The live model keeps its state (the changes stay active and can still be
        deactivated back to the base); without ``out`` only the fingerprint is computed.
        """
        from sdk.checkpoint import save_checkpoint
        from sdk.fingerprint import model_fingerprint

        if out is not None:
            save_checkpoint(self.model, out, extra={"merged": self.active_names})
        return model_fingerprint(self.model)
