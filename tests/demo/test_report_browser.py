"""The demo report as a person sees it: opened in a real headless Chromium.

Chromium loads ``report.html`` from disk, a copy of the page carries a small script that
marks every image that failed to decode, the DOM after load is dumped and read back,
and a screenshot is taken (and checked to be a non-blank PNG).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--virtual-time-budget=5000",
]
MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-loaded", img.complete && img.naturalWidth > 0 ? "yes" : "no");
  }
});
</script></body>"""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_image_loads_in_a_real_browser(demo_run, tmp_path):
    out = demo_run["out"]
    page = out / "report.checked.html"  # beside report.html, so relative paths resolve
    page.write_text((out / "report.html").read_text().replace("</body>", MARK_IMAGES))
    try:
        dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    finally:
        page.unlink()
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = re.findall(r"<img [^>]*>", dom.stdout)
    assert len(images) >= 6
    assert all('data-loaded="yes"' in tag for tag in images), [
        tag for tag in images if 'data-loaded="yes"' not in tag
    ]
    assert "<table>" in dom.stdout and "semedge demo report" in dom.stdout


def test_screenshot_shows_the_report(demo_run, tmp_path):
    shot = tmp_path / "report.png"
    run = chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        (demo_run["out"] / "report.html").as_uri(),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10  # text, tables and plots, not a blank page
    kept = Path(demo_run["out"]) / "report-screenshot.png"
    shutil.copyfile(shot, kept)  # for a person to look at after a failure
