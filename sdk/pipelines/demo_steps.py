"""The steps of ``semedge demo`` (:mod:`sdk.pipelines.demo`): each takes the
:class:`~sdk.pipelines.demo.Demo` and returns a JSON-friendly result.

Heavy imports stay inside the steps so that ``semedge --help`` stays fast.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sdk.pipelines.demo import DOMAIN, REPORT_DB, RX_NAME, SWEEP_DB, Demo, DemoError

HEALTH_DROP_DB = 1.0
"""A build in TEST whose PSNR on the health-check images is this much below the
confirmed build's is rolled back."""

BAD_BUILD_NOISE = 4.0
MULTITASK = {
    "GAI": ("multitask", {}),
    "GAI+KEM": ("multitask-kem", {"kem_slots": 8, "kem_topk": 16}),
}
"""The two-task transmitters trained on MNIST: their folder and GAI options beyond the
common ones (KEM's L = 8 slots reading their top K = 16 tokens, as in
``tools/reproduce_multitask.py``)."""
SLF_RX = "demo-slf-rx"
SLF_DOWNLOAD = "rx.decoder.safetensors"
"""The SLF receiver on the device, and its decoder download kept beside it."""
FOLLOW_POLL_S = 0.05
"""How often the demo's apps look at the device's state (``Runtime.open_device(poll=)``)."""


def _bar(demo: Demo, step: str, stages: int) -> tqdm:
    return tqdm(total=stages, desc=f"demo {step}", unit="stage", disable=not demo.progress)


def _test_set(demo: Demo) -> Any:
    from sdk.data import load_dataset

    return load_dataset("patches", "test").spread(demo.preset.test_images)


def _train_set(demo: Demo) -> Any:
    from sdk.data import load_dataset

    train_set = load_dataset("patches", "train")
    return train_set.spread(demo.preset.train_patches) if demo.preset.train_patches else train_set


def _transceiver(demo: Demo, folder: str, seed: int, epochs: int) -> tuple[Any, list[Any]]:
    """A DeepJSCC (R = 1/6) trained on the photo patches into ``DIR/folder`` (resumed)."""
    import torch

    from sdk.models import DeepJSCC
    from sdk.train import TrainConfig, train

    torch.manual_seed(seed)
    model = DeepJSCC(bandwidth_ratio=1 / 6, hidden=demo.preset.hidden)
    config = TrainConfig(
        epochs=epochs, batch_size=32, lr=1e-3, seed=seed, data="patches", progress=demo.progress
    )
    history = train(model, _train_set(demo), config, demo.out / folder)
    return model, history


def _symbols(model: Any, images: Any, snr_db: float, channel: Any = None, seed: int = 0) -> Any:
    """What reaches the receiver: the transmitter's symbols through ``channel`` (seeded)."""
    import torch

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        return (channel or model.channel)(model.transmitter(images), snr_db)


def _device_psnr(rt: Any, symbols: Any, images: Any) -> float:
    import torch

    from sdk.evaluate import psnr

    return float(psnr(torch.from_numpy(rt.infer(symbols.numpy())["recon"]), images))


def _device(demo: Demo, step: str) -> Any:
    """The simulated device on ``demo``'s root for ``step`` (its agent logs to
    ``DIR/device-agent-STEP.log``): a context manager yielding a connected flasher."""
    from sdk.pipelines.device_sim import device_session

    return device_session(demo.device_root, demo.out / f"device-agent-{step}.log")


def active_artifact(demo: Demo) -> Path:
    """The artifact in the simulated device's active slot of the demo receiver."""
    from firmware_bridge.slots import SlotStore

    path = SlotStore(demo.device_root).active_dir(RX_NAME)
    if path is None:
        raise DemoError(f"the simulated device has no active {RX_NAME}; run the flash step")
    return path


# ---------------------------------------------------------------- 1. train


def train(demo: Demo) -> dict[str, Any]:
    """The transceiver (photos) and the two-task GAI and GAI+KEM transmitters (MNIST)."""
    from sdk.data import load_dataset
    from sdk.evaluate import Uncoded, evaluate, plot
    from sdk.train import TrainConfig, build_for_data
    from sdk.train import train as fit

    bar = _bar(demo, "train", 3)
    model, history = _transceiver(demo, "transceiver", demo.seed, demo.preset.epochs)
    bar.update()
    test_set = _test_set(demo)
    rows = evaluate(model, test_set, SWEEP_DB, label="DeepJSCC")
    rows += evaluate(Uncoded(model.channel_uses), test_set, SWEEP_DB, label="uncoded")
    sweep_png = plot(rows, demo.plots / "train_sweep.png", title="DeepJSCC vs uncoded, AWGN")
    bar.update()
    mnist = load_dataset("mnist", "train").spread(demo.preset.mnist_train)
    mnist_test = load_dataset("mnist", "test").spread(demo.preset.heldout)
    config = TrainConfig(
        epochs=demo.preset.mnist_epochs, lr=2e-3, seed=demo.seed, progress=demo.progress
    )
    multi_rows, multi = [], {}
    for label, (folder, extra) in MULTITASK.items():
        args = {"hidden": demo.preset.hidden, "bandwidth_ratio": 1 / 16, "blocks": 2, **extra}
        multitask = build_for_data("GAI", args, mnist)
        multi_history = fit(multitask, mnist, config, demo.out / folder)
        multi_rows += evaluate(multitask, mnist_test, (0.0, 10.0, 20.0), label=label)
        multi[label] = {
            "checkpoint": str(demo.out / folder),
            "parameters": sum(p.numel() for p in multitask.parameters()),
            "history": multi_history,
        }
    title = "two-task transmitters on MNIST (GAI, GAI+KEM), AWGN"
    multi_png = plot(multi_rows, demo.plots / "train_multitask.png", title=title)
    bar.update()
    bar.close()
    at = {r["model"]: r for r in rows + multi_rows if r["snr_db"] == REPORT_DB}
    return {
        "transceiver": str(demo.out / "transceiver"),
        "multitask": multi["GAI"]["checkpoint"],
        "train_patches": len(_train_set(demo)),
        "test_patches": len(test_set),
        "mnist_train": len(mnist),
        "mnist_test": len(mnist_test),
        "history": history,
        "multitask_models": multi,
        "sweep": rows,
        "multitask_sweep": multi_rows,
        "psnr_at_report_db": at["DeepJSCC"]["psnr"],
        "uncoded_at_report_db": at["uncoded"]["psnr"],
        "multitask_at_report_db": {
            label: {"psnr": at[label]["psnr"], "accuracy": at[label]["accuracy"]}
            for label in MULTITASK
        },
        "plots": [str(sweep_png), str(multi_png)],
    }


# ---------------------------------------------------------------- 2. build


def build(demo: Demo) -> dict[str, Any]:
    """The receiver artifact (fp32, deltas switchable) and INT8 builds with measured drops."""
    from sdk.artifact import read_manifest
    from sdk.build import build as make
    from sdk.runtime.compare import compare_tasks

    trained = demo.needs("train")
    bar = _bar(demo, "build", 4)
    fp32 = make(
        trained["transceiver"],
        demo.out / "artifact-rx",
        backend="auto",
        part="receiver",
        delta_targets="decoder",
        name=RX_NAME,
    )
    bar.update()
    bad = _bad_build(demo, trained["transceiver"])
    bar.update()
    int8 = {}
    for label, source, part, data in (
        ("transceiver", trained["transceiver"], "chain", "patches"),
        ("multitask", trained["multitask"], "chain", "mnist"),
    ):
        built = make(
            source,
            demo.out / f"artifact-{label}-int8",
            backend="auto",
            precision="int8",
            part=part,
            calib_data=data,
            calib_samples=demo.preset.calib_samples,
            name=f"demo-{label}-int8",
        )
        backend = read_manifest(built)["backend"]
        rows = compare_tasks(built, ["torch", backend], count=demo.preset.heldout, data=data)
        int8[label] = {
            "artifact": str(built),
            "backend": backend,
            "metrics": [
                {"metric": r.metric, "fp32": r.reference, "int8": r.value, "drop": r.drop}
                for r in rows
            ],
        }
        bar.update()
    bar.close()
    manifest = read_manifest(fp32)
    return {
        "artifact": str(fp32),
        "bad_artifact": str(bad),
        "backend": manifest["backend"],
        "files": manifest["files"],
        "int8": int8,
        "plots": [str(_plot_int8(demo, int8))],
    }


def _bad_build(demo: Demo, checkpoint: str) -> Path:
    """Version 2 of the receiver with its decoder weights corrupted (Gaussian noise of
    ``BAD_BUILD_NOISE`` times each tensor's spread): a build that must fail the device's
    health check (it stands in for any broken release)."""
    import torch

    from sdk.build import build as make
    from sdk.checkpoint import load_checkpoint, save_checkpoint

    model: Any = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(demo.seed)
    with torch.no_grad():
        for p in model.receiver.parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.add_(noise * BAD_BUILD_NOISE * p.std().clamp_min(1e-3))
    save_checkpoint(model, demo.out / "bad-build" / "checkpoint")
    return make(
        demo.out / "bad-build",
        demo.out / "artifact-rx-bad",
        backend="auto",
        part="receiver",
        delta_targets="decoder",
        name=RX_NAME,
        version="2",
    )


def _plot_int8(demo: Demo, int8: dict[str, Any]) -> Path:
    from matplotlib import pyplot as plt

    from sdk.files import save_figure
    from sdk.pipelines.report import signed

    rows = [(label, m) for label, r in int8.items() for m in r["metrics"]]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, (label, m) in zip(axes[0], rows, strict=True):
        ax.bar(["fp32", "int8"], [m["fp32"], m["int8"]], color=["C0", "C1"])
        ax.set_title(f"{label}: {m['metric']} (drop {signed(m['drop'])})", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("INT8 post-training quantization: task metric on held-out data")
    fig.tight_layout()
    return save_figure(fig, demo.plots / "build_int8.png")


# ---------------------------------------------------------------- 3. flash


def flash(demo: Demo) -> dict[str, Any]:
    """Flash, health-check and confirm; then a bad build in TEST, rolled back."""
    import shutil

    from sdk.artifact import file_sha256, read_manifest

    built = demo.needs("build")
    shutil.rmtree(demo.device_root, ignore_errors=True)  # a fresh simulated device every run
    bar = _bar(demo, "flash", 5)
    events = []
    with _device(demo, "flash") as flasher:
        start = time.perf_counter()
        installed = flasher.flash(built["artifact"], activate="test")
        seconds = time.perf_counter() - start
        wire = flasher.stats.data_wire_bytes
        bar.update()
        good = _health(demo)
        events.append(_event("flash v1 in TEST", flasher.status(), good))
        flasher.confirm()
        events.append(_event("confirm v1", flasher.status(), good))
        bar.update()
        flashed = active_artifact(demo)
        manifest = read_manifest(flashed)
        hashes = {
            name: {"manifest": entry["sha256"], "device": file_sha256(flashed / name)}
            for name, entry in manifest["files"].items()
        }
        bar.update()
        flasher.flash(built["bad_artifact"], activate="test")
        bad = _health(demo)
        events.append(_event("flash v2 (bad) in TEST", flasher.status(), bad))
        bar.update()
        rolled_back = bad < good - HEALTH_DROP_DB
        if rolled_back:
            flasher.rollback()
        status = flasher.status()
        after = _health(demo)
        events.append(_event("roll back" if rolled_back else "(kept)", status, after))
        bar.update()
    bar.close()
    model = status["models"][RX_NAME]
    return {
        "installed_slot": installed["slot"],
        "flash_seconds": seconds,
        "wire_bytes": wire,
        "artifact_bytes": sum(e["size"] for e in manifest["files"].values()),
        "sha256": hashes,
        "sha256_match": all(h["manifest"] == h["device"] for h in hashes.values()),
        "health_psnr": {"v1": good, "v2": bad, "after": after},
        "rolled_back": rolled_back,
        "active_version": read_manifest(active_artifact(demo))["model"]["version"],
        "active_confirmed": model["test"] is None,
        "events": events,
        "plots": [str(_plot_flash(demo, events))],
    }


def _health(demo: Demo) -> float:
    """PSNR of what the device runs (an app following it) on held-out images at the report
    SNR: the health check."""
    from sdk import Runtime
    from sdk.checkpoint import load_checkpoint

    model = load_checkpoint(demo.out / "transceiver")
    images = _test_set(demo).images[:64]
    with Runtime.open_device(demo.device_root, RX_NAME) as app:
        return _device_psnr(app, _symbols(model, images, REPORT_DB), images)


def _event(what: str, status: dict[str, Any], health: float) -> dict[str, Any]:
    model = status["models"][RX_NAME]
    slots = model["slots"]
    version = slots.get(model["active"], {}).get("version") if model["active"] else None
    return {
        "event": what,
        "active": model["active"],
        "version": version,
        "state": "TEST" if model["test"] else "confirmed",
        "health_psnr": health,
    }


def _plot_flash(demo: Demo, events: list[dict[str, Any]]) -> Path:
    from matplotlib import pyplot as plt

    from sdk.files import save_figure

    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = [e["event"] for e in events]
    colours = ["C3" if e["state"] == "TEST" else "C2" for e in events]
    ax.bar(range(len(events)), [e["health_psnr"] for e in events], color=colours)
    for i, e in enumerate(events):
        ax.text(i, 0.5, f"slot {e['active']}\nv{e['version']}\n{e['state']}", ha="center")
    ax.set_xticks(range(len(events)), labels, fontsize=8)
    ax.set_ylabel(f"health check PSNR @ {REPORT_DB:g} dB")
    ax.set_title("A/B slots: green = confirmed, red = on trial (TEST)")
    fig.tight_layout()
    return save_figure(fig, demo.plots / "flash_slots.png")


# ---------------------------------------------------------------- 4. channel


def channel(demo: Demo) -> dict[str, Any]:
    """The device runtime over AWGN and Rayleigh, against uncoded transmission."""
    from sdk import Runtime
    from sdk.artifact import read_manifest
    from sdk.checkpoint import load_checkpoint
    from sdk.evaluate import Uncoded, evaluate, plot
    from sdk.models.channels import AWGN, Rayleigh

    demo.needs("flash")
    model: Any = load_checkpoint(demo.out / "transceiver")
    test_set = _test_set(demo)
    images = test_set.images
    rows = []
    bar = _bar(demo, "channel", 2 * len(SWEEP_DB))
    with Runtime.open_device(demo.device_root, RX_NAME) as rt:
        for name, link in (("AWGN", AWGN()), ("Rayleigh", Rayleigh("mmse"))):
            uncoded = Uncoded(model.channel_uses, link)
            for snr in SWEEP_DB:
                value = _device_psnr(rt, _symbols(model, images, snr, link, demo.seed), images)
                rows.append({"model": f"device runtime, {name}", "snr_db": snr, "psnr": value})
                bar.update()
            for r in evaluate(uncoded, test_set, SWEEP_DB, seed=demo.seed):
                rows.append({"model": f"uncoded, {name}", "snr_db": r["snr_db"], "psnr": r["psnr"]})
    bar.close()
    backend = read_manifest(active_artifact(demo))["backend"]
    png = plot(rows, demo.plots / "channel_sweep.png", title="on-device receiver vs uncoded")
    return {"backend": backend, "rows": rows, "images": len(images), "plots": [str(png)]}


# ---------------------------------------------------------------- 5. delta


def delta(demo: Demo) -> dict[str, Any]:
    """A ZFDA delta from the device's own (hue-shifted) pictures, switched on and off."""
    import numpy as np
    import torch

    from firmware_bridge import remote
    from sdk import Runtime
    from sdk.adapt.ondevice import install_local
    from sdk.adapt.zfda import ZFDAConfig, adapt_zfda
    from sdk.checkpoint import load_checkpoint
    from sdk.data import ImageDataset, load_folder
    from sdk.data.shifts import apply_shift
    from sdk.delta import TorchDeltas, save_delta
    from sdk.evaluate import psnr

    demo.needs("flash")
    bar = _bar(demo, "delta", 4)
    model: Any = load_checkpoint(demo.out / "transceiver")
    local = _write_local_images(demo)
    pictures = torch.from_numpy(load_folder(local, tuple(model.input_shape)))
    shifted_set = ImageDataset(f"device-local@{DOMAIN}", pictures)
    bar.update()
    config = ZFDAConfig(epochs=demo.preset.zfda_epochs, seed=demo.seed, progress=demo.progress)
    trained = adapt_zfda(model, shifted_set, DOMAIN, config)
    path = save_delta(trained, demo.device_root / "local-deltas" / f"{DOMAIN}.delta.safetensors")
    bar.update()
    install_local(demo.device_root, path, model=RX_NAME)  # as `semedge adapt zfda --install`
    originals = _test_set(demo).images
    images = apply_shift(originals, DOMAIN)
    symbols = _symbols(model, images, REPORT_DB, seed=demo.seed)
    received = symbols.numpy()
    with (
        _device(demo, "delta") as flasher,
        Runtime.open_device(demo.device_root, RX_NAME, poll=FOLLOW_POLL_S) as app,
    ):
        base = app.infer(received)["recon"]
        on = functools.partial(remote.apply, flasher, path.name, RX_NAME)
        switch = {"on": _switch(app, "delta", path.name, on)}
        adapted = app.infer(received)["recon"]
        mode = app.info()["delta_mode"]
        off = functools.partial(remote.revert, flasher, "delta", RX_NAME)
        switch["off"] = _switch(app, "delta", None, off)
        restored = app.infer(received)["recon"]
    bar.update()
    with torch.no_grad():  # the torch reference of the same receiver, delta off and on
        reference = {"base": model.receiver(symbols)["recon"].numpy()}
        deltas = TorchDeltas(model)
        deltas.activate(deltas.load(path))
        reference["delta on"] = model.receiver(symbols)["recon"].numpy()
        deltas.deactivate()
    score = {
        name: float(psnr(torch.from_numpy(out), images))
        for name, out in (("base", base), ("delta on", adapted), ("delta off", restored))
    }
    sent = f"{DOMAIN} camera\n(sent)"
    exact = bool(np.array_equal(base, restored))
    outputs = {
        f"DeepJSCC output\n@ {REPORT_DB:g} dB": base,
        f"with the {DOMAIN} delta\n@ {REPORT_DB:g} dB": adapted,
        "delta off again\n" + ("(bit-exact)" if exact else "(NOT bit-exact)"): restored,
    }
    shown = {"scene\n(no shift)": originals, sent: images}
    shown |= {label: torch.from_numpy(out) for label, out in outputs.items()}
    title = f"held-out photos through a {DOMAIN}-shifted camera: outputs with their PSNR"
    grid = examples_figure(
        shown, demo.plots / "delta_examples.png", title, targets=dict.fromkeys(outputs, sent)
    )
    bar.update()
    bar.close()
    weights = sum(p.numel() for p in model.parameters())
    return {
        "delta": str(path),
        "local_images": len(pictures),
        "nnz": trained.nnz,
        "percent_of_weights": 100.0 * trained.nnz / weights,
        "delta_bytes": path.stat().st_size,
        "mode": mode,
        "switch": switch,
        "psnr": score,
        "gain_db": score["delta on"] - score["base"],
        "bit_exact": exact,
        "max_abs_diff_vs_torch": {
            "base": float(np.abs(base - reference["base"]).max()),
            "delta on": float(np.abs(adapted - reference["delta on"]).max()),
        },
        "plots": [str(grid)],
    }


def _switch(
    app: Any, kind: str, name: str | None, request: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Switch a delta/update through the agent with ``request``; returns what the agent said
    and the seconds from the request until the app following the device serves ``name``."""
    from sdk.pipelines.device_sim import wait_until_serving

    start = time.perf_counter()
    reply = request()
    wait_until_serving(app, kind, name)
    return {"agent": reply["change"], "seconds": time.perf_counter() - start}


def examples_figure(
    rows: dict[str, Any],
    path: Path,
    title: str,
    targets: dict[str, str] | None = None,
    count: int = 6,
) -> Path:
    """The report's picture of the delta at work: the first ``count`` images of each row,
    output rows captioned with their PSNR against their ``targets`` row (the one place this
    figure is drawn; quickstart and demo share it)."""
    from sdk.evaluate import image_grid

    shown = {label: images[:count] for label, images in rows.items()}
    return image_grid(shown, path, title, targets)


def _write_local_images(demo: Demo) -> Path:
    """The device's camera roll: hue-shifted training patches as PNGs in its root."""
    import numpy as np
    from PIL import Image

    from sdk.data.shifts import apply_shift

    folder = demo.device_root / "local-images"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images = apply_shift(_train_set(demo).spread(demo.preset.zfda_images).images, DOMAIN)
    pixels = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i, picture in enumerate(pixels):
        Image.fromarray(picture).save(folder / f"photo-{i:05d}.png")
    return folder


# ---------------------------------------------------------------- 6. SLF


def _digit_end(demo: Demo, tag: str, seed: int, data: Any) -> Any:
    """One end of the SLF link: a DeepJSCC (reconstruction + class) on the digits, trained
    on its own (``DIR/slf/end-TAG``, resumed) — two ends never learn the same symbols."""
    import torch

    from sdk.train import TrainConfig, build_for_data, train

    torch.manual_seed(seed)
    model = build_for_data("DeepJSCC", {"bandwidth_ratio": 1 / 8, "hidden": 16}, data)
    config = TrainConfig(
        epochs=demo.preset.slf_epochs,
        lr=3e-3,
        snr_db=(REPORT_DB, REPORT_DB),
        seed=seed,
        progress=demo.progress,
    )
    train(model, data, config, demo.out / "slf" / f"end-{tag}")
    return model


def slf(demo: Demo) -> dict[str, Any]:
    """Two transceivers trained apart are misaligned; SLF re-aligns them over the link, for
    two ℓ: the receiver runs on the device, its decoder download is pulled through the
    agent, each update is pushed back, applied with the agent's verb, measured in the app
    that follows the device, and rolled back (the app returns bit-exactly)."""
    import shutil

    from firmware_bridge import remote
    from sdk import Runtime
    from sdk.adapt.slf import load_download, save_download
    from sdk.build import build as make
    from sdk.data import load_dataset
    from sdk.pipelines.device_sim import running_weights

    bar = _bar(demo, "slf", 3 + len(demo.preset.slf_freeze))
    data, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    tx = _digit_end(demo, "tx", demo.seed + 1, data)
    rx = _digit_end(demo, "rx", demo.seed + 2, data)
    receiver = make(demo.out / "slf" / "end-rx", demo.out / "artifact-slf-rx", backend="auto",
                    part="receiver", delta_targets="decoder", name=SLF_RX)  # fmt: skip
    bar.update()
    model_dir = demo.device_root / "models" / SLF_RX
    shutil.rmtree(model_dir, ignore_errors=True)  # the receiver starts from its base each run
    with _device(demo, "slf") as flasher:
        flasher.flash(receiver, activate="permanent")
        save_download(rx, model_dir / SLF_DOWNLOAD)  # the device's side: its decoder, to share
        start, wire = time.perf_counter(), flasher.link.bytes_in
        pulled = remote.pull(flasher, SLF_DOWNLOAD, demo.out / "slf" / SLF_DOWNLOAD, model=SLF_RX)
        pull = {"bytes": int(pulled["size"]), "wire_bytes": flasher.link.bytes_in - wire,
                "seconds": time.perf_counter() - start}  # fmt: skip
        partner = load_download(pulled["dest"])
        with Runtime.open_device(demo.device_root, SLF_RX, poll=FOLLOW_POLL_S) as app:
            aligned, _ = _heard(demo, rx, app, test_set)
            misaligned, before = _heard(demo, tx, app, test_set)
            base = running_weights(flasher, SLF_RX)
            bar.update()
            runs = []
            for freeze in demo.preset.slf_freeze:
                run, adapted = _realign(demo, flasher, app, (tx, partner, data), freeze)
                scores, _ = _heard(demo, adapted, app, test_set)
                undo = functools.partial(remote.revert, flasher, "update", SLF_RX)
                run["rollback"] = _switch(app, "update", None, undo)
                run["device"] |= {"before": base, "rolled_back": running_weights(flasher, SLF_RX)}
                _, back = _heard(demo, tx, app, test_set)
                run["bit_exact_after_rollback"] = _same(before, back)
                run["seconds"] = {"pull": pull["seconds"], **run["seconds"]}
                runs.append({**scores, "download_bytes": pull["bytes"], **run})
                bar.update()
    bar.update()
    bar.close()
    return {
        "test_images": len(test_set),
        "receiver": str(receiver),
        "pull": pull,
        "aligned": aligned,
        "misaligned": misaligned,
        "runs": runs,
        "plots": [str(_plot_slf(demo, aligned, misaligned, runs))],
    }


def _realign(
    demo: Demo, flasher: Any, app: Any, sides: tuple[Any, Any, Any], freeze: int
) -> tuple[dict[str, Any], Any]:
    """SLF with ℓ = ``freeze`` against the pulled decoder; the update pushed to the device and
    applied through the agent until the app serves it. Returns its record and the adapted
    transmitter."""
    from firmware_bridge import remote
    from sdk.adapt.slf import SLFConfig, adapt_slf
    from sdk.artifact import file_sha256
    from sdk.delta import save_update
    from sdk.pipelines.device_sim import running_weights

    tx, partner, data = sides
    config = SLFConfig(
        freeze=freeze,
        steps=demo.preset.slf_steps,
        batch_size=64,
        snr_db=(REPORT_DB, REPORT_DB),
        seed=demo.seed,
        name=f"slf-l{freeze}",
        progress=demo.progress,
    )
    result = adapt_slf(tx, partner, data, config)
    path = save_update(result.update, demo.out / "slf" / f"slf-l{freeze}.update.safetensors")
    start, wire = time.perf_counter(), flasher.link.bytes_out
    flasher.flash(path, model=SLF_RX)
    push_s, push_wire = time.perf_counter() - start, flasher.link.bytes_out - wire
    apply = functools.partial(remote.apply, flasher, path.name, SLF_RX)
    applied = _switch(app, "update", path.name, apply)
    acc = result.accounting
    record = {
        "freeze": freeze,
        "tuned_layers": acc["tuned_layers"],
        "tensor_bytes": {"down": acc["download_bytes"], "up": acc["upload_bytes"]},
        "upload_bytes": path.stat().st_size,
        "upload_wire_bytes": push_wire,
        "update": str(path),
        "update_sha256": file_sha256(path),
        "seconds": {"fine_tune": acc["finetune_s"], "push": push_s, "apply": applied["seconds"]},
        "apply": applied,
        "device": {"applied": running_weights(flasher, SLF_RX)},
    }
    return record, result.transmitter


def _heard(demo: Demo, transmitter: Any, app: Any, test_set: Any) -> tuple[dict[str, float], Any]:
    """What the app on the device makes of ``transmitter``'s test digits sent at the report
    SNR: PSNR and accuracy, and its raw outputs."""
    import torch

    from sdk.evaluate import psnr

    symbols = _symbols(transmitter, test_set.images, REPORT_DB, seed=demo.seed)
    out = app.infer(symbols.numpy())
    guessed = torch.from_numpy(out["logits"]).argmax(1)
    scores = {
        "psnr": float(psnr(torch.from_numpy(out["recon"]), test_set.images)),
        "accuracy": float((guessed == test_set.labels).float().mean()),
    }
    return scores, out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two sets of runtime outputs are bit for bit the same."""
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _plot_slf(
    demo: Demo, aligned: dict[str, float], misaligned: dict[str, float], runs: list[dict[str, Any]]
) -> Path:
    from matplotlib import pyplot as plt

    from sdk.files import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    names = ["aligned", "misaligned"] + [f"SLF ℓ={r['freeze']}" for r in runs]
    colours = ["C2", "C3"] + ["C0"] * len(runs)
    for ax, metric, label, scale in (
        (axes[0], "accuracy", "accuracy (%)", 100.0),
        (axes[1], "psnr", f"PSNR (dB) @ {REPORT_DB:g} dB", 1.0),
    ):
        values = [scale * x[metric] for x in (aligned, misaligned, *runs)]
        ax.bar(names, values, color=colours)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    x = range(len(runs))
    right = axes[2]
    right.bar(
        [i - 0.2 for i in x], [r["download_bytes"] / 1e3 for r in runs], 0.4, label="down (pull)"
    )
    right.bar([i + 0.2 for i in x], [r["upload_bytes"] / 1e3 for r in runs], 0.4, label="up (push)")
    right.set_xticks(list(x), [f"ℓ={r['freeze']}" for r in runs])
    right.set_ylabel("kB over the link")
    right.set_ylim(0, 1.3 * max(r["download_bytes"] / 1e3 for r in runs))
    right.legend(loc="upper right", ncols=2)
    fig.suptitle("SLF over the link: a transmitter re-aligned with a receiver trained apart")
    fig.tight_layout()
    return save_figure(fig, demo.plots / "slf.png")


# ---------------------------------------------------------------- 7. report


def report(demo: Demo) -> dict[str, Any]:
    """``DIR/report.md`` and ``DIR/report.html`` from every cached step result."""
    from sdk.pipelines.report import write_report

    results = {s: demo.cached(s) for s in ("train", "build", "flash", "channel", "delta", "slf")}
    md, html = write_report(demo, results)
    return {"markdown": str(md), "html": str(html)}
