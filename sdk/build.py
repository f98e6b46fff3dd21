"""``semedge build``: a checkpoint or an exported ``.onnx`` becomes a verified artifact.

Backends: ``onnxrt`` (the ONNX file itself) or ``trt`` (a serialized TensorRT plan
built on the device it will run on). ``auto`` picks ``trt`` where ``tensorrt`` imports
and a CUDA GPU is present, else ``onnxrt``.

Precision: ``fp32``; ``int8`` through explicit Q/DQ (:func:`calibration.calibrate.calibrate`:
real calibration images, a method, optional per-layer sensitivity under a drop budget;
its record goes into the manifest as ``calibration``) for both backends; ``fp16`` on
TensorRT. On TensorRT ≥ 10.12 the network is strongly typed (precision from the graph's
dtypes and Q/DQ; fp16 converts the graph), before that the FP16/INT8 builder flags are
used (:func:`precision_settings`); TF32 is always cleared so an fp32 plan is fp32. ONNX
Runtime's CPU provider has few fp16 kernels, so an ``onnxrt`` build refuses fp16 in one
line instead of quietly building fp32.

The TensorRT path follows the TensorRT 10 Python API (explicit-batch network, ONNX
parser, one optimisation profile for batch 1..``max_batch``, strong typing or FP16/INT8
flags, an optional DLA core with GPU fallback, ``REFIT_INDIVIDUAL`` with the delta
targets marked refittable, a timing cache file, plugin libraries loaded into the registry
and checked); every TensorRT import is lazy.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk import artifact
from sdk.errors import SemedgeError, missing
from sdk.files import write_bytes

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
            if precision_settings(_trt().__version__, precision)["fp16_graph"]:
                onnx_path = fp16_graph(onnx_path, work / "model.fp16.onnx")
            plan, target = build_plan(
                onnx_path, inputs, precision, targets, plugins, timing_cache, max_batch, dla_core
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


# ---------------------------------------------------------------- TensorRT


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise missing(
            "tensorrt", "building TensorRT plans", "use JetPack's python3-libnvinfer"
        ) from None
    return tensorrt


def check_dla_request(dla_core: int, precision: str, available: int) -> None:
    """Refuse a DLA build this device or precision cannot give, in one line."""
    if precision == "fp32":
        raise BuildError(
            "the DLA runs fp16 and int8 layers only; add --precision fp16 (or int8) or drop "
            "--dla-core"
        )
    if not 0 <= dla_core < available:
        raise BuildError(
            f"--dla-core {dla_core}: this device has {available} DLA core(s) "
            f"{'(0..' + str(available - 1) + ')' if available else ''}; drop --dla-core to "
            "build for the GPU"
        )


def _target_weights(onnx_path: Path, targets: Sequence[str], work: Path) -> Path:
    """Base values of the delta targets (a plan cannot give them back for refitting)."""
    import onnx
    from safetensors.numpy import save_file

    inits = {i.name: i for i in onnx.load(str(onnx_path)).graph.initializer}
    absent = [n for n in targets if n not in inits]
    if absent:
        raise BuildError(
            f"delta target {absent[0]} is not a weight of {onnx_path.name} (a quantized "
            "graph must keep it as a float initializer); rebuild with other --delta-targets"
        )
    path = work / artifact.REFIT_WEIGHTS
    save_file({n: onnx.numpy_helper.to_array(inits[n]).copy() for n in targets}, str(path))
    return path


def fp16_graph(onnx_path: Path, out: Path) -> Path:
    """The graph computing in fp16 (for strongly typed TensorRT), with fp32 inputs/outputs.

    Float initializers, ``Constant`` values and ``Cast``-to-float become fp16; each fp32
    graph input is cast to fp16 on entry and each output back to fp32, so the artifact's
    I/O contract is the same as the fp32 build's. Weight inputs (delta targets) become
    fp16 inputs, so their refit values are fp16 too.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    fp32, fp16 = TensorProto.FLOAT, TensorProto.FLOAT16
    model = onnx.load(str(onnx_path))
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    for init in graph.initializer:
        if init.data_type == fp32:
            init.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name)
            )
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == fp32:
                array = numpy_helper.to_array(attr.t).astype("float16")
                attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp32:
                attr.i = fp16
    entry = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != fp32:
            continue
        if value.name in weights:
            value.type.tensor_type.elem_type = fp16
            continue
        inner = value.name + "__fp16"
        for node in graph.node:
            node.input[:] = [inner if n == value.name else n for n in node.input]
        entry.append(helper.make_node("Cast", [value.name], [inner], to=fp16))
    for value in graph.output:
        if value.type.tensor_type.elem_type != fp32:
            continue
        inner = value.name + "__fp16"
        for node in graph.node:
            node.output[:] = [inner if n == value.name else n for n in node.output]
            node.input[:] = [inner if n == value.name else n for n in node.input]
        graph.node.append(helper.make_node("Cast", [inner], [value.name], to=fp32))
    for node in reversed(entry):
        graph.node.insert(0, node)
    del graph.value_info[:]
    onnx.save(model, str(out))
    return out


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


STRONG_TYPING_FROM = (10, 12)
"""TensorRT release from which precision comes from the graph (FP16/INT8 flags deprecated)."""


class PluginError(SemedgeError):
    """A plugin library that is missing or that TensorRT refuses to load."""


def load_plugins(trt: Any, libraries: Sequence[str | Path]) -> None:
    """Load plugin libraries into TensorRT's registry; a refused one is a one-line error."""
    registry = trt.get_plugin_registry()
    for library in map(Path, libraries):
        if not library.is_file():
            raise PluginError(f"plugin library {library} is missing; copy the whole artifact")
        if registry.load_library(str(library)) is None:
            raise PluginError(
                f"TensorRT refused plugin library {library} (built for another TensorRT, CUDA "
                "or GPU?); rebuild it on this device: python -m kernels.build --plugin"
            )


def precision_settings(tensorrt_version: str, precision: str) -> dict[str, Any]:
    """How one TensorRT release builds ``precision``; recorded in the manifest's target.

    From 10.12 the network is strongly typed: the graph's dtypes and Q/DQ nodes decide
    every layer's precision (fp16: the ONNX graph is converted to fp16 first), and no
    precision flag is set (``FP16``/``INT8`` are deprecated there and gone in 11).
    Before 10.12 the ``FP16``/``INT8`` builder flags let TensorRT choose. TF32 is always
    cleared (TensorRT enables it by default), so an fp32 plan computes in fp32, as the
    manifest says.
    """
    version = tuple(int(n) for n in re.findall(r"\d+", tensorrt_version)[:2])
    strongly_typed = version >= STRONG_TYPING_FROM
    flags = []
    if not strongly_typed and precision in ("fp16", "int8"):
        flags.append("FP16")  # lets layers left unquantized in a Q/DQ graph run in fp16
    if not strongly_typed and precision == "int8":
        flags.append("INT8")
    return {
        "strongly_typed": strongly_typed,
        "builder_flags": flags,
        "tf32": False,
        "fp16_graph": strongly_typed and precision == "fp16",
    }


def build_plan(
    onnx_path: Path,
    inputs: list[dict[str, Any]],
    precision: str,
    delta_targets: Sequence[str],
    plugins: Sequence[str | Path],
    timing_cache: str | Path | None,
    max_batch: int,
    dla_core: int | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Serialized TensorRT plan for ``onnx_path`` and the manifest ``target`` it runs on."""
    trt = _trt()
    facts = artifact.local_device_facts()
    if not facts["compute_capability"]:
        raise BuildError("no CUDA GPU found; TensorRT plans are built on the device: use onnxrt")
    settings = precision_settings(trt.__version__, precision)
    logger = trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, plugins)
    builder = trt.Builder(logger)
    network_flags = 0  # TensorRT 10: networks are always explicit-batch
    if settings["strongly_typed"]:
        network_flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
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
    config.clear_flag(trt.BuilderFlag.TF32)
    flags = {"FP16": trt.BuilderFlag.FP16, "INT8": trt.BuilderFlag.INT8}
    for flag in settings["builder_flags"]:
        config.set_flag(flags[flag])
    if delta_targets:
        config.set_flag(trt.BuilderFlag.REFIT_INDIVIDUAL)
        settings["builder_flags"].append("REFIT_INDIVIDUAL")
        for name in delta_targets:
            if not network.mark_weights_refittable(name):
                raise BuildError(f"TensorRT cannot make weight {name} refittable")
    if dla_core is not None:
        check_dla_request(dla_core, precision, builder.num_DLA_cores)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        settings["builder_flags"].append("GPU_FALLBACK")
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT failed to build the plan; rerun with a smaller --max-batch")
    if cache_path:
        write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    target = {
        **{k: facts[k] for k in artifact.DEVICE_FACTS},
        "tensorrt_version": trt.__version__,
        **{k: settings[k] for k in ("builder_flags", "strongly_typed", "tf32")},
        "dla_core": dla_core,
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
