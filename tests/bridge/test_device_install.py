"""A device install without torch: the ``agent`` extra alone runs agent, flash and Runtime.

The venv is a plain one (``--without-pip``, no system site-packages) into which exactly
the distributions that ``pip install semedge[agent]`` would install are linked from
this machine's site-packages (setup.py's BASE + AGENT and their requirements, resolved
from the installed metadata), so the test runs offline in about a second instead of a
pip install. semedge itself comes from this checkout through a ``.pth`` file.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from firmware_bridge.slots import SlotStore

ROOT = Path(__file__).resolve().parents[2]


def extra_requirements(*names: str) -> list[str]:
    """Requirement strings of setup.py's top-level lists ``names`` (read, not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            items = node.value.elts if isinstance(node.value, ast.List) else []
            found[node.targets[0].id] = [
                e.value if isinstance(e, ast.Constant) else f"*{e.value.id}"  # type: ignore[attr-defined]
                for e in items
            ]

    def expand(name: str) -> list[str]:
        return [r for e in found[name] for r in (expand(e[1:]) if e[0] == "*" else [e])]

    return [r for name in names for r in expand(name)]


def closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """Installed distributions these requirements pull in (markers for this machine)."""
    dists: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        dist = md.distribution(req.name)
        key = dist.metadata["Name"].lower()
        if key not in dists:
            dists[key] = dist
            todo += [Requirement(r) for r in dist.requires or []]
    return dists


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory):
    """A venv holding the agent extra's closure and this checkout; its python."""
    where = tmp_path_factory.mktemp("venv") / "device"
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())  # fmt: skip
    dists = closure(extra_requirements("BASE", "AGENT"))
    assert "torch" not in dists
    for dist in dists.values():
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(str(dist.locate_file(top)))
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    (site / "semedge-checkout.pth").write_text(f"{ROOT}\n")
    return python


def run_in(python: Path, code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([python, "-c", textwrap.dedent(code), *args], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_agent_extra_venv_has_no_torch_and_runs_agent_flash_runtime(
    agent_venv, onnx_build, tmp_path, relays, procs
):
    art, delta, data = onnx_build
    run_in(agent_venv, """
        import importlib.util, sys
        assert importlib.util.find_spec("torch") is None, "torch is importable"
        import sdk, sdk.runtime, firmware_bridge.agent, firmware_bridge.host, sdk.cli
        assert "torch" not in sys.modules
    """)  # fmt: skip
    relay = relays()
    root = tmp_path / "device"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"free_bytes": 10**9}))
    agent = subprocess.Popen([agent_venv, "-m", "sdk.cli", "agent", "--port", relay.agent_port,
                              "--root", str(root), "--facts", str(facts)], env=env,
                             stderr=subprocess.PIPE)  # fmt: skip
    procs.procs.append(agent)
    for path in (art, delta):
        res = subprocess.run([agent_venv, "-m", "sdk.cli", "flash", "--port", relay.host_port,
                              str(path), "--activate", "permanent"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr
    store = SlotStore(root)
    [name] = store.models()
    active = store.active_dir(name)
    flashed = sorted((store.model_dir(name) / "deltas").glob("*.delta.safetensors"))
    assert active is not None and [p.name for p in flashed] == [delta.name]
    out = run_in(agent_venv, """
        import sys, numpy as np
        from sdk import Runtime
        art, delta, data = sys.argv[1:]
        symbols, want = np.load(f"{data}/symbols.npy"), np.load(f"{data}/want.npz")
        with Runtime.load(art) as rt:
            assert rt.runner.backend == "onnxrt"
            base = rt.infer(symbols)["recon"]
            rt.activate_delta(delta)
            adapted = rt.infer(symbols)["recon"]
            rt.deactivate_delta()
            again = rt.infer(symbols)["recon"]
        assert np.allclose(base, want["base"], atol=1e-5)
        assert np.allclose(adapted, want["adapted"], atol=1e-5)
        assert not np.allclose(adapted, base) and np.array_equal(again, base)
        assert "torch" not in sys.modules
        print("ok")
    """, str(active), str(flashed[0]), str(data))  # fmt: skip
    assert out.strip() == "ok"


def test_training_command_without_the_train_extra_is_one_line(agent_venv, onnx_build, tmp_path):
    _, _, data = onnx_build
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([agent_venv, "-m", "sdk.cli", "export", str(data / "jscc"), "--out",
                          str(tmp_path / "x.onnx")], env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert "torch is not installed" in line and "semedge[train]" in line
