"""``semedge build``: a checkpoint or an exported ``.onnx`` becomes a verified artifact.

Backends: ``onnxrt`` (the ONNX file itself) or ``trt`` (a serialized TensorRT plan
built on the device it will run on). ``auto`` picks ``trt`` where ``tensorrt`` imports
and a CUDA GPU is present, else ``onnxrt``.

Precision: ``fp32``; ``int8`` through explicit Q/DQ (:func:`calibration.calibrate.calibrate`:
real calibration images, a method, optional per-layer sensitivity under a drop budget;
its record goes into the manifest as ``calibration``) for both backends; ``fp16`` on
TensorRT. On TensorRT ≥ 10.12 the network is strongly typed (precision from the graph's
dtypes and Q/DQ; fp16 converts the graph), before that the FP16/INT8 builder flags are
used (:func:`sdk.backends.trt.builder.precision_settings`); TF32 is always cleared so
an fp32 plan is fp32. ONNX Runtime's CPU provider has few fp16 kernels, so an ``onnxrt``
build refuses fp16 in one line instead of quietly building fp32.

This module is the pipeline (source → ONNX → calibration → payload → manifest); the
TensorRT plan itself comes from :mod:`sdk.backends.trt.builder`, imported only for
``--backend trt``. ``BuildError`` lives in :mod:`sdk.errors` (importable from here too).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk import artifact
from sdk.errors import BuildError

BACKENDS = ("auto", "onnxrt", "trt")


def _note(message: str) -> None:
    print(f"semedge build: {message}", file=sys.stderr)


def _note_cpu_int8(onnx_path: Path) -> None:
    import onnx

    from calibration.qdq import slow_on_cpu

    slow = slow_on_cpu(onnx.load(str(onnx_path), load_external_data=False))
    if slow:
        _note(
            f"{len(slow)} int8 ConvTranspose layer(s) have no int8 kernel on ONNX Runtime's CPU "
            "provider and run as float plus Q/DQ (slower than fp32; see docs/calibration.md)"
        )


def tensorrt_usable() -> bool:
    """True where ``tensorrt`` imports and a CUDA GPU is visible."""
    facts = artifact.local_device_facts()
    return bool(facts["tensorrt_version"] and facts["compute_capability"])


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "trt" if tensorrt_usable() else "onnxrt"
    return backend


def _onnx_from(
    source: Path, work: Path, part: str, delta_targets: str | None, topk_plugin: bool
) -> tuple[Path, Any]:
    """(ONNX path, torch model or None) for a checkpoint directory or an ``.onnx`` file."""
    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx

    if source.suffix == ".onnx":
        if not source.is_file():
            raise BuildError(f"{source} does not exist; export one with: semedge export CKPT")
        return source, None
    model = load_checkpoint(source)
    path = export_onnx(
        model,  # type: ignore[arg-type]  # checkpoints hold Transceivers
        work / "model.onnx",
        part,
        topk_plugin=topk_plugin,
        delta_targets=delta_targets,
        source=str(source),
    )
    return path, model


def build(
    source: str | Path,
    out: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    part: str = "chain",
    delta_targets: str | None = None,
    topk_plugin: bool = False,
    name: str | None = None,
    version: str = "1",
    calib_data: str | None = None,
    calib_samples: int = 256,
    calib_method: str = "entropy",
    budget_db: float | None = None,
    plugins: Sequence[str | Path] = (),
    timing_cache: str | Path | None = None,
    max_batch: int = 32,
    dla_core: int | None = None,
    security_counter: int = 0,
) -> Path:
    """Build an artifact directory at ``out`` from a checkpoint or ``.onnx``; returns ``out``.

    ``dla_core`` (TensorRT on Orin): run the layers the DLA supports on that core, the
    rest on the GPU (``GPU_FALLBACK``); fp16 or int8 only. It is recorded in the
    manifest and a runtime without that core refuses the plan.

    ``security_counter`` goes into the manifest: an agent refuses an artifact whose
    counter is below the installed one, so raising it retires older (e.g. vulnerable)
    builds even though they are validly signed.
    """

    from sdk.onnx_io import io_specs, load_onnx, read_metadata

    source = Path(source)
    backend = resolve_backend(backend)
    if precision not in artifact.PRECISIONS:
        raise BuildError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if dla_core is not None and (backend != "trt" or dla_core < 0):
        raise BuildError(
            f"--dla-core {dla_core} needs --backend trt and a core number >= 0 (Orin: 0 or 1)"
        )
    if not 0 <= security_counter < 2**31:
        raise BuildError(f"security counter {security_counter} must be between 0 and 2**31 - 1")
    if precision == "fp16" and backend == "onnxrt":
        raise BuildError(
            "fp16 is a TensorRT precision (ONNX Runtime's CPU provider has few fp16 kernels); "
            "use --precision int8 or fp32 for onnxrt, or --backend trt on the device"
        )
    work = Path(tempfile.mkdtemp(prefix="semedge-build-"))
    try:
        onnx_path, _ = _onnx_from(source, work, part, delta_targets, topk_plugin)
        meta = read_metadata(onnx_path)
        if not meta:
            raise BuildError(f"{onnx_path} was not exported by semedge; use: semedge export CKPT")
        inputs, outputs = io_specs(load_onnx(onnx_path, load_external_data=False))
        calibration = None
        if precision == "int8":
            from calibration.calibrate import Settings, calibrate

            settings = Settings(calib_method, calib_data, calib_samples, budget_db=budget_db)
            result = calibrate(onnx_path, work / "model.int8.onnx", settings)
            onnx_path, calibration = result.path, result.record()
            calibration.pop("layers")
            if backend == "onnxrt":
                _note_cpu_int8(onnx_path)
        target = None
        files: dict[str, str | Path | bytes] = {}
        targets = meta["delta_targets"]
        if backend == "trt":
            from sdk.backends.trt.builder import build_plan

            files, target = build_plan(
                onnx_path,
                inputs,
                precision,
                targets,
                plugins,
                timing_cache,
                max_batch,
                dla_core,
                work,
            )
        else:
            files["model.onnx"] = onnx_path
        manifest = artifact.make_manifest(
            name=name or source.stem,
            version=version,
            security_counter=security_counter,
            model_class=meta["model_class"],
            part=meta["part"],
            base_fingerprint=meta["base_fingerprint"],
            backend=backend,
            precision=precision,
            inputs=inputs,
            outputs=outputs,
            delta_targets=meta["delta_targets"],
            target=target,
            source=meta.get("source") or str(source),
        )
        if calibration is not None:
            manifest["calibration"] = calibration
        return artifact.write_artifact(out, manifest, files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
