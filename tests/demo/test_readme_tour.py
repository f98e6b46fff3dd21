"""The README's 60-second Python tour runs as printed, on what ``semedge demo`` left."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_tour_runs_on_a_demo_folder(demo_run, tmp_path, monkeypatch, capsys):
    block = re.search(r"## The Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python tour"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(demo_run["out"])
    script = tmp_path / "tour.py"
    script.write_text(block.group(1))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script))
    psnr = float(re.search(r"PSNR ([\d.]+) dB", capsys.readouterr().out).group(1))
    assert 5 < psnr < 60
