"""Where the checks against real third-party sources find them: ``shared/third_party``.

CI runs a fresh clone with a copy of ``shared/`` beside it; a user's clone has none, and
the tests that need it skip and say so.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TENSORRT_RELEASES = ("10.3.0", "10.13.3")  # JetPack 6, JetPack 7


def shared_dir(root: Path = ROOT) -> Path:
    """``shared/`` beside the repository (for a git worktree: beside its main checkout).

    ``$SEMEDGE_SHARED`` overrides it.
    """
    if os.environ.get("SEMEDGE_SHARED"):
        return Path(os.environ["SEMEDGE_SHARED"])
    dot_git = root / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(dot_git.read_text().split(":", 1)[1].strip())
        return gitdir.parents[2].parent / "shared"
    return root.parent / "shared"
