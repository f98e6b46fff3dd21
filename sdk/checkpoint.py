"""Checkpoint directories: ``config.json`` (model class + args) and ``model.safetensors``.

Saving writes to a temporary directory and renames it into place, so an interrupted
save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from sdk.errors import CheckpointError
from sdk.files import staged_directory
from sdk.fingerprint import model_fingerprint

if TYPE_CHECKING:  # torch is imported by the functions that need it: the paths and config
    from torch import nn  # readers serve torch-free code (ONNX Runtime artifacts)

FORMAT = "semedge.checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
RUN_CHECKPOINT = "checkpoint"  # where `semedge train` keeps the checkpoint in its --out folder


def resolve(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoint`` when ``path`` is a ``semedge train`` output
    folder, so every command takes either."""
    path = Path(path)
    inner = path / RUN_CHECKPOINT
    return inner if not (path / CONFIG).exists() and inner.is_dir() else path


def save_checkpoint(
    model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (which must carry ``.config``) as a checkpoint directory at ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": type(model).__name__,
        "args": getattr(model, "config", {}),
        "fingerprint": model_fingerprint(model),
        **(extra or {}),
    }
    try:
        with staged_directory(path) as tmp:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS))
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    except OSError as exc:
        raise CheckpointError(
            f"cannot write checkpoint {path} ({exc}); nothing changed — free space or pick "
            "another folder"
        ) from None
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint, with one-line errors for bad folders."""
    path = resolve(path)
    cfg_path = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a checkpoint directory; train one with: semedge train"
        )
    if not cfg_path.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(
            f"{path} is not a checkpoint: it needs {CONFIG} and {WEIGHTS}"
            " (semedge train writes both)"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{cfg_path} is not valid JSON ({exc}); re-save the checkpoint"
        ) from None
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} is not a {FORMAT} v{FORMAT_VERSION} config; re-save it with this semedge"
        )
    return config


def load_checkpoint(path: str | Path, verify: bool = True) -> nn.Module:
    """Rebuild the model named in ``config.json`` and load its weights (strictly)."""
    from safetensors.torch import load_file

    from sdk.models.registry import build_model

    path = resolve(path)
    config = read_config(path)
    model = build_model(config["model"], **config.get("args", {}))
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path / WEIGHTS} is unreadable ({exc}); re-save the checkpoint"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match {config['model']}{config.get('args', {})}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if verify and config.get("fingerprint") and model_fingerprint(model) != config["fingerprint"]:
        raise CheckpointError(
            f"{path / WEIGHTS} does not match the fingerprint in {CONFIG}; the file is corrupt"
        )
    model.eval()
    return model
