"""One ``--tiny`` demo folder per test session: ``quickstart`` first, then ``demo``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from sdk.cli import main


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> dict[str, Any]:
    """The folder, both commands' stdout, and the step files as quickstart left them."""
    out = tmp_path_factory.mktemp("demo")
    logs = {}
    for command in ("quickstart", "demo"):
        log = out / f"{command}.log"
        with open(log, "w") as f, contextlib.redirect_stdout(f):
            assert main([command, "--tiny", "--out", str(out)]) == 0
        logs[command] = log.read_text()
        if command == "quickstart":
            quickstart_steps = {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()}
    return {"out": out, "logs": logs, "quickstart_steps": quickstart_steps}


def result(out: Path, step: str) -> dict[str, Any]:
    """A step's cached result, as the report reads it."""
    saved: dict[str, Any] = json.loads((out / "steps" / f"{step}.json").read_text())
    return saved["result"]
