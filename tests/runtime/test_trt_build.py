"""TensorRT build decisions that need no GPU: precision per release, fp16 graph, DLA, plugins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from sdk.backends.trt.builder import (
    check_dla_request,
    fp16_graph,
    parser_graph,
    precision_settings,
    target_weights,
)
from sdk.backends.trt.plugins import PluginError, load_plugins
from sdk.build import BuildError, build


@pytest.mark.parametrize(
    ("version", "precision", "typed", "flags", "fp16"),
    [
        ("10.3.0", "fp32", False, [], False),
        ("10.3.0", "fp16", False, ["FP16"], False),
        ("10.3.0", "int8", False, ["FP16", "INT8"], False),
        ("10.11.0", "fp16", False, ["FP16"], False),
        ("10.12.0", "fp16", True, [], True),
        ("10.13.3", "int8", True, [], False),
        ("10.13.3", "fp32", True, [], False),
        ("11.0.0", "fp16", True, [], True),
    ],
)
def test_precision_comes_from_flags_before_10_12_and_from_the_graph_after(
    version, precision, typed, flags, fp16
):
    settings = precision_settings(version, precision)
    assert settings == {
        "strongly_typed": typed,
        "builder_flags": flags,
        "tf32": False,  # TF32 is cleared for every plan: fp32 means fp32
        "fp16_graph": fp16,
    }


def test_the_fp16_graph_computes_in_fp16_behind_fp32_inputs_and_outputs(checkpoint, tmp_path):
    import onnxruntime as ort

    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx

    fp32 = export_onnx(load_checkpoint(checkpoint), tmp_path / "rx.onnx", "receiver")
    fp16 = fp16_graph(fp32, tmp_path / "rx16.onnx")
    model = onnx.load(str(fp16))
    onnx.checker.check_model(model)
    floats = [i for i in model.graph.initializer if i.data_type in (1, 10)]
    assert floats and all(i.data_type == onnx.TensorProto.FLOAT16 for i in floats)
    before, after = (ort.InferenceSession(str(p)) for p in (fp32, fp16))
    assert [(i.name, i.type) for i in after.get_inputs()] == [
        (i.name, i.type) for i in before.get_inputs()
    ]
    z = np.random.default_rng(0).standard_normal((3, *before.get_inputs()[0].shape[1:]))
    feed = {before.get_inputs()[0].name: z.astype(np.float32)}
    for want, got in zip(before.run(None, feed), after.run(None, feed), strict=True):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()


@pytest.mark.parametrize(
    ("core", "precision", "available", "message"),
    [
        (0, "fp32", 2, "DLA runs fp16 and int8 layers only"),
        (2, "fp16", 2, r"this device has 2 DLA core\(s\) \(0..1\)"),
        (0, "int8", 0, "this device has 0 DLA core"),
    ],
)
def test_a_dla_build_the_device_cannot_give_is_refused(core, precision, available, message):
    with pytest.raises(BuildError, match=message) as error:
        check_dla_request(core, precision, available)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("backend", "core"), [("onnxrt", 0), ("trt", -1)])
def test_dla_core_needs_tensorrt_and_a_core_number(checkpoint, tmp_path, backend, core):
    with pytest.raises(BuildError, match="needs --backend trt and a core number"):
        build(checkpoint, tmp_path / "out", backend=backend, dla_core=core)
    assert not (tmp_path / "out").exists()


def test_plugin_libraries_are_checked(tmp_path):
    library = tmp_path / "libsemedge_plugins.so"
    library.write_bytes(b"\x7fELF truncated")
    loaded = []
    accepting = SimpleNamespace(
        get_plugin_registry=lambda: SimpleNamespace(load_library=lambda p: loaded.append(p) or p)
    )
    load_plugins(accepting, [library])
    assert loaded == [str(library)]
    refusing = SimpleNamespace(
        get_plugin_registry=lambda: SimpleNamespace(load_library=lambda p: None)
    )
    with pytest.raises(PluginError, match="TensorRT refused plugin library"):
        load_plugins(refusing, [library])
    with pytest.raises(PluginError, match="is missing"):
        load_plugins(refusing, [tmp_path / "absent.so"])


def test_a_delta_target_that_is_no_weight_is_named(checkpoint, tmp_path):
    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx

    path = export_onnx(load_checkpoint(checkpoint), tmp_path / "rx.onnx", "receiver")
    with pytest.raises(BuildError, match=r"delta target receiver\.nope is not a weight"):
        target_weights(path, ["receiver.nope"], tmp_path)


@pytest.mark.parametrize("fp16", [False, True])
def test_the_graph_tensorrt_parses_is_written_in_the_build_folder(checkpoint, tmp_path, fp16):
    """The user's folder (their .onnx) is left exactly as it was; the graph to parse lives in
    the build's work folder, with the delta targets as weights, not inputs."""
    from sdk.checkpoint import load_checkpoint
    from sdk.export import export_onnx
    from sdk.onnx_io import read_metadata

    user, work = tmp_path / "user", tmp_path / "work"
    user.mkdir()
    work.mkdir()
    onnx_path = export_onnx(load_checkpoint(checkpoint), user / "rx.onnx", "receiver",
                            delta_targets="decoder")  # fmt: skip
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    targets = read_metadata(onnx_path)["delta_targets"]
    graph = parser_graph(onnx_path, fp16, targets, work)
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before
    assert graph.parent == work
    model = onnx.load(str(graph))
    inputs = [v.name for v in model.graph.input]
    assert targets and inputs and not set(targets) & set(inputs)
    assert set(targets) <= {i.name for i in model.graph.initializer}


def test_cli_dla_core_without_tensorrt_is_one_line(checkpoint, tmp_path, capsys):
    from sdk.cli import main

    out = tmp_path / "art"
    args = ["build", str(checkpoint), "--out", str(out), "--backend", "onnxrt", "--dla-core", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dla-core 0 needs --backend trt" in err
    assert not out.exists()
