"""``calibrate``: an exported float ONNX model -> an INT8 Q/DQ model, start to finish.

1. Check the model (one data input, semedge metadata) and read calibration samples
   (``data``: a dataset name or a folder; the train split) shaped for its part.
2. Collect activation ranges with ``method`` — or take them from the cache when the
   same model, data, method and settings were calibrated before.
3. Quantize (Conv/ConvTranspose/MatMul/Gemm; symmetric int8; per-channel weights),
   keeping in float the ``exclude`` patterns and, unless ``keep_heads`` is False,
   the output heads (the last layer before each output: final activations, power
   normalisation).
4. With a budget, per-layer sensitivity on the val split moves the worst layers to
   float until the PSNR/accuracy drop fits (:mod:`calibration.sensitivity`).
5. Delta targets (weights the export left as graph inputs) come back as float inputs
   feeding QuantizeLinear (:mod:`calibration.refittable`), so deltas still switch.

The output keeps the input's ``semedge.*`` metadata and adds ``semedge.calibration``
(method, settings, data, cache key, excluded layers, measured drop), which
``semedge build`` copies into the artifact manifest.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from calibration import cache
from calibration.errors import CalibrationError, first_line
from calibration.inputs import DEFAULT_SNRS, model_data
from calibration.methods import DEFAULT_METHOD, PERCENTILE, calibrator_settings
from calibration.qdq import check_symmetric, output_heads, quantizable_nodes, quantize
from calibration.reader import batch_reader
from calibration.refittable import float_targets
from calibration.sensitivity import Budget, sensitivity
from sdk.files import write_bytes
from sdk.onnx_io import META_PREFIX, read_metadata

RANGE_SETTINGS = ("method", "data", "samples", "percentile", "snrs")
"""The settings that decide the activation ranges: the cache key's settings."""

CALIBRATION_KEY = "calibration"
"""Metadata key (``semedge.calibration``) and manifest key of the calibration record."""


@dataclass
class Settings:
    """Everything that decides a calibration (all of it goes into the cache key)."""

    method: str = DEFAULT_METHOD
    data: str | None = None
    samples: int = 256
    batch: int = 16
    percentile: float = PERCENTILE
    snrs: tuple[float, ...] = DEFAULT_SNRS
    exclude: tuple[str, ...] = ()
    keep_heads: bool = True
    budget_db: float | None = None
    budget_points: float = 1.0
    heldout: int = 256


@dataclass
class Result:
    """What :func:`calibrate` did: the record that goes into metadata and manifest."""

    path: Path
    method: str
    cache_key: str
    cache_hit: bool
    excluded: list[str]
    settings: dict[str, Any]
    fp32: dict[str, float] = field(default_factory=dict)
    int8: dict[str, float] = field(default_factory=dict)
    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out


def _data_input(model: onnx.ModelProto, path: Path) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    data = [v for v in model.graph.input if v.name not in inits]
    if len(data) != 1:
        raise CalibrationError(
            f"{path} has {len(data)} data inputs; calibration needs a model with exactly one "
            "(export one with: semedge export CKPT --part receiver|transmitter|chain)"
        )
    return data[0]


def _excluded(model: onnx.ModelProto, settings: Settings) -> list[str]:
    """Node names matching the exclude patterns (by node name or by weight name), plus heads."""
    nodes = quantizable_nodes(model)
    chosen = set(output_heads(model)) if settings.keep_heads else set()
    weights = {n.name: list(n.input[1:]) for n in model.graph.node if n.name in nodes}
    for pattern in settings.exclude:
        hits = [
            n
            for n in nodes
            if fnmatch.fnmatch(n, pattern) or any(fnmatch.fnmatch(w, pattern) for w in weights[n])
        ]
        if not hits:
            raise CalibrationError(
                f"--exclude {pattern!r} matches no quantizable layer; layers are e.g. {nodes[:2]}"
            )
        chosen.update(hits)
    return [n for n in nodes if n in chosen]


def _prepare(model: onnx.ModelProto, work: Path) -> Path:
    """The float model with weight inputs turned into constants, shape-inferred for ORT."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inits = {i.name for i in model.graph.initializer}
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    keep = [v for v in proto.graph.input if v.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    constant = work / "fp32.onnx"
    onnx.save(proto, str(constant))
    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(constant), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises untyped errors
        raise CalibrationError(
            f"cannot prepare the model for quantization: {first_line(exc)}"
        ) from None
    return prepared


def calibrate(
    model_path: str | Path, out: str | Path, settings: Settings | None = None, show: bool = True
) -> Result:
    """Write an INT8 Q/DQ version of ``model_path`` to ``out`` (module docstring)."""
    settings = settings or Settings()
    model_path, out = Path(model_path), Path(out)
    calibrator_settings(settings.method, settings.percentile)  # unknown method: fail first
    if settings.samples < 1 or settings.heldout < 1:
        raise CalibrationError("--samples and --heldout must be at least 1")
    if (settings.budget_db is not None and settings.budget_db < 0) or settings.budget_points < 0:
        raise CalibrationError("drop budgets must be >= 0 (dB for PSNR, points for accuracy)")
    if not model_path.is_file():
        raise CalibrationError(f"{model_path} does not exist; export one with: semedge export CKPT")
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise CalibrationError(f"{model_path} is not an ONNX model ({first_line(exc)})") from None
    meta = read_metadata(model)
    spec = _data_input(model, model_path)
    dims = [d.dim_value for d in spec.type.tensor_type.shape.dim][1:]
    targets = [v.name for v in model.graph.input if v.name != spec.name]
    samples = model_data(
        meta, spec.name, tuple(dims), settings.data, settings.samples, "train", settings.snrs
    )
    key_settings = {k: v for k, v in asdict(settings).items() if k in RANGE_SETTINGS}
    key = cache.cache_key(model.SerializeToString(), samples.inputs, settings.method, key_settings)
    ranges = cache.ranges_path(key)
    hit = ranges.is_file()
    work = Path(tempfile.mkdtemp(prefix="semedge-calib-"))
    try:
        prepared = _prepare(model, work)
        prepared_model = onnx.load(str(prepared))
        excluded = _excluded(prepared_model, settings)
        if not hit:
            fresh = work / "ranges.json"
            reader = batch_reader(spec.name, samples.inputs, settings.batch, show)
            quantize(prepared, work / "q.onnx", settings.method, fresh, reader, excluded)
            ranges = cache.store(fresh, key)

        def quantizer(path: Path, exclude: Sequence[str], only: Sequence[str]) -> Path:
            return quantize(prepared, path, settings.method, ranges, None, exclude, only)

        result = Result(out, settings.method, key, hit, excluded, asdict(settings))
        if settings.budget_db is not None:
            heldout = model_data(
                meta, spec.name, tuple(dims), settings.data, settings.heldout, "val", settings.snrs
            )
            found = sensitivity(
                prepared,
                quantizer,
                quantizable_nodes(prepared_model),
                excluded,
                heldout,
                Budget(settings.budget_db, settings.budget_points),
                work,
                show,
            )
            result.excluded, result.fp32, result.int8 = found.excluded, found.fp32, found.int8
            result.layers = found.layers
        quantized = onnx.load(str(quantizer(work / "final.onnx", result.excluded, [])))
        quantized = float_targets(quantized, model, targets)
        check_symmetric(quantized)
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(model.metadata_props)
        quantized.metadata_props.add(
            key=META_PREFIX + CALIBRATION_KEY, value=json.dumps(result.record())
        )
        write_bytes(out, quantized.SerializeToString())
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
