"""ZFDA deltas: the file format, validation, and bit-exact switching on live weights.

A delta is a set of sparse additive modifications ``w[i] = w0[i] + v[i]`` to some
parameters of one exact base model (named by its fingerprint). Three layers:

* :class:`Delta` / :func:`load_delta` / :func:`save_delta` — the ``*.delta.safetensors``
  file (layout in ``docs/formats.md``). Loading validates *everything* (format,
  checksum, dtypes, index order and range, finite values) and raises a specific
  :class:`DeltaError` subclass with a one-line message.
* :class:`DeltaCore` — engine-agnostic apply/restore over numpy weight buffers that
  share memory with an engine (torch, ONNX Runtime). A delta is *prepared* once
  (checked against the engine's names, shapes and fingerprint; indices turned into
  global offsets into one flat buffer); activating is then one gather, one add and one
  scatter per flat buffer, and deactivating one scatter of the saved base values — so
  restoring is bit-exact by construction (never ``w + d - d``).
* :class:`TorchDeltas` — the PEFT-like adapter over a live torch model: ``load``,
  ``activate``, ``deactivate``, ``disabled()``, ``list``, ``inspect``. It makes every
  parameter a view into one contiguous tensor per dtype so the core's fast path applies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """A delta name that is not loaded (or already taken) in a :class:`TorchDeltas`."""


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

    @property
    def nnz(self) -> int:
        return sum(len(e.indices) for e in self.entries.values())

    def validate(self) -> None:
        """Check every entry on its own (dtypes, counts, range, order, finiteness)."""
        for name, entry in self.entries.items():
            entry.validate(name)

    def check_against(self, shapes: Mapping[str, Sequence[int]], fingerprint: str) -> None:
        """Raise unless this delta can be applied to a model with these shapes and fingerprint."""
        if self.base_fingerprint != fingerprint:
            raise DeltaFingerprintError(
                f"delta for domain {self.domain!r} was made for base {self.base_fingerprint[:12]}…"
                f" but this model is {fingerprint[:12]}…; adapt this checkpoint again "
                "(semedge adapt zfda CKPT ...)"
            )
        for name, entry in self.entries.items():
            if name not in shapes:
                raise DeltaUnknownParameterError(
                    f"delta names parameter {name!r} which this model does not have; "
                    "it was made for a different architecture"
                )
            if tuple(shapes[name]) != tuple(entry.shape):
                raise DeltaShapeError(
                    f"{name}: delta shape {list(entry.shape)} != model shape "
                    f"{list(shapes[name])}; it was made for a different architecture"
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
    from safetensors.numpy import save_file

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
        "payload_sha256": _payload_sha256(tensors),
    }
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, str] | None, dict[str, np.ndarray]]:
    from safetensors import safe_open

    if not path.is_file():
        raise DeltaFileError("no such delta file; create one with: semedge adapt zfda")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
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
    path = Path(path)
    try:
        metadata, tensors = _read_safetensors(path)
        shapes, sparsity, encoding = _parse_metadata(metadata)
        assert metadata is not None
        expected = metadata.get("payload_sha256")
        if expected is not None and _payload_sha256(tensors) != expected:
            raise DeltaFileError("payload checksum mismatch; the file is corrupt, copy it again")
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
                f"tensors {sorted(tensors)[:3]} belong to no parameter in 'shapes'; "
                "the file is corrupt"
            )
        extra = {k: v for k, v in metadata.items() if k not in _KNOWN_METADATA}
        delta = Delta(
            metadata["domain"], metadata["base_fingerprint"], sparsity, entries, encoding, extra
        )
        delta.validate()
    except DeltaError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return delta


_KNOWN_METADATA = {
    *_REQUIRED_METADATA,
    "sparsity",
    "shapes",
    "index_encoding",
    "payload_sha256",
}


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
class PreparedDelta:
    """A delta checked against one :class:`DeltaCore`, with its global indices precomputed."""

    delta: Delta
    core: DeltaCore
    segments: list[_Segment]


def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


class DeltaCore:
    """Apply and restore deltas on an engine's weight buffers (numpy views of its memory).

    ``buffers`` maps parameter names to arrays that share memory with the engine;
    ``fingerprint`` is the base fingerprint of exactly those weights. Buffers that lie
    inside one of ``flats`` (1-D contiguous arrays, e.g. one tensor holding all of a
    model's parameters) are addressed through it, so a delta touching many tensors is
    still a single vectorised gather/scatter; any other buffer is its own segment.
    """

    def __init__(
        self,
        buffers: Mapping[str, np.ndarray],
        fingerprint: str,
        flats: Sequence[np.ndarray] = (),
    ) -> None:
        self.fingerprint = fingerprint
        self.shapes = {name: tuple(buf.shape) for name, buf in buffers.items()}
        self._place: dict[str, tuple[np.ndarray, int]] = {}
        for name, buf in buffers.items():
            if not (buf.flags.c_contiguous and buf.flags.writeable):
                raise ValueError(f"buffer {name!r} must be C-contiguous and writeable")
            self._place[name] = self._locate(buf, flats)
        self._active: PreparedDelta | None = None
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
        """Domain of the active delta, or None when the base weights are in place."""
        return self._active.delta.domain if self._active else None

    @property
    def active_delta(self) -> PreparedDelta | None:
        return self._active

    def take_changed(self) -> set[str]:
        """Names of the tensors written since the last call (what an engine must refit)."""
        changed, self._changed = self._changed, set()
        return changed

    def prepare(self, delta: Delta) -> PreparedDelta:
        """Validate ``delta`` against this engine and precompute its global indices."""
        delta.check_against(self.shapes, self.fingerprint)
        groups: dict[int, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] = {}
        for name in sorted(delta.entries, key=lambda n: self._place[n][1]):
            entry = delta.entries[name]
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
        return PreparedDelta(delta, self, segments)

    def activate(self, delta: Delta | PreparedDelta) -> None:
        """Validate, then apply ``delta`` (restoring the active one first when switching)."""
        prepared = delta if isinstance(delta, PreparedDelta) else self.prepare(delta)
        if prepared.core is not self:
            prepared = self.prepare(prepared.delta)
        if prepared is self._active:
            return
        self.deactivate()
        for seg in prepared.segments:
            self._apply_segment(seg)
        self._active = prepared
        self._changed |= set(prepared.delta.entries)

    def deactivate(self) -> None:
        """Write the saved base values back (bit-exact); no-op when nothing is active."""
        if self._active is None:
            return
        for seg in self._active.segments:
            self._restore_segment(seg)
        self._changed |= set(self._active.delta.entries)
        self._active = None

    # Where the weights live decides how a segment is written: numpy here, the sparse-delta
    # CUDA kernel on device-resident weights (sdk.runtime.trt.DeviceDeltaCore).
    def _apply_segment(self, seg: _Segment) -> None:
        np.take(seg.flat, seg.index, out=seg.saved)
        np.add(seg.saved, seg.values, out=seg.work)
        seg.flat[seg.index] = seg.work

    def _restore_segment(self, seg: _Segment) -> None:
        seg.flat[seg.index] = seg.saved


# ---------------------------------------------------------------- torch adapter


class TorchDeltas:
    """PEFT-like switching of named deltas on a live torch model (CPU).

    On construction every parameter becomes a view into one contiguous tensor per dtype
    (values unchanged, same ``Parameter`` objects), so activation is one vectorised
    gather/scatter (``save_checkpoint`` still works: the views do not overlap).
    """

    def __init__(self, model: nn.Module) -> None:
        from sdk.fingerprint import model_fingerprint

        self.model = model
        fingerprint = model_fingerprint(model)
        unique: dict[int, torch.nn.Parameter] = {}
        for _, p in model.named_parameters():
            if p.device.type != "cpu":
                raise DeltaError("TorchDeltas works on CPU models; move the model with .cpu()")
            unique.setdefault(id(p), p)
        self._flats = self._flatten(list(unique.values()))
        buffers = {
            name: p.detach().numpy() for name, p in model.named_parameters(remove_duplicate=False)
        }
        self.core = DeltaCore(buffers, fingerprint, [f.numpy() for f in self._flats])
        self._deltas: dict[str, PreparedDelta] = {}

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

    @property
    def fingerprint(self) -> str:
        return self.core.fingerprint

    @property
    def active(self) -> str | None:
        """Name of the active delta, or None."""
        current = self.core.active_delta
        return next((n for n, p in self._deltas.items() if p is current), None)

    def load(self, source: str | Path | Delta, name: str | None = None) -> str:
        """Load (file or :class:`Delta`), validate against this model, register under ``name``.

        ``name`` defaults to the delta's domain. Returns the name.
        """
        delta = source if isinstance(source, Delta) else load_delta(source)
        name = name or delta.domain
        if name in self._deltas:
            raise DeltaNameError(f"a delta named {name!r} is already loaded; pass another name")
        self._deltas[name] = self.core.prepare(delta)
        return name

    def _get(self, name: str) -> PreparedDelta:
        if name not in self._deltas:
            raise DeltaNameError(
                f"no delta named {name!r} is loaded (loaded: {', '.join(self._deltas) or 'none'})"
            )
        return self._deltas[name]

    def activate(self, name: str) -> None:
        """Make delta ``name`` the active one (switching restores the previous one first)."""
        self.core.activate(self._get(name))

    def deactivate(self) -> None:
        """Restore the base weights bit-exactly."""
        self.core.deactivate()

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run a block on the base weights, then re-activate whatever was active."""
        previous = self.core.active_delta
        self.core.deactivate()
        try:
            yield
        finally:
            if previous is not None:
                self.core.activate(previous)

    def unload(self, name: str) -> None:
        """Forget delta ``name`` (deactivating it first if it is active)."""
        if self._get(name) is self.core.active_delta:
            self.core.deactivate()
        del self._deltas[name]

    def list(self) -> list[str]:
        return list(self._deltas)

    def inspect(self, name: str) -> dict[str, Any]:
        """The summary of delta ``name`` (see :meth:`Delta.summary`) plus whether it is active."""
        prepared = self._get(name)
        return {**prepared.delta.summary(), "active": prepared is self.core.active_delta}
