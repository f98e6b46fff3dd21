"""Model registry: checkpoint ``config.json`` names a class here plus its constructor args."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from sdk.errors import UnknownModelError

T = TypeVar("T", bound=type[nn.Module])

MODELS: dict[str, type[nn.Module]] = {}


def register(cls: T) -> T:
    """Class decorator: make ``cls`` buildable by name from a checkpoint config."""
    MODELS[cls.__name__] = cls
    return cls


def model_class(name: str) -> type[nn.Module]:
    """The registered class called ``name``, ignoring case and a ``Transceiver`` suffix.

    So ``DeepJSCC``, ``deepjscc``, ``GAITransceiver`` and ``gai`` all work on the CLI.
    """
    _import_all()
    wanted = name.lower().removesuffix("transceiver")
    for cls_name, cls in MODELS.items():
        if cls_name.lower().removesuffix("transceiver") == wanted:
            return cls
    raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")


def build_model(name: str, **args: Any) -> nn.Module:
    """Instantiate a registered model, with a one-line error for unknown names or args."""
    cls = model_class(name)
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise UnknownModelError(f"cannot build {cls.__name__} with {args}: {exc}") from None


def available_models() -> list[str]:
    _import_all()
    return sorted(MODELS)


def _import_all() -> None:
    # Importing the package registers every model family.
    import sdk.models  # noqa: F401
