"""Model registry: checkpoint ``config.json`` names a class here plus its constructor args."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from sdk.errors import UnknownModelError

T = TypeVar("T", bound=type[nn.Module])

MODELS: dict[str, type[nn.Module]] = {}


def register(cls: T) -> T:
    """Class decorator: make ``cls`` buildable by name from a checkpoint config."""
    MODELS[cls.__name__] = cls
    return cls


def build_model(name: str, **args: Any) -> nn.Module:
    """Instantiate a registered model, with a one-line error for unknown names or args."""
    _import_all()
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**args)
    except TypeError as exc:
        raise UnknownModelError(f"cannot build {name} with {args}: {exc}") from None


def available_models() -> list[str]:
    _import_all()
    return sorted(MODELS)


def _import_all() -> None:
    # Importing the package registers every model family.
    import sdk.models  # noqa: F401


Factory = Callable[..., nn.Module]
