"""Edge labels for the photo patches, and ``semedge inspect --gai-weights``."""

from __future__ import annotations

import json

import pytest
import torch

from sdk.checkpoint import save_checkpoint
from sdk.cli import main
from sdk.data import load_dataset
from sdk.data.labels import EDGE_THRESHOLD, edge_masks, with_edge_masks
from sdk.models.gai import GAITransceiver
from sdk.models.jscc import DeepJSCC


def test_edge_mask_marks_a_step_and_nothing_on_flat_parts():
    img = torch.zeros(1, 3, 8, 8)
    img[..., 4:] = 1.0  # vertical step between columns 3 and 4
    mask = edge_masks(img)
    assert mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, :, 3:5].eq(1).all() and mask[0, 0, :, :3].eq(0).all()
    assert mask[0, 0, :, 5:].eq(0).all()
    grey = edge_masks(img[:, :1])  # one channel: its own luma, same edges
    assert torch.equal(grey, mask)
    assert edge_masks(img * EDGE_THRESHOLD * 0.9).sum() == 0  # a step below threshold


def test_patches_get_edge_masks_from_the_real_photos():
    data = with_edge_masks(load_dataset("patches", "test"))
    assert data.masks is not None and data.masks.shape == (len(data), 1, 32, 32)
    share = float(data.masks.mean())
    assert 0.03 < share < 0.4
    assert set(data[0]) == {"image", "mask"}


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 2, 8, 8), (1, 4, 8, 8)])
def test_edge_masks_refuse_other_shapes(shape):
    with pytest.raises(ValueError, match="edge_masks takes"):
        edge_masks(torch.rand(*shape))


def _ckpt(tmp_path, name, model):
    torch.manual_seed(0)
    return str(save_checkpoint(model, tmp_path / name))


def _gai(**kw):
    torch.manual_seed(0)
    tasks = ("recon", "logits", "mask_logits")
    return GAITransceiver(in_channels=1, image_size=28, tasks=tasks, hidden=8, **kw)


def test_inspect_prints_and_plots_task_weights_and_attention(tmp_path, capsys):
    ck = _ckpt(tmp_path, "gai", _gai(iterations=2))
    png = tmp_path / "w.png"
    assert main(["inspect", ck, "--gai-weights", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "task-node weights" in out and "iteration 2" in out and "mask_logits" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["inspect", ck, "--gai-weights", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["task_weights"]) == 3 and len(info["attention"]) == 2
    for row in info["task_weights"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-5)


def test_inspect_flags_collapsed_attention(tmp_path, capsys):
    model = _gai()
    with torch.no_grad():  # zero attention vectors: every edge scores 0, softmax is uniform
        model.transmitter.attention[0].a_dst.zero_()
        model.transmitter.attention[0].a_src.zero_()
    assert main(["inspect", _ckpt(tmp_path, "flat", model), "--gai-weights"]) == 0
    assert "warning: attention_1 collapsed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda: _gai(mode="sequential"), ["--gai-weights"], "no task-node weights"),
        (lambda: DeepJSCC(hidden=8), ["--gai-weights"], "no task-node weights"),
        (lambda: _gai(), [], "add --gai-weights"),
        (lambda: _gai(), ["--gai-weights", "--data", "patches"], "takes [1, 28, 28] images"),
    ],
)
def test_inspect_bad_input_is_one_line(tmp_path, capsys, make, extra, message):
    ck = _ckpt(tmp_path, "m", make())
    assert main(["inspect", ck, *extra]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
