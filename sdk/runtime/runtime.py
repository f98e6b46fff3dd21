"""``sdk.Runtime``: the one entry point an edge application uses.

``Runtime.load(source)`` accepts an artifact (directory or ``.tar``; verified against
its manifest and checked against this device), a bare ``.onnx`` file, or a
checkpoint directory (torch reference; ``backend="onnxrt"`` exports it first). Then
``infer(dict or array)`` runs it, ``activate(path or name)`` / ``deactivate()`` switch ZFDA
deltas and SLF updates (base weights restored bit-exactly), with the other verbs of
:class:`sdk.delta.Adapters` (``load_change`` for ``load``, ``disabled()``, ``list``,
``unload``, ``merge``); ``info()`` says what is loaded.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge.slots import change_counter
from sdk import artifact
from sdk.artifact import ArtifactError, ArtifactIncompatibleError
from sdk.runtime import trust
from sdk.runtime.base import BaseRunner, InputError, RunnerError

if TYPE_CHECKING:
    from sdk.delta import Adapters, WeightChange
    from sdk.runtime.device import DeviceRuntime

BACKENDS = ("torch", "onnxrt", "trt")
PAYLOAD = {"onnxrt": "model.onnx", "trt": "model.plan"}


class DeltaTargetError(RunnerError):
    """A delta touching weights this artifact cannot switch."""


def _is_artifact(path: Path) -> bool:
    """A directory with a manifest, or a ``.tar`` (what ``semedge build``/``pack`` write)."""
    return (path / artifact.MANIFEST).is_file() if path.is_dir() else path.suffix == ".tar"


def _is_checkpoint(path: Path) -> bool:
    from sdk.checkpoint import CONFIG, resolve

    return (resolve(path) / CONFIG).is_file()


@dataclass
class _LoadedFile:
    """A change file the runtime loaded: its name there, kind, where it was last loaded
    from and its security counter (0 where no counter is checked)."""

    name: str
    kind: str
    path: Path
    counter: int


class Runtime:
    """A loaded model on one backend; see the module docstring."""

    def __init__(
        self,
        runner: BaseRunner,
        manifest: dict[str, Any] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self._runner = runner
        self._closed = False
        self.manifest = manifest
        self._prepared: dict[str, _LoadedFile] = {}  # by the file's SHA-256
        self._adapter_set: Adapters | None = None
        self.last_switch_ms: float | None = None
        self.trusted_key: bytes | None = None
        self.device_slot: Path | None = None
        self._cleanup = weakref.finalize(
            self, shutil.rmtree, str(workdir) if workdir else "", ignore_errors=True
        )
        if workdir is None:
            self._cleanup.detach()

    # ------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        source: str | Path,
        backend: str | None = None,
        part: str = "chain",
        delta_mode: str | None = None,
        delta_targets: str | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
        trusted_key: str | Path | None = None,
    ) -> Runtime:
        """Load an artifact, an ``.onnx`` file or a checkpoint (see the module docstring).

        ``backend`` defaults to the artifact's (``torch`` for a checkpoint, ``onnxrt`` for
        an ``.onnx``); ``part``/``delta_targets`` apply when exporting a checkpoint;
        ``delta_mode`` overrides the ONNX Runtime switching rule (``sdk.backends.onnxrt.runner``).
        Where the device trusts a key (``trusted_key``, ``$SEMEDGE_TRUSTED_KEY`` or
        ``/etc/semedge/trusted.pub``), only signed artifacts and delta files load
        (:mod:`sdk.runtime.trust`).
        """
        if backend is not None and backend not in BACKENDS:
            raise RunnerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(source)
        key = trust.device_key(trusted_key)
        if key is not None and path.exists() and not _is_artifact(path):
            trust.refuse_unsigned_source(path, key)
        rt = cls._load(path, backend, part, delta_mode, delta_targets, threads, providers, key)
        rt.trusted_key, rt.device_slot = key, trust.device_slot(path)
        return rt

    @classmethod
    def _load(
        cls,
        path: Path,
        backend: str | None,
        part: str,
        delta_mode: str | None,
        delta_targets: str | None,
        threads: int | None,
        providers: list[str] | None,
        key: bytes | None,
    ) -> Runtime:
        if _is_checkpoint(path):
            return cls._from_checkpoint(
                path, backend or "torch", part, delta_mode, delta_targets, threads, providers
            )
        if path.suffix == ".onnx" and path.is_file():
            if backend not in (None, "onnxrt"):
                raise RunnerError(
                    f"{path} is an ONNX file; for {backend} build an artifact first: "
                    f"semedge build {path} --backend {backend} --out DIR"
                )
            return cls._start(cls._onnxrt(path, None, delta_mode, threads, providers))
        trust.require_signed(path, key, "artifact")
        return cls._from_artifact(path, backend, delta_mode, threads, providers)

    @staticmethod
    def open_device(
        root: str | Path, model: str | None = None, *, poll: float = 0.5, **options: Any
    ) -> DeviceRuntime:
        """Serve the device's running build of ``model`` (default: the only one) under the
        agent root ``root``, with its active update and delta, following every change the
        agent makes (``sdk.runtime.device``); ``options`` as for :meth:`load`."""
        from sdk.runtime.device import DeviceRuntime

        return DeviceRuntime(root, model, poll=poll, **options)

    @classmethod
    def _start(
        cls, runner: BaseRunner, manifest: dict[str, Any] | None = None, workdir: Path | None = None
    ) -> Runtime:
        try:
            runner.activate()
        except BaseException:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(runner, manifest, workdir)

    @staticmethod
    def _onnxrt(
        path: Path,
        fingerprint: str | None,
        delta_mode: str | None,
        threads: int | None,
        providers: list[str] | None,
    ) -> BaseRunner:
        from sdk.backends.onnxrt.runner import OnnxrtRunner

        return OnnxrtRunner(path, fingerprint, delta_mode, providers, threads)

    @classmethod
    def _from_checkpoint(
        cls,
        path: Path,
        backend: str,
        part: str,
        delta_mode: str | None,
        delta_targets: str | None,
        threads: int | None,
        providers: list[str] | None,
    ) -> Runtime:
        if backend == "torch":
            from sdk.backends.torch.runner import TorchRunner

            return cls._start(TorchRunner(path, part))
        if backend == "trt":
            raise RunnerError(
                f"TensorRT runs built plans; build one first: semedge build {path} "
                "--backend trt --out DIR"
            )
        from sdk.checkpoint import load_checkpoint
        from sdk.export import export_onnx

        workdir = Path(tempfile.mkdtemp(prefix="semedge-runtime-"))
        try:
            model = load_checkpoint(path)
            onnx_path = export_onnx(
                model,  # type: ignore[arg-type]  # checkpoints hold Transceivers
                workdir / "model.onnx",
                part,
                delta_targets=delta_targets,
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls._start(
            cls._onnxrt(onnx_path, None, delta_mode, threads, providers), None, workdir
        )

    @classmethod
    def _from_artifact(
        cls,
        path: Path,
        backend: str | None,
        delta_mode: str | None,
        threads: int | None,
        providers: list[str] | None,
    ) -> Runtime:
        workdir = None
        if path.is_file():
            workdir = Path(tempfile.mkdtemp(prefix="semedge-artifact-"))
            try:
                artifact.extract(path, workdir)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            directory = workdir
        else:
            directory = path
        manifest = artifact.verify_artifact(directory)
        built = manifest["backend"]
        if backend not in (None, built):
            raise ArtifactIncompatibleError(
                f"{path} is a {built} artifact, not {backend}; build one with: "
                f"semedge build {manifest['model'].get('source') or 'CKPT'} --backend {backend}"
                " --out DIR"
            )
        artifact.check_compatible(manifest, artifact.local_device_facts())
        payload = directory / PAYLOAD[built]
        if PAYLOAD[built] not in manifest["files"]:
            raise ArtifactError(f"{path} lists no {PAYLOAD[built]}; rebuild it with: semedge build")
        runner: BaseRunner
        if built == "onnxrt":
            runner = cls._onnxrt(
                payload, manifest["base_fingerprint"], delta_mode, threads, providers
            )
        else:
            from sdk.backends.trt.runner import TrtRunner

            runner = TrtRunner(payload, manifest, directory)
        rt = cls._start(runner, manifest, workdir)
        rt._check_io(path)
        return rt

    def _check_io(self, path: Path) -> None:
        assert self.manifest is not None
        have = [s.name for s in self.runner.get_input_metadata()]
        want = [s["name"] for s in self.manifest["inputs"]]
        if have != want:
            self.close()
            raise ArtifactError(
                f"{path}: the model takes inputs {have} but the manifest lists {want}; "
                "rebuild the artifact with: semedge build"
            )

    # ------------------------------------------------------------ inference
    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.runner.get_input_metadata()]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.runner.get_output_metadata()]

    def infer(self, inputs: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """Run the model: a dict of named inputs, or one array for a single-input model."""
        if not isinstance(inputs, Mapping):
            specs = self.runner.get_input_metadata()
            if len(specs) != 1:
                raise InputError(
                    f"this model takes {len(specs)} inputs; pass a dict with "
                    f"{', '.join(s.name for s in specs)}"
                )
            inputs = {specs[0].name: inputs}
        return self.runner.infer(inputs)

    # ------------------------------------------------------------ deltas and updates
    @property
    def delta_mode(self) -> str | None:
        return self.runner.delta_mode

    def _adapters(self) -> Adapters:
        if self._adapter_set is None:
            self._adapter_set = self.runner.adapters()
        return self._adapter_set

    def load_change(self, source: str | Path | WeightChange, name: str | None = None) -> str:
        """Validate a delta or update against this model and register it; returns its name.

        :meth:`Adapters.load <sdk.delta.Adapters.load>` under another name (``Runtime.load``
        loads the model). A file is read once: its signature (where the device trusts a key)
        is checked against those bytes, the change parsed from them, and it is known by their
        SHA-256 — the same bytes loaded twice, under any file name, are one change (its name
        again); a file changed in place is a new one. Where the device trusts a key and this
        model is an agent's slot, a file whose security counter is below the highest the
        agent installed for it is refused (:func:`sdk.runtime.trust.refuse_downgrade`).
        """
        from sdk.delta import UPDATE_SUFFIX, Delta, Update, load_change, read_change_file

        adapters = self._adapters()
        if isinstance(source, Delta | Update):  # from this process (on-device adaptation)
            return adapters.name_of(source) or self._register(source, name, str(id(source)))
        path = Path(source)
        data = read_change_file(path)
        digest = hashlib.sha256(data).digest()
        kind = "update" if path.name.endswith(UPDATE_SUFFIX) else "delta"
        trust.require_signed(path, self.trusted_key, kind, digest)
        key = digest.hex()
        known = self._prepared.get(key)
        if known is None:
            change = load_change(path, data)
            counted = self.trusted_key is not None and self.device_slot is not None
            counter = change_counter(change.extra, path.name) if counted else 0
            known = _LoadedFile("", kind, path, counter)
            self._check_floor(known)
            known.name = self._register(change, name, key[:12])
            self._prepared[key] = known
        known.path = path
        self._check_floor(known)
        return known.name

    def _check_floor(self, loaded: _LoadedFile) -> None:
        """The replay rule (:func:`sdk.runtime.trust.refuse_downgrade`), checked afresh at
        every activation of a file, by path or by name."""
        trust.refuse_downgrade(
            loaded.path, self.trusted_key, loaded.kind, loaded.counter, self.device_slot
        )

    def _register(self, change: WeightChange, name: str | None, tag: str) -> str:
        """Load ``change`` into the adapters, as ``NAME@tag`` if its own name is taken."""
        adapters = self._adapters()
        foreign = sorted(set(change.entries) - set(adapters.core.shapes))
        if foreign:
            manifest = self.manifest or {}
            source_name = manifest.get("model", {}).get("source") or "CKPT"
            precision = manifest.get("precision", "fp32")
            keep = f" --precision {precision}" if precision != "fp32" else ""
            raise DeltaTargetError(
                f"{change.kind} {change.name!r} changes {foreign[0]}, which this "
                f"{self.runner.backend} model cannot switch (delta mode {self.delta_mode}); "
                f"rebuild it exposing those tensors: semedge build {source_name}{keep} "
                "--delta-targets decoder --out DIR"
            )
        if name is None and change.name in adapters.list():
            name = f"{change.name}@{tag}"
        return adapters.load(change, name)

    def _name(self, source: str | Path | WeightChange) -> str:
        if isinstance(source, str) and source in self._adapters().list():
            for loaded in self._prepared.values():
                if loaded.name == source:
                    self._check_floor(loaded)
            return source
        return self.load_change(source)

    def activate(self, source: str | Path | WeightChange) -> None:
        """Activate a loaded change by name, or load (validate) and activate a file or change.

        A delta replaces the active delta, an update the active update; a delta and an
        update may be active together only when they change different tensors. On any
        error nothing changes.
        """
        name = self._name(source)
        start = time.perf_counter()
        self._adapters().activate(name)
        self.last_switch_ms = (time.perf_counter() - start) * 1e3

    def deactivate(self, name: str | None = None) -> None:
        """Back to the base weights (bit-exactly) for change ``name``, or for all of them."""
        start = time.perf_counter()
        self._adapters().deactivate(name)
        self.last_switch_ms = (time.perf_counter() - start) * 1e3

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run a block on the base weights, then re-activate whatever was active."""
        with self._adapters().disabled():
            yield

    @property
    def active(self) -> list[str]:
        """Names of the active deltas and updates."""
        if self.runner.delta_mode is None:
            return []
        try:
            return self._adapters().active_names
        except RunnerError:
            return []

    def list(self) -> list[str]:
        """Names of the loaded deltas and updates."""
        return self._adapters().list() if self.delta_mode else []

    def unload(self, name: str) -> None:
        """Forget a change (restoring its base weights first if it is active)."""
        self._adapters().unload(name)
        self._prepared = {k: v for k, v in self._prepared.items() if v.name != name}

    def merge(self, out: str | Path) -> str:
        """Bake the active changes into a new checkpoint at ``out``; returns its fingerprint.

        Only where the whole model is at hand (the torch backend); elsewhere merge the
        checkpoint instead: ``semedge update apply CKPT PKG --out DIR``.
        """
        from sdk.delta import TorchDeltas

        adapters = self._adapters()
        if not isinstance(adapters, TorchDeltas):
            raise RunnerError(
                f"the {self.runner.backend} runtime holds no checkpoint to merge into; merge on "
                "the checkpoint: semedge update apply CKPT PKG --out DIR"
            )
        return adapters.merge(out)

    def preload_delta(self, source: str | Path | WeightChange) -> None:
        """Validate and prepare a change ahead of time, so the first switch to it is fast.

        In the ONNX Runtime ``rebuild`` mode this also builds its session (briefly
        activating it); what was active before is active again afterwards.
        """
        name = self._name(source)
        if self.delta_mode != "rebuild":
            return
        adapters = self._adapters()
        with adapters.disabled():
            adapters.activate(name)

    def activate_delta(self, source: str | Path | WeightChange) -> None:
        """Switch to the domain delta (or update) ``source``; see :meth:`activate`."""
        self.activate(source)

    def deactivate_delta(self) -> None:
        """Back to the base weights of whatever delta is active, bit-exactly."""
        start = time.perf_counter()
        from sdk.delta import KIND

        self._adapters().deactivate(kind=KIND)
        self.last_switch_ms = (time.perf_counter() - start) * 1e3

    @property
    def active_delta(self) -> str | None:
        """Domain of the active delta, or None."""
        if self.runner.delta_mode is None:
            return None
        try:
            return self._adapters().core.active
        except RunnerError:
            return None

    # ------------------------------------------------------------ info / lifetime
    def info(self) -> dict[str, Any]:
        """Backend, I/O, delta mode and state, and the manifest summary when loaded from one."""
        out: dict[str, Any] = {
            "backend": self.runner.backend,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "delta_mode": self.delta_mode,
            "active_delta": self.active_delta,
            "active": self.active,
            "last_switch_ms": self.last_switch_ms,
        }
        if self.manifest is not None:
            out["artifact"] = artifact.describe(self.manifest)
            out["base_fingerprint"] = self.manifest["base_fingerprint"]
            out["precision"] = self.manifest["precision"]
            out["target"] = self.manifest.get("target")
        return out

    @property
    def runner(self) -> BaseRunner:
        """The backend runner; a closed Runtime says how to get a working one again."""
        if self._closed:
            raise RunnerError(
                "this Runtime is closed; load the model again with Runtime.load(...) (or keep "
                "using it inside its `with` block)"
            )
        return self._runner

    def close(self) -> None:
        """Release the backend and any extracted files; safe to call twice."""
        self._runner.deactivate()
        self._cleanup()
        self._closed = True

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
