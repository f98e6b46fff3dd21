"""Writing files and directories so that readers see the old one or the new one, never a
half of either, and no temporary file outlives a failure.

Every file the SDK writes goes through :func:`atomic_file` (or, for a directory of
files, :func:`staged_directory`): the content goes to a hidden temporary beside the
target, is flushed to the disk (fsync), and is renamed onto the target. Any failure
(a full disk, a file-size limit, Ctrl-C) removes the temporary and leaves the target as
it was; failures of the writer itself become one :class:`WriteError` line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdk.errors import SemedgeError


class WriteError(SemedgeError):
    """A file or directory could not be written (full disk, size limit, permissions)."""


def _write_failed(target: Path, exc: BaseException) -> WriteError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return WriteError(
        f"cannot write {target} ({reason}); nothing changed — check the path, its "
        "permissions and the free space"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` to the disk (a directory's fsync persists a rename; not on Windows)."""
    if directory and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(target: str | Path, mode: int = 0o666) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``target`` to write; on success it is flushed and
    renamed onto ``target``.

    The temporary exists (empty, permissions ``mode`` minus the umask) so writers that need
    a path can use it. Keep the ``with`` body to the writing itself: any exception there
    that is not already a :class:`SemedgeError` (``OSError``, torch's ``RuntimeError`` on a
    full disk, ...) is reported as a :class:`WriteError` naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    except OSError as exc:
        raise _write_failed(target, exc) from exc
    try:
        yield tmp
        os.chmod(tmp, mode & ~_umask())  # some writers (safetensors) replace the file: 0600
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, SemedgeError):
            raise _write_failed(target, exc) from exc
        raise
    # the file is complete and in place; only its durability after a crash is unsure
    with contextlib.suppress(OSError):
        _fsync(target.parent, directory=True)


def write_bytes(target: str | Path, data: bytes, mode: int = 0o666) -> Path:
    """``target`` holds exactly ``data`` afterwards, or is unchanged (see :func:`atomic_file`)."""
    target = Path(target)
    with atomic_file(target, mode) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: str | Path, text: str, mode: int = 0o666) -> Path:
    """:func:`write_bytes` of UTF-8 ``text``."""
    return write_bytes(target, text.encode(), mode)


def save_figure(fig: Any, target: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure (format from the suffix) through :func:`atomic_file`, then
    close it."""
    from matplotlib import pyplot as plt

    target = Path(target)
    try:
        with atomic_file(target) as tmp:
            fig.savefig(tmp, dpi=dpi, format=target.suffix.lstrip(".").lower() or None)
    finally:
        plt.close(fig)
    return target


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield a hidden sibling of ``target`` to fill; on success it is renamed onto ``target``.

    The files written into it are flushed to the disk before the swap. An existing
    ``target`` is moved aside first and removed after the swap. Any exception (including
    Ctrl-C between the two renames) deletes the staged directory and leaves ``target`` as
    it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    swapping = False
    try:
        yield tmp
        mask = _umask()
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and some writers make them private
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
            if path.is_file():
                _fsync(path)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            swapping = True
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if swapping and old.exists() and not target.exists():
            os.replace(old, target)  # interrupted mid-swap: put the previous one back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
