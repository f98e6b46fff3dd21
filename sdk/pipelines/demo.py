"""``semedge demo``: the whole product on one machine, step by step, with a report.

Steps (each writes ``DIR/steps/<step>.json`` and its plots under ``DIR/plots/``):

1. ``train``   a DeepJSCC (R = 1/6) on patches of the scikit-image photos, and two
               two-task transmitters (reconstruction + class) on MNIST: GAI and GAI+KEM;
2. ``build``   the receiver as an artifact (``--backend auto``: TensorRT where it is
               usable, else ONNX Runtime), plus INT8 builds of both models with their
               task drop measured on held-out data (:func:`sdk.runtime.compare.compare_tasks`);
3. ``flash``   a simulated device (agent on a pty pair, own root): flash in TEST, health
               check through the device runtime, confirm; then a bad build in TEST, its
               health check fails, roll back: the confirmed build is active again;
4. ``channel`` the runtime on the active slot's artifact over AWGN and Rayleigh (MMSE)
               across an SNR sweep, against uncoded transmission at the same bandwidth;
5. ``delta``   a hue-shifted camera: a ZFDA delta trained on PNGs in the device's root,
               switched on and off through the agent while an app follows the device
               (``Runtime.open_device``): gain, bit-exact return;
6. ``slf``     two digit transceivers (reconstruction + class) trained apart: one's
               transmitter with the other's receiver (on the device) is misaligned; SLF
               re-aligns them over the link for two values of ℓ — decoder pulled through
               the agent, update pushed, applied and rolled back through it, measured in
               the app that follows the device (accuracy, PSNR, bytes down and up, time);
7. ``report``  ``DIR/report.md`` and ``DIR/report.html``.

A step reuses its cached result when one exists for the same settings (``--only STEP``
forces it to run again; ``--fresh`` all); a step whose inputs are missing runs the steps
it needs first. A failure names the step and the command to run it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdk.errors import SemedgeError

STEPS = ("train", "build", "flash", "channel", "delta", "slf", "report")
NEEDS: dict[str, tuple[str, ...]] = {
    "train": (),
    "build": ("train",),
    "flash": ("build",),
    "channel": ("flash",),
    "delta": ("flash",),
    "slf": (),
    "report": (),
}
QUICKSTART = ("train", "build", "flash", "delta")
"""``semedge quickstart``: the demo's fast subset (no channel sweep, SLF or report)."""

SWEEP_DB = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
REPORT_DB = 10.0
DOMAIN = "hue"
RX_NAME = "demo-rx"
RESULTS_VERSION = 2
"""Bumped whenever a step's result changes shape, so older cached results are redone."""


class DemoError(SemedgeError):
    """A demo step failed; the message names the step and how to run it again."""


@dataclass(frozen=True)
class Preset:
    """Sizes of every step; ``FULL`` fits 10 minutes and ``TINY`` 1 minute on 2 cores."""

    name: str
    epochs: int
    hidden: int
    train_patches: int | None  # None = all
    test_images: int
    mnist_train: int
    mnist_epochs: int
    calib_samples: int
    heldout: int
    zfda_epochs: int
    zfda_images: int
    slf_epochs: int
    slf_steps: int
    slf_freeze: tuple[int, int]


FULL = Preset("full", 6, 32, None, 512, 6000, 2, 128, 256, 3, 2000, 8, 200, (0, 3))
TINY = Preset("tiny", 1, 8, 600, 64, 600, 1, 16, 64, 1, 200, 3, 40, (0, 3))


@dataclass
class Demo:
    """One demo folder: its settings, the cached step results, and the steps themselves."""

    out: Path
    preset: Preset = FULL
    seed: int = 0
    progress: bool = True

    # ------------------------------------------------------------ running

    def run(
        self,
        steps: Sequence[str] = (),
        force: Sequence[str] = (),
        fresh: bool = False,
        report: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run ``steps`` (default: every step) and what they need; returns their results.

        A step's cached result is reused unless the step is in ``force`` or ``fresh`` is
        set (``report`` is always rewritten); ``report(step, result)`` is called for each
        of ``steps`` as it finishes.
        """
        unknown = [s for s in dict.fromkeys([*steps, *force]) if s not in STEPS]
        if unknown:
            raise DemoError(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
        wanted = list(steps) or list(STEPS)
        needed = _closure(wanted)
        results: dict[str, dict[str, Any]] = {}
        for step in STEPS:
            if step not in needed:
                continue
            cached = self.cached(step)
            if cached is not None and not fresh and step not in force and step != "report":
                results[step] = cached
            else:
                results[step] = self._run_step(step)
            if report is not None and step in wanted:
                report(step, results[step])
        return results

    def _run_step(self, step: str) -> dict[str, Any]:
        from sdk.pipelines import demo_steps

        start = time.perf_counter()
        try:
            result = getattr(demo_steps, step)(self)
        except (SemedgeError, OSError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DemoError(
                f"demo step '{step}' failed: {first} — fix that, then run again with: "
                f"semedge demo --out {self.out} --only {step}{self.flags()}"
            ) from None
        result["seconds"] = time.perf_counter() - start
        self.save(step, result)
        return result

    def flags(self) -> str:
        """The command-line flags that select these settings (for printed commands)."""
        tiny = " --tiny" if self.preset is TINY else ""
        return tiny + (f" --seed {self.seed}" if self.seed else "")

    # ------------------------------------------------------------ cache

    def settings(self) -> dict[str, Any]:
        return {"preset": asdict(self.preset), "seed": self.seed, "version": RESULTS_VERSION}

    def step_file(self, step: str) -> Path:
        return self.out / "steps" / f"{step}.json"

    def cached(self, step: str) -> dict[str, Any] | None:
        """The saved result of ``step`` if it was made with these settings."""
        path = self.step_file(step)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if saved.get("settings") != json.loads(json.dumps(self.settings())):
            return None
        result: dict[str, Any] = saved["result"]
        return result

    def save(self, step: str, result: dict[str, Any]) -> None:
        from sdk.files import write_text

        text = json.dumps({"settings": self.settings(), "result": result}, indent=2)
        write_text(self.step_file(step), text + "\n")

    def needs(self, step: str) -> dict[str, Any]:
        """The cached result of an earlier ``step`` (run it if it is missing)."""
        return self.cached(step) or self._run_step(step)

    # ------------------------------------------------------------ places

    @property
    def plots(self) -> Path:
        path = self.out / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def device_root(self) -> Path:
        return self.out / "device"


def _closure(steps: Sequence[str]) -> set[str]:
    """``steps`` and everything they need, transitively."""
    found: set[str] = set()
    todo = list(steps)
    while todo:
        step = todo.pop()
        if step not in found:
            found.add(step)
            todo.extend(NEEDS[step])
    return found
