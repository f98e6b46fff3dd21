"""An edge app's runtime that follows the device: ``sdk.Runtime.open_device(root, model)``.

It serves the running slot of ``model`` under an agent root (``semedge agent --root``)
with that slot's active update and delta applied, and watches ``state.json``. When the
agent switches build, delta or update, the new state is loaded into a *new*
:class:`~sdk.runtime.Runtime` beside the serving one and swapped in under a lock; calls
already running finish on the old one, which closes when its last call returns. So every
``infer`` runs on exactly one consistent set of weights and none is dropped. A state
that fails to load (a half-written slot cannot be active, but a file may be unreadable)
leaves the old runtime serving; ``last_error`` says why and the next poll tries again.
What is active lives in ``state.json``, so it survives a reboot.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.slots import CHANGE_KINDS, read_state
from sdk import artifact
from sdk.artifact import file_sha256
from sdk.errors import SemedgeError
from sdk.runtime.base import RunnerError
from sdk.runtime.runtime import Runtime


@dataclass
class _Serving:
    """One loaded state: its runtime, what it was loaded from, the calls running on it."""

    runtime: Runtime
    key: tuple[Any, ...]
    calls: int = 0
    retired: bool = False


class DeviceRuntime:
    """See the module docstring. ``poll`` seconds between looks at ``state.json``;
    ``options`` go to :meth:`Runtime.load` (backend, threads, providers, …)."""

    def __init__(
        self, root: str | Path, model: str | None = None, *, poll: float = 0.5, **options: Any
    ) -> None:
        self.root = Path(root)
        self.model = model or self._only_model()
        self.options = options
        self.last_error: str | None = None
        self.swaps = 0
        self._lock = threading.Lock()  # the serving state and its call counts
        self._refreshing = threading.Lock()  # one refresh (load + swap) at a time
        self._hashes: dict[Path, tuple[tuple[int, ...], str]] = {}  # path -> (stat, sha256)
        self._serving = self._load(self._key())
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, args=(poll,), daemon=True,
                                         name=f"semedge-follow-{self.model}")  # fmt: skip
        self._watcher.start()

    def _only_model(self) -> str:
        models = sorted(p.parent.name for p in (self.root / "models").glob("*/state.json"))
        if len(models) != 1:
            have = ", ".join(models) or "none"
            raise RunnerError(f"{self.root} holds models {have}; pass model=NAME"
                              if models else f"no model installed under {self.root}; flash "
                              "one first: semedge flash")  # fmt: skip
        return models[0]

    # ------------------------------------------------------------ following

    def _key(self) -> tuple[Any, ...]:
        """What decides the weights: the running slot, its active update and delta, and the
        contents of its manifest and of those change files (a file replaced under the same
        name is a new state)."""
        mdir = self.root / "models" / self.model
        state = read_state(mdir)
        slot = state["active"]
        if slot is None:
            raise RunnerError(f"model {self.model} runs no artifact under {self.root}; flash one")
        changes = state["changes"].get(slot, {})
        named = {"update": changes.get("update"), "delta": changes.get("delta")}
        files = [mdir / slot / artifact.MANIFEST]
        files += [mdir / CHANGE_KINDS[kind] / name for kind, name in named.items() if name]
        return (slot, named["update"], named["delta"], self._contents(files))

    def _contents(self, files: list[Path]) -> tuple[str | None, ...]:
        """SHA-256 of each file (None: absent), hashed again only when its inode, size or
        mtime changed: a poll must not re-read an update package of megabytes, and the agent
        replaces a file by renaming a new one over it (a new inode), so a replacement is
        always seen. Only an in-place rewrite keeping all three would be missed; nothing on
        the device writes that way."""
        seen, fresh = self._hashes, {}
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            old = seen.get(path)
            fresh[path] = old if old and old[0] == stamp else (stamp, file_sha256(path))
        self._hashes = fresh
        return tuple(fresh[p][1] if p in fresh else None for p in files)

    def _load(self, key: tuple[Any, ...]) -> _Serving:
        slot, update, delta, _ = key
        mdir = self.root / "models" / self.model
        runtime = Runtime.load(mdir / slot, **self.options)
        try:
            for kind, name in (("update", update), ("delta", delta)):
                if name:
                    runtime.activate_delta(mdir / CHANGE_KINDS[kind] / name)
        except BaseException:
            runtime.close()
            raise
        return _Serving(runtime, key)

    def refresh(self) -> bool:
        """Load and swap in the device's current state if it changed; True if it did.

        One refresh at a time (the watcher's and a caller's never interleave, so an older
        state is never swapped in over a newer one); none after :meth:`close`."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        key = self._key()
        if key == self._serving.key or self._stop.is_set():
            return False
        new = self._load(key)
        if self._key() != key or self._stop.is_set():  # moved on while we loaded, or closed
            new.runtime.close()
            return False
        with self._lock:
            old, self._serving = self._serving, new
            old.retired = True
            idle = old.calls == 0
            self.swaps += 1
        if idle:
            old.runtime.close()
        return True

    def _watch(self, poll: float) -> None:
        while not self._stop.wait(poll):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # the watcher must outlive any bad state
                self.last_error = str(exc) if isinstance(exc, SemedgeError) else repr(exc)

    # ------------------------------------------------------------ serving

    def infer(self, inputs: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`Runtime.infer` on the state serving when the call starts."""
        with self._lock:
            if self._stop.is_set():
                raise RunnerError("this device runtime is closed; open it again: "
                                  "Runtime.open_device(root)")  # fmt: skip
            serving = self._serving
            serving.calls += 1
        try:
            return serving.runtime.infer(inputs)
        finally:
            with self._lock:
                serving.calls -= 1
                last = serving.retired and serving.calls == 0
            if last:
                serving.runtime.close()

    def info(self) -> dict[str, Any]:
        """The serving runtime's info plus the slot, update and delta it was loaded with."""
        with self._lock:  # a swap cannot retire (and close) the runtime read here meanwhile
            slot, update, delta, _ = self._serving.key
            return {**self._serving.runtime.info(), "model": self.model, "slot": slot,
                    "update": update, "delta": delta, "swaps": self.swaps,
                    "last_error": self.last_error}  # fmt: skip

    def close(self) -> None:
        """Stop following; the serving runtime closes once its running calls return."""
        self._stop.set()
        self._watcher.join()
        with self._refreshing:  # a caller's refresh in progress finishes (and swaps) first
            pass
        with self._lock:
            serving = self._serving
            serving.retired = True
            idle = serving.calls == 0
        if idle:
            serving.runtime.close()

    def __enter__(self) -> DeviceRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
