"""``sdk.files``: the one atomic writer every SDK file goes through."""

from __future__ import annotations

import os
import stat

import pytest

from sdk.files import WriteError, atomic_file, staged_directory, write_bytes


@pytest.mark.parametrize("failure", [RuntimeError("writer broke"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, failure):
    target = write_bytes(tmp_path / "f.bin", b"old")
    expected = WriteError if isinstance(failure, Exception) else KeyboardInterrupt
    with pytest.raises(expected), atomic_file(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise failure
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_write_error_is_one_line_naming_the_target(tmp_path):
    with pytest.raises(WriteError) as caught, atomic_file(tmp_path / "x.onnx"):
        raise OSError(27, "File too large")
    assert str(caught.value).startswith(f"cannot write {tmp_path / 'x.onnx'} (")
    assert len(str(caught.value).splitlines()) == 1


def test_files_get_the_usual_permissions_even_from_writers_that_replace_them(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    mask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "w.safetensors") as tmp:
            save_file({"w": np.zeros(2)}, str(tmp))
        secret = write_bytes(tmp_path / "k.key", b"k", mode=0o600)
        with staged_directory(tmp_path / "ck") as folder:
            save_file({"w": np.zeros(2)}, str(folder / "model.safetensors"))
    finally:
        os.umask(mask)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "w.safetensors") == 0o644 and mode(secret) == 0o600
    assert mode(tmp_path / "ck") == 0o755 and mode(tmp_path / "ck" / "model.safetensors") == 0o644
