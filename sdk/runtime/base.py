"""The runner contract every backend implements (shaped like Polygraphy's ``BaseRunner``).

A runner is created cheaply, *activated* (session/engine/model loaded), asked to
``infer`` named numpy inputs into named numpy outputs, and *deactivated*; it is also
a context manager. The public methods check state and inputs, backends implement the
``*_impl`` hooks. Inputs are checked against :meth:`get_input_metadata` before any
backend sees them, so a wrong shape or dtype is one clear line, not a backend trace.

Delta switching: a backend that supports it returns a :class:`~sdk.delta.DeltaCore`
over its weight buffers from :meth:`BaseRunner.delta_core` and makes changed buffers
take effect in :meth:`BaseRunner.weights_changed` (a no-op where the engine reads the
buffers on every run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk.errors import SemedgeError

if TYPE_CHECKING:
    from types import TracebackType

    from sdk.delta import Adapters, DeltaCore


class RunnerError(SemedgeError):
    """A runtime that cannot load or run what it was given."""


class InputError(RunnerError):
    """Inputs whose names, shapes or dtypes do not match the model."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (-1 = any size) and numpy dtype name of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> TensorSpec:
        return cls(spec["name"], tuple(int(d) for d in spec["shape"]), str(spec["dtype"]))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def describe(self) -> str:
        dims = ", ".join("B" if d < 0 else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


def check_feed(feed: Mapping[str, Any], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Validate ``feed`` against ``specs``; returns C-contiguous arrays, raises InputError."""
    names = [s.name for s in specs]
    unknown = sorted(set(feed) - set(names))
    missing = [n for n in names if n not in feed]
    if unknown or missing:
        raise InputError(
            f"inputs {unknown or ''}{' are unknown' if unknown else ''}"
            f"{'; ' if unknown and missing else ''}{'missing ' + str(missing) if missing else ''}"
            f"; the model takes: {'; '.join(s.describe() for s in specs)}"
        )
    out = {}
    for spec in specs:
        value = feed[spec.name]
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.name != spec.dtype:
            raise InputError(
                f"input {spec.name} has dtype {arr.dtype.name}, expected {spec.dtype}; "
                f"convert with .astype(np.{spec.dtype})"
            )
        fits = arr.ndim == len(spec.shape) and all(
            want < 0 or want == have for want, have in zip(spec.shape, arr.shape, strict=False)
        )
        if not fits or arr.size == 0:
            raise InputError(
                f"input {spec.name} has shape {list(arr.shape)}, expected {spec.describe()}"
                " (B = any batch size >= 1)"
            )
        out[spec.name] = np.ascontiguousarray(arr)
    return out


class BaseRunner:
    """Activate / infer / deactivate around backend hooks; see the module docstring."""

    backend = "base"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.backend
        self.is_active = False
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    # -- lifecycle
    def activate(self) -> BaseRunner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> BaseRunner:
        return self.activate()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    # -- metadata and inference
    def get_input_metadata(self) -> list[TensorSpec]:
        self._require_active()
        return list(self._inputs)

    def get_output_metadata(self) -> list[TensorSpec]:
        self._require_active()
        return list(self._outputs)

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Named inputs -> named outputs (numpy), after checking names, shapes and dtypes."""
        self._require_active()
        return self.infer_impl(check_feed(feed, self._inputs))

    def _require_active(self) -> None:
        if not self.is_active:
            raise RunnerError(f"runner {self.name} is not active; call activate() or use `with`")

    # -- deltas
    @property
    def delta_mode(self) -> str | None:
        """How this runner switches deltas (None: it cannot)."""
        return None

    def delta_core(self) -> DeltaCore:
        raise RunnerError(
            f"the {self.backend} runner cannot switch deltas for this model; rebuild the "
            "artifact with delta targets: semedge build CKPT --delta-targets decoder ..."
        )

    def weights_changed(self) -> None:
        """Make patched weight buffers take effect (no-op when they are read every run)."""

    def adapters(self) -> Adapters:
        """Named deltas/updates over :meth:`delta_core`; :meth:`weights_changed` applies them."""
        from sdk.delta import Adapters

        return Adapters(self.delta_core(), self.weights_changed)

    # -- hooks
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError
