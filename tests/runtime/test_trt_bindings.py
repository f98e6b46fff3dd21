"""Every ``tensorrt`` / ``pycuda`` name the SDK uses exists in the releases it targets.

TensorRT: the pybind11 binding sources of 10.3.0 (JetPack 6) and 10.13.3 (JetPack 7) in
``shared/third_party/tensorrt/``; pycuda: its sources at the ``jetson`` extra's floor in
``shared/third_party/pycuda/<version>/`` (``src/wrapper/*.cpp``, ``pycuda/driver.py``).
The names used are read from the SDK's code by AST (:mod:`tests.runtime.binding_api`),
so a new call is checked without editing this test. Without ``shared/`` (a user's
clone) these tests skip and say so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.runtime.binding_api import (
    MODULE,
    UNKNOWN,
    Use,
    bad_calls,
    collect,
    collect_usage,
    lazy_imports,
    missing_names,
    pycuda_api,
    trt_api,
)
from tests.third_party import TENSORRT_RELEASES, shared_dir

ROOT = Path(__file__).resolve().parents[2]
SHARED = shared_dir(ROOT)
PYCUDA_FLOOR = "2025.1.2"
CODE = sorted(
    p for d in ("sdk", "kernels", "calibration", "tools") for p in (ROOT / d).rglob("*.py")
)


def _folder(*parts: str, how: str = "only CI and the project's machines have shared/") -> Path:
    folder = SHARED.joinpath("third_party", *parts)
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent ({how})")
    return folder


@pytest.fixture(scope="module", params=TENSORRT_RELEASES)
def api(request):
    return trt_api(_folder("tensorrt", request.param))


@pytest.fixture(scope="module")
def trt_uses(api):
    return collect_usage(CODE, ROOT, "tensorrt", api)


def test_the_collector_finds_the_sdk_s_tensorrt_calls(trt_uses):
    found = {(u.owner, u.member) for u in trt_uses}
    # a sample across kinds: module class, enum member, method on a resolved class, property
    assert {(MODULE, "Builder"), ("Logger", "WARNING"), ("Builder", "create_network")} <= found
    assert ("ICudaEngine", "num_io_tensors") in found
    assert any(u.member == "set_named_weights" for u in trt_uses)
    resolved = sum(u.owner != UNKNOWN for u in trt_uses)
    assert resolved >= 0.8 * len(trt_uses), "most uses should be checked against their class"


def test_every_tensorrt_name_used_exists_in_the_bindings(api, trt_uses):
    assert missing_names(trt_uses, api.has) == []


@pytest.mark.parametrize(
    "use",
    [
        Use(MODULE, "Bulider", "typo.py:1"),  # misspelled class
        Use("BuilderFlag", "FP61", "typo.py:2"),  # misspelled enum member
        Use("Builder", "create_netwrok", "typo.py:3"),  # misspelled method
        Use("ICudaEngine", "get_binding_name", "typo.py:4"),  # removed in TensorRT 10
        Use(UNKNOWN, "execute_async_v4", "typo.py:5"),  # on an unresolved object
    ],
)
def test_a_misspelled_or_removed_name_is_reported(api, use):
    assert missing_names([use], api.has) == [f"{use.owner}.{use.member} at {use.where}"]


def test_a_misspelled_call_in_source_is_found_end_to_end(api, tmp_path):
    source = tmp_path / "bad.py"
    source.write_text(
        "def build():\n"
        "    import tensorrt as trt\n"
        "    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"
        "    config.clear_flag(trt.BuilderFlag.TF23)\n"
        "    config.set_flag(getattr(trt.BuilderFlag, 'INT8'))\n"
    )
    uses = collect_usage([source], tmp_path, "tensorrt", api)
    assert missing_names(uses, api.has) == [
        "BuilderFlag.TF23 at bad.py:6",
        "BuilderFlag.<getattr> at bad.py:7",
    ]


def test_every_tensorrt_call_matches_a_bound_signature(api):
    _, calls = collect(CODE, ROOT, "tensorrt", api)
    assert bad_calls(calls, api) == []
    known = [c for c in calls if api.signatures.get((c.owner, c.member))]
    checked = [c for c in known if None not in api.signatures[(c.owner, c.member)]]
    assert len(checked) >= 0.7 * len(calls), "most calls should be checked against a signature"


def test_a_call_with_the_wrong_arguments_is_reported(api, tmp_path):
    source = tmp_path / "bad.py"
    source.write_text(
        "def build(engine):\n"
        "    import tensorrt as trt\n"
        "    logger = trt.Logger()\n"
        "    builder = trt.Builder(logger)\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_timing_cache(config.create_timing_cache(b''))\n"
        "    refitter = trt.Refitter(engine, logger)\n"
        "    refitter.set_named_weights('w', trt.Weights(), where=trt.TensorLocation.DEVICE)\n"
        "    refitter.refit_cuda_engine_async(0)\n"
    )
    _, calls = collect([source], tmp_path, "tensorrt", api)
    assert bad_calls(calls, api) == [
        "IBuilderConfig.set_timing_cache(1 positional, keywords []) at bad.py:6",
        "Refitter.set_named_weights(2 positional, keywords ['where']) at bad.py:8",
    ]


def _imports(path: Path, module: str) -> bool:
    """``import module`` or ``lazy_import("module...")`` anywhere in ``path``, by AST."""
    for node in ast.walk(ast.parse(path.read_text())):
        if lazy_imports(node, module):
            return True
        if isinstance(node, ast.Import) and any(
            alias.name.partition(".")[0] == module for alias in node.names
        ):
            return True
    return False


def test_the_lazy_importer_counts_as_an_import(api, tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text(
        "def run():\n"
        "    trt = lazy_import('tensorrt', 'a test')\n"
        "    trt.Bulider(trt.Logger(trt.Logger.WARNING))\n"
    )
    assert _imports(source, "tensorrt") and not _imports(source, "pycuda")
    uses = collect_usage([source], tmp_path, "tensorrt", api)
    assert missing_names(uses, api.has) == ["<module>.Bulider at lazy.py:3"]


def test_every_module_that_imports_tensorrt_or_pycuda_is_seen(api):
    for module in ("tensorrt", "pycuda"):
        importing = {p for p in CODE if _imports(p, module)}
        seen = {u.where.split(":")[0] for u in collect_usage(importing, ROOT, module, api)}
        assert seen == {str(p.relative_to(ROOT)) for p in importing}


def test_every_pycuda_name_used_exists_at_the_floor_version():
    how = (
        f"put github.com/inducer/pycuda tag v{PYCUDA_FLOOR}'s src/wrapper/*.cpp and "
        "pycuda/driver.py there"
    )
    names = pycuda_api(_folder("pycuda", PYCUDA_FLOOR, how=how))
    uses = collect_usage(CODE, ROOT, "pycuda", None)
    assert {(MODULE, "mem_alloc"), (MODULE, "Stream")} <= {(u.owner, u.member) for u in uses}
    assert missing_names(uses, lambda owner, member: member in names) == []
    typo = Use(MODULE, "mem_aloc", "typo.py:1")
    assert missing_names([typo], lambda owner, member: member in names) == [
        "<module>.mem_aloc at typo.py:1"
    ]
