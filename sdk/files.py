"""Writing a directory so that readers see the old one or the new one, never a half of either."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield a hidden sibling of ``target`` to fill; on success it is renamed onto ``target``.

    An existing ``target`` is moved aside first and removed after the swap. Any exception
    (including Ctrl-C between the two renames) deletes the staged directory and leaves
    ``target`` as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    swapping = False
    try:
        yield tmp
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
