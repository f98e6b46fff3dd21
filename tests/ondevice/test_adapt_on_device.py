"""On-device adaptation: ``semedge adapt zfda|slf --data DIR`` on a folder of the user's
images, the result installed into a device root (and switched on) the way the agent
would, and bad folders refused in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdk import Runtime
from sdk.cli import main
from sdk.data import DataError, sample_set

from .conftest import write_frames


def test_a_folder_is_centre_cropped_to_the_model_shape(tmp_path):
    """A wide frame whose outer quarters are red keeps only its centre: not stretched."""
    from PIL import Image

    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :20, 0] = wide[:, 60:, 0] = 255
    wide[:, 20:60, 2] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.save(tmp_path / "tall.npy", np.full((3, 70, 35), 0.25, np.float32))
    got = sample_set((3, 16, 16), str(tmp_path), "train").images.numpy()
    assert got.shape == (2, 3, 16, 16)  # sorted: tall.npy, wide.png
    np.testing.assert_allclose(got[0], 0.25, atol=1e-6)
    assert got[1, 0].max() < 0.01 and got[1, 2].min() > 0.99  # only the blue centre


def test_mnist_digits_as_png_read_back_as_the_digits(tmp_path):
    from PIL import Image

    digits = sample_set((1, 28, 28), "mnist", "test").images[:5].numpy()
    for i, d in enumerate(digits):
        Image.fromarray((d[0] * 255).round().astype(np.uint8)).save(tmp_path / f"{i}.png")
    got = sample_set((1, 28, 28), str(tmp_path), "val").images.numpy()
    np.testing.assert_allclose(got, digits, atol=1 / 255 + 1e-6)


def test_split_subfolders_are_used_when_present(tmp_path):
    write_frames(tmp_path / "train", count=4)
    write_frames(tmp_path / "val", count=2)
    assert len(sample_set((3, 32, 32), str(tmp_path), "train")) == 4
    assert len(sample_set((3, 32, 32), str(tmp_path), "val")) == 2
    with pytest.raises(DataError, match="holds no"):  # test/ absent: the folder itself
        sample_set((3, 32, 32), str(tmp_path), "test")


def test_zfda_on_frames_is_installed_and_switched_on(device, fresh_root, tmp_path, capsys):
    ckpt, _ = device
    frames = write_frames(tmp_path / "camera2")
    out = tmp_path / "camera2.delta.safetensors"
    argv = ["adapt", "zfda", str(ckpt), "--data", str(frames), "--epochs", "2", "--batch-size",
            "4", "--out", str(out), "--install", str(fresh_root), "--activate"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "domain camera2" in said and "delta camera2.delta.safetensors active on" in said
    state = json.loads((fresh_root / "models/jscc/state.json").read_text())
    assert state["changes"]["A"]["delta"] == out.name
    assert (fresh_root / "models/jscc/deltas" / out.name).read_bytes() == out.read_bytes()
    with Runtime.open_device(fresh_root) as app, Runtime.load(ckpt, part="receiver") as ref:
        x = np.random.default_rng(0).normal(size=(2, *app.info()["inputs"][0]["shape"][1:]))
        x = x.astype(np.float32)
        base = ref.infer(x)
        ref.activate_delta(out)
        adapted = ref.infer(x)
        served = app.infer(x)
    name = next(iter(served))
    np.testing.assert_allclose(served[name], adapted[name], rtol=1e-4, atol=1e-5)
    assert np.abs(served[name] - base[name]).max() > 1e-4  # the delta changed something


def test_slf_on_a_folder_writes_an_update(device, tmp_path, capsys):
    ckpt, _ = device
    frames = write_frames(tmp_path / "mine", count=8)
    out = tmp_path / "p.update.safetensors"
    argv = ["adapt", "slf", "--tx", str(ckpt), "--rx", str(ckpt), "--data", str(frames),
            "--steps", "3", "--batch-size", "4", "--out", str(out), "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file() and "3 steps" in capsys.readouterr().out


def _empty(tmp):
    (tmp / "d").mkdir()
    return ["--data", str(tmp / "d")], "holds no"


def _broken_png(tmp):
    write_frames(tmp / "d", count=2)
    (tmp / "d" / "z.png").write_bytes(b"\x89PNG not really")
    return ["--data", str(tmp / "d")], "cannot read image"


def _wrong_channels(tmp):
    (tmp / "d").mkdir()
    np.save(tmp / "d" / "a.npy", np.zeros((2, 5, 8, 8), np.float32))
    return ["--data", str(tmp / "d")], "takes 3 channel(s)"


def _not_a_folder(tmp):
    return ["--data", str(tmp / "nowhere/frames")], "is not a directory"


def _no_domain_for_a_dataset(tmp):
    return ["--data", "patches"], "give --domain"


def _bad_device(tmp):
    write_frames(tmp / "d", count=2)
    return ["--data", str(tmp / "d"), "--device", "tpu"], "choose cpu or cuda"


def _no_root(tmp):
    write_frames(tmp / "d", count=2)
    return ["--data", str(tmp / "d"), "--install", str(tmp / "noroot")], "not a device root"


def _activate_alone(tmp):
    write_frames(tmp / "d", count=2)
    return ["--data", str(tmp / "d"), "--activate"], "--activate needs"


CASES = {
    "empty folder": _empty,
    "unreadable image": _broken_png,
    "npy with other channels": _wrong_channels,
    "missing folder": _not_a_folder,
    "dataset without --domain": _no_domain_for_a_dataset,
    "unknown device": _bad_device,
    "install into a non-root": _no_root,
    "activate without a target": _activate_alone,
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = lambda tmp: (
        ["--data", str(write_frames(tmp / "d", count=2)), "--device", "cuda"],
        "sees no CUDA device",
    )


@pytest.mark.parametrize("case", CASES)
def test_bad_folders_and_targets_are_one_line(case, device, fresh_root, tmp_path, capsys):
    extra, message = CASES[case](tmp_path)
    out = tmp_path / "x.delta.safetensors"
    before = sorted(p.name for p in fresh_root.rglob("*"))
    argv = ["adapt", "zfda", str(device[0]), "--epochs", "1", "--out", str(out), *extra]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in fresh_root.rglob("*")) == before
    if case not in ("install into a non-root", "activate without a target"):
        assert not out.exists()


def test_a_delta_for_another_base_is_refused_and_nothing_installed(device, fresh_root, tmp_path):
    from firmware_bridge.slots import WrongBase
    from sdk.adapt.ondevice import install_local
    from tests.bridge.bridge_helpers import make_delta

    other = make_delta(tmp_path / "other.delta.safetensors", "cd" * 32)
    with pytest.raises(WrongBase, match="is for base cdcdcdcdcdcd…, the running build of jscc is"):
        install_local(fresh_root, other)
    assert not (fresh_root / "models/jscc/deltas").exists()


def test_local_install_refuses_a_lower_security_counter(fresh_root, tmp_path):
    from firmware_bridge.slots import Downgrade, SlotStore
    from sdk.adapt.ondevice import install_local
    from tests.bridge.bridge_helpers import make_delta

    base = SlotStore(fresh_root).base_fingerprint("jscc")
    newer = make_delta(tmp_path / "n.delta.safetensors", base, counter=4)
    older = make_delta(tmp_path / "o.delta.safetensors", base, counter=2)
    assert "active on A" in install_local(fresh_root, newer, activate=True)
    with pytest.raises(Downgrade, match="--security-counter 4 or higher"):
        install_local(fresh_root, older, activate=True)
    assert not (fresh_root / "models/jscc/deltas" / older.name).exists()


def test_train_and_eval_read_the_same_folder(tmp_path, capsys):
    """`semedge train --data DIR` reads the folder at the --arg size and records it, so
    `semedge eval` on the checkpoint reads the same folder by default."""
    frames = write_frames(tmp_path / "frames" / "train", count=6)
    write_frames(tmp_path / "frames" / "val", count=3)
    out = tmp_path / "run"
    argv = ["train", "--data", str(frames.parent), "--epochs", "1", "--batch-size", "3",
            "--arg", "hidden=4", "--arg", "image_size=16", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint"), "--split", "val", "--snr", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["psnr"] > 0 for r in rows)


def test_a_device_that_trusts_a_key_gets_signed_results_only(
    device, fresh_root, tmp_path, capsys, monkeypatch
):
    from firmware_bridge.signing import keygen

    ckpt, _ = device
    key, pub = keygen(tmp_path / "fleet")
    monkeypatch.setenv("SEMEDGE_TRUSTED_KEY", str(pub))
    frames = write_frames(tmp_path / "camera3")
    out = tmp_path / "camera3.delta.safetensors"
    (tmp_path / "camera3.delta.safetensors.sig").write_bytes(bytes(64))  # a stale signature
    argv = ["adapt", "zfda", str(ckpt), "--data", str(frames), "--epochs", "1", "--batch-size",
            "4", "--out", str(out), "--install", str(fresh_root)]  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) != 0
    assert "--sign KEY" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # refused before training
    assert main([*argv, "--sign", str(key), "--activate"]) == 0
    assert "active on" in capsys.readouterr().out
    assert (fresh_root / "models/jscc/deltas" / f"{out.name}.sig").is_file()


def test_an_install_that_cannot_be_switched_on_says_it_is_installed(fresh_root, tmp_path):
    """An update that changes the active delta's tensor lands but is not activated: the
    one-line error says both, so the user knows the file is on the device."""
    from firmware_bridge.slots import InUse, SlotStore
    from sdk.adapt.ondevice import install_local
    from tests.bridge.bridge_helpers import make_delta, make_update

    store = SlotStore(fresh_root)
    base = store.base_fingerprint("jscc")
    install_local(fresh_root, make_delta(tmp_path / "d.delta.safetensors", base), activate=True)
    update = make_update(tmp_path / "u.update.safetensors", base, "cd" * 32, param="w")
    with pytest.raises(InUse, match=r"installed u.update.safetensors for jscc .*, not activated: "
                       r"update u.update.safetensors and the active delta") as e:  # fmt: skip
        install_local(fresh_root, update, activate=True)
    assert "\n" not in str(e.value)
    assert store.active_changes("jscc") == {"delta": "d.delta.safetensors", "update": None}
    assert (fresh_root / "models/jscc/updates/u.update.safetensors").is_file()
