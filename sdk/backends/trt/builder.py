"""TensorRT plan builder: an exported (optionally Q/DQ) ONNX graph becomes a serialized plan.

Follows the TensorRT 10 Python API (explicit-batch network, ONNX parser, one
optimisation profile for batch 1..``max_batch``, strong typing or FP16/INT8 flags, an
optional DLA core with GPU fallback, ``REFIT_INDIVIDUAL`` with the delta targets marked
refittable, a timing cache file, plugin libraries loaded into the registry and
checked). :func:`sdk.build.build` calls it for ``--backend trt``; ``tensorrt`` is
imported lazily.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk import artifact
from sdk.backends.trt.plugins import load_plugins
from sdk.errors import BuildError, lazy_import
from sdk.files import write_bytes

PURPOSE = "building TensorRT plans"


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


def target_weights(onnx_path: Path, targets: Sequence[str], work: Path) -> Path:
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


def parser_graph(onnx_path: Path, fp16: bool, delta_targets: Sequence[str], work: Path) -> Path:
    """The ONNX file TensorRT parses, written under the build's ``work`` folder — never
    beside the user's file, which stays untouched: the graph in fp16 when ``fp16``
    (:func:`fp16_graph`), and the delta targets turned from graph inputs back into
    initializers (TensorRT refits named weights instead of taking them as inputs)."""
    import onnx

    if fp16:
        onnx_path = fp16_graph(onnx_path, work / "model.fp16.onnx")
    if not delta_targets:
        return onnx_path
    proto = onnx.load(str(onnx_path))
    keep = [v for v in proto.graph.input if v.name not in set(delta_targets)]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    out = work / "model.trt.onnx"
    onnx.save(proto, str(out))
    return out


STRONG_TYPING_FROM = (10, 12)
"""TensorRT release from which precision comes from the graph (FP16/INT8 flags deprecated)."""


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
    dla_core: int | None,
    work: Path,
) -> tuple[dict[str, str | Path | bytes], dict[str, Any]]:
    """The artifact payload of a TensorRT build and the manifest ``target`` it runs on.

    Payload: ``model.plan``, the delta targets' base values (:func:`target_weights`; a
    plan cannot give them back for refitting) and the plugin libraries. ``work`` is the
    build's scratch directory: the converted graphs go there (:func:`parser_graph`).
    """
    trt = lazy_import("tensorrt", PURPOSE)
    facts = artifact.local_device_facts()
    if not facts["compute_capability"]:
        raise BuildError("no CUDA GPU found; TensorRT plans are built on the device: use onnxrt")
    settings = precision_settings(trt.__version__, precision)
    graph = parser_graph(onnx_path, settings["fp16_graph"], delta_targets, work)
    logger = trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, plugins)
    builder = trt.Builder(logger)
    network_flags = 0  # TensorRT 10: networks are always explicit-batch
    if settings["strongly_typed"]:
        network_flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
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
    files: dict[str, str | Path | bytes] = {"model.plan": bytes(plan)}
    if delta_targets:
        files[artifact.REFIT_WEIGHTS] = target_weights(graph, delta_targets, work)
    for lib in plugins:
        files[Path(lib).name] = Path(lib)
    return files, target
