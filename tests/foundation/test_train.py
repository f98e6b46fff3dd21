"""Training: real data, loss goes down, resume is exact, checkpoints load bit-exactly."""

from __future__ import annotations

import pytest
import torch

import sdk.train
from sdk.checkpoint import RUN_CHECKPOINT, load_checkpoint
from sdk.data import load_dataset
from sdk.evaluate import evaluate
from sdk.models import DeepJSCC
from sdk.train import (
    DEFAULT_WEIGHTS,
    TrainConfig,
    TrainError,
    build_for_data,
    task_loss,
    task_losses,
    train,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def _tiny(dataset, **kw):
    torch.manual_seed(0)
    return build_for_data("DeepJSCC", {"hidden": 8, **kw}, dataset)


def test_short_training_on_real_patches_beats_untrained(tmp_path):
    train_set = load_dataset("patches", "train")
    train_set = train_set.subset(range(0, len(train_set), 6)[:2000])
    test_set = load_dataset("patches", "val").subset(range(256))
    torch.manual_seed(0)
    model = DeepJSCC(hidden=16)
    before = evaluate(model, test_set, [10.0])[0]["psnr"]
    config = TrainConfig(epochs=3, batch_size=32, lr=2e-3, progress=False)
    history = train(model, train_set, config, tmp_path, val_set=test_set)
    after = evaluate(model, test_set, [10.0])[0]["psnr"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert after > before + 5.0, (before, after)
    loaded = load_checkpoint(tmp_path / RUN_CHECKPOINT)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_repeats_an_uninterrupted_run_exactly(tmp_path, digits, monkeypatch):
    config = TrainConfig(epochs=3, batch_size=64, progress=False)
    straight = _tiny(digits)
    full = train(straight, digits, config, tmp_path / "straight")

    real_save = sdk.train._save

    def crash_after_epoch_two(out, model, optimizer, cfg, history):
        real_save(out, model, optimizer, cfg, history)
        if len(history) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after epoch 2

    monkeypatch.setattr(sdk.train, "_save", crash_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(digits), digits, config, tmp_path / "r")
    monkeypatch.undo()
    fresh = _tiny(digits)  # a new process starts from freshly initialised weights
    history = train(fresh, digits, config, tmp_path / "r", resume=True)
    assert history == full
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_output_folder_is_never_overwritten_by_accident(tmp_path, digits):
    config = TrainConfig(epochs=1, batch_size=256, progress=False)
    train(_tiny(digits), digits, config, tmp_path)
    before = (tmp_path / "train_state.pt").read_bytes()
    with pytest.raises(TrainError, match="--resume"):
        train(_tiny(digits), digits, config, tmp_path, resume=False)
    other = TrainConfig(epochs=1, batch_size=256, lr=5e-4, progress=False)
    with pytest.raises(TrainError, match="holds a run with other settings"):
        train(_tiny(digits), digits, other, tmp_path)
    with pytest.raises(TrainError, match="holds a run with other settings"):
        train(_tiny(digits, hidden=4), digits, config, tmp_path)
    assert (tmp_path / "train_state.pt").read_bytes() == before


def test_bad_configs_are_one_line_errors(digits):
    from sdk.errors import ChannelError

    with pytest.raises(ChannelError, match="outside"):
        TrainConfig(snr_db=(0.0, 100.0)).validate()
    with pytest.raises(TrainError, match="reversed"):
        TrainConfig(snr_db=(20.0, 0.0)).validate()
    with pytest.raises(TrainError, match="unknown loss weight"):
        TrainConfig(loss_weights={"recon": 1.0, "depth": 1.0}).validate()


def test_multitask_losses_and_weights(digits):
    model = _tiny(digits)  # digits has labels, so a classifier head is added
    assert model.config["num_classes"] == 10 and model.config["image_size"] == 16
    batch = {"image": digits.images[:8], "label": digits.labels[:8], "mask": digits.masks[:8]}
    with torch.no_grad():
        outputs = model(batch["image"], 10.0)
    mse = torch.nn.functional.mse_loss(outputs["recon"], batch["image"])
    ce = torch.nn.functional.cross_entropy(outputs["logits"], batch["label"])
    total = task_loss(outputs, batch, {"recon": 2.0, "logits": 0.5})
    assert float(total) == pytest.approx(float(2 * mse + 0.5 * ce), rel=1e-6)
    history = train(model, digits, TrainConfig(epochs=1, batch_size=256, progress=False))
    assert {"loss", "recon", "logits"} <= set(history[0])


class _WithAux(DeepJSCC):
    """A DeepJSCC that reports a regulariser the way a VQ model reports its commitment loss."""

    def forward(self, x, snr_db=10.0):
        out = super().forward(x, snr_db)
        self.aux_loss = 0.1 * out["recon"].mean()
        return out


def test_aux_loss_of_the_model_is_trained_and_weighted(digits):
    torch.manual_seed(0)
    model = _WithAux(in_channels=1, image_size=16, hidden=8)
    config = TrainConfig(epochs=1, batch_size=256, progress=False)
    history = train(model, digits, config)
    assert history[0]["aux"] > 0
    assert history[0]["loss"] == pytest.approx(history[0]["recon"] + history[0]["aux"], rel=1e-4)


@pytest.mark.parametrize(
    "family", ["DeepJSCC", "GAITransceiver", "KEMTransceiver", "VQTransceiver"]
)
def test_mostly_black_images_do_not_collapse_to_black(family):
    """On MNIST a sigmoid head started at 0.5 saturated at black for good (9.6 dB) within
    20 steps; started at the data mean (filled in by build_for_data) every family must beat
    the best input-independent guess, the mean training image."""
    train_set = load_dataset("mnist", "train").subset(range(1500))
    test_set = load_dataset("mnist", "test").subset(range(300))
    torch.manual_seed(0)
    model = build_for_data(family, {"hidden": 16}, train_set)
    config = TrainConfig(epochs=3, batch_size=32, loss_weights={"logits": 0.0}, progress=False)
    train(model, train_set, config)
    mean_image = train_set.images.mean(0, keepdim=True)
    mean_psnr = -10 * torch.log10(((test_set.images - mean_image) ** 2).mean()).item()
    psnr = evaluate(model, test_set, [10.0])[0]["psnr"]
    assert psnr > mean_psnr + 1.0, (psnr, mean_psnr)


def test_runs_saved_before_data_and_pixel_mean_were_recorded_still_resume(tmp_path, digits):
    config = TrainConfig(epochs=1, batch_size=256, progress=False, data="digits")
    train(_tiny(digits), digits, config, tmp_path)
    state_path = tmp_path / sdk.train.STATE_FILE
    state = torch.load(state_path, weights_only=True)
    del state["config"]["data"]  # as written by the first release
    del state["model"]["args"]["pixel_mean"]
    torch.save(state, state_path)
    longer = TrainConfig(epochs=2, batch_size=256, progress=False, data="digits")
    assert len(train(_tiny(digits), digits, longer, tmp_path)) == 2
    with pytest.raises(TrainError, match="holds a run with other settings"):
        train(_tiny(digits, hidden=4), digits, longer, tmp_path)


def test_default_weights_let_reconstruction_steer_the_shared_encoder():
    """The mechanism behind the default ``logits`` weight (measurements: docs/training.md).

    On MNIST's default model (DeepJSCC with a classification head) the pixel MSE's gradient
    on the shared transmitter is ~40x smaller than the cross-entropy's at 1:1, and
    reconstruction starved (13.3 dB after 3 epochs vs 11.6 dB for the mean image). With
    the default weights it must carry a visible share.
    """
    data = load_dataset("mnist", "train").spread(64)  # every class (the split is by class)
    torch.manual_seed(0)
    model = build_for_data("DeepJSCC", {}, data)
    batch = {"image": data.images, "label": data.labels}
    parts = task_losses(model(data.images, 10.0), batch)
    shared = list(model.transmitter.parameters())

    def pull(task: str) -> float:
        grads = torch.autograd.grad(parts[task], shared, retain_graph=True)
        return DEFAULT_WEIGHTS[task] * float(torch.sqrt(sum((g**2).sum() for g in grads)))

    assert pull("recon") > 0.2 * pull("logits")  # 1:1 gives 0.023, the default 0.46
