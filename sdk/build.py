"""``semedge build``: a checkpoint or an exported ``.onnx`` becomes a verified artifact.

Backends: ``onnxrt`` (the ONNX file itself) or ``trt`` (a serialized TensorRT plan
built on the device it will run on). ``auto`` picks ``trt`` where ``tensorrt`` imports
and a CUDA GPU is present, else ``onnxrt``.

Precision: ``fp32``; ``int8`` through explicit Q/DQ (:func:`calibration.calibrate.calibrate`:
real calibration images, a method, optional per-layer sensitivity under a drop budget;
its record goes into the manifest as ``calibration``) for both backends — TensorRT
builds the Q/DQ graph with the INT8 flag; ``fp16`` is a TensorRT builder flag. ONNX
Runtime's CPU provider has few fp16 kernels, so an ``onnxrt`` build refuses fp16 in
one line instead of quietly building fp32.

The TensorRT path follows the TensorRT 10 Python API (explicit-batch network, ONNX
parser, one optimisation profile for batch 1..``max_batch``, FP16/INT8 flags,
``REFIT_INDIVIDUAL`` with the delta targets marked refittable, a timing cache file,
plugin libraries loaded into the registry); every TensorRT import is lazy.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk import artifact
from sdk.errors import SemedgeError, missing

BACKENDS = ("auto", "onnxrt", "trt")


class BuildError(SemedgeError):
    """A model that cannot be built into an artifact."""


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
) -> Path:
    """Build an artifact directory at ``out`` from a checkpoint or ``.onnx``; returns ``out``."""
    import onnx

    from sdk.onnx_io import io_specs, read_metadata

    source = Path(source)
    backend = resolve_backend(backend)
    if precision not in artifact.PRECISIONS:
        raise BuildError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
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
        inputs, outputs = io_specs(onnx.load(str(onnx_path), load_external_data=False))
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
            plan, target = build_plan(
                onnx_path, inputs, precision, targets, plugins, timing_cache, max_batch
            )
            files["model.plan"] = plan
            if targets:
                files[artifact.REFIT_WEIGHTS] = _target_weights(onnx_path, targets, work)
            for lib in plugins:
                files[Path(lib).name] = Path(lib)
        else:
            files["model.onnx"] = onnx_path
        manifest = artifact.make_manifest(
            name=name or source.stem,
            version=version,
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


# ---------------------------------------------------------------- TensorRT


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise missing(
            "tensorrt", "building TensorRT plans", "use JetPack's python3-libnvinfer"
        ) from None
    return tensorrt


def _target_weights(onnx_path: Path, targets: Sequence[str], work: Path) -> Path:
    """Base values of the delta targets (a plan cannot give them back for refitting)."""
    import onnx
    from safetensors.numpy import save_file

    inits = {i.name: i for i in onnx.load(str(onnx_path)).graph.initializer}
    path = work / artifact.REFIT_WEIGHTS
    save_file({n: onnx.numpy_helper.to_array(inits[n]).copy() for n in targets}, str(path))
    return path


def _strip_weight_inputs(onnx_path: Path, targets: Sequence[str]) -> Path:
    """TensorRT refits named weights instead: turn overridable initializers back into constants."""
    import onnx

    if not targets:
        return onnx_path
    proto = onnx.load(str(onnx_path))
    keep = [v for v in proto.graph.input if v.name not in set(targets)]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    out = onnx_path.with_name(onnx_path.stem + ".trt.onnx")
    onnx.save(proto, str(out))
    return out


def build_plan(
    onnx_path: Path,
    inputs: list[dict[str, Any]],
    precision: str,
    delta_targets: Sequence[str],
    plugins: Sequence[str | Path],
    timing_cache: str | Path | None,
    max_batch: int,
) -> tuple[bytes, dict[str, Any]]:
    """Serialized TensorRT plan for ``onnx_path`` and the manifest ``target`` it runs on."""
    trt = _trt()
    facts = artifact.local_device_facts()
    if not facts["compute_capability"]:
        raise BuildError("no CUDA GPU found; TensorRT plans are built on the device: use onnxrt")
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    for lib in plugins:
        registry.load_library(str(lib))
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(_strip_weight_inputs(onnx_path, delta_targets))):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for spec in inputs:
        rest = tuple(spec["shape"][1:])
        profile.set_shape(spec["name"], (1, *rest), (1, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    flags = []
    if precision in ("fp16", "int8"):
        flags.append("FP16")  # lets layers left unquantized in a Q/DQ graph run in fp16
    if precision == "int8":
        flags.append("INT8")
    if delta_targets:
        flags.append("REFIT_INDIVIDUAL")
        for name in delta_targets:
            if not network.mark_weights_refittable(name):
                raise BuildError(f"TensorRT cannot make weight {name} refittable")
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT failed to build the plan; rerun with a smaller --max-batch")
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    target = {
        **{k: facts[k] for k in artifact.DEVICE_FACTS},
        "tensorrt_version": trt.__version__,
        "builder_flags": flags,
        "max_batch": max_batch,
        "plugins": [
            {
                "name": "TopKMemory",
                "version": "1",
                "namespace": "semedge",
                "file": Path(lib).name,
                "sha256": artifact.file_sha256(lib),
            }
            for lib in plugins
        ],
    }
    return bytes(plan), target
