"""Calibration data: datasets by shape, a user's folder of images or .npy files, batches."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.data import DataError, load_folder, sample_images


def test_a_folder_of_images_is_resized_and_sorted(tmp_path):
    from PIL import Image

    photos = sample_images((3, 32, 32), "patches", 3)
    for i, img in enumerate(photos):
        pixels = (img.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).resize((64, 48)).save(tmp_path / f"{i}.png")
    got = load_folder(tmp_path, (3, 32, 32))
    assert got.shape == (3, 3, 32, 32) and got.dtype == np.float32
    assert np.abs(got - photos).mean() < 0.05  # the same photos, resized twice
    assert load_folder(tmp_path, (1, 16, 16)).shape == (3, 1, 16, 16)  # grey, smaller


def test_npy_files_stack_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 1, 16, 16), np.float32), rng.random((1, 16, 16), np.float32)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_folder(tmp_path, (1, 16, 16)), np.concatenate([a, b[None]]))
    assert len(load_folder(tmp_path, (1, 16, 16), count=2)) == 2


def test_datasets_by_shape_and_a_mismatch():
    assert sample_images((1, 16, 16), None, 5).shape == (5, 1, 16, 16)
    with pytest.raises(DataError, match="choose a matching --data"):
        sample_images((1, 16, 16), "mnist", 5)
    with pytest.raises(DataError, match="no default dataset"):
        sample_images((2, 9, 9), None, 5)


def test_reader_batches_every_sample_once():
    from calibration.reader import batch_reader

    samples = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    reader = batch_reader("x", samples, batch=4, show=False)
    batches = list(iter(reader.get_next, None))
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), samples)


def test_fp16_on_onnxrt_is_refused_in_one_line(ckpt, tmp_path):
    from sdk.build import BuildError, build

    with pytest.raises(BuildError, match="fp16 is a TensorRT precision") as err:
        build(ckpt, tmp_path / "a", backend="onnxrt", precision="fp16")
    assert "\n" not in str(err.value) and not (tmp_path / "a").exists()
