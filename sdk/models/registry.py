"""Model registry: checkpoint ``config.json`` names a class here plus its constructor args."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from sdk.errors import UnknownModelError

T = TypeVar("T", bound=type[nn.Module])

MODELS: dict[str, type[nn.Module]] = {}

# Names for a registered class with some constructor arguments preset: what the papers
# and the README call a variant. ``--arg`` still overrides them.
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sKEM": ("KEMTransceiver", {"etf": True}, "KEM with its tokens projected by a simplex ETF"),
}


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
    for preset, (cls_name, _, _) in PRESETS.items():
        if preset.lower() == wanted:
            return MODELS[cls_name]
    for cls_name, cls in MODELS.items():
        if cls_name.lower().removesuffix("transceiver") == wanted:
            return cls
    names = ", ".join(row[0] for row in model_table())
    raise UnknownModelError(f"unknown model {name!r}; available: {names}")


def build_model(name: str, **args: Any) -> nn.Module:
    """Instantiate a registered model, with a one-line error for unknown names or args."""
    cls = model_class(name)
    for preset, (_, preset_args, _) in PRESETS.items():
        if preset.lower() == name.lower():
            args = {**preset_args, **args}
    try:
        return cls(**args)
    except (TypeError, ValueError, RuntimeError) as exc:  # torch: e.g. a negative size
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UnknownModelError(f"cannot build {cls.__name__} with {args}: {reason}") from None


def available_models() -> list[str]:
    _import_all()
    return sorted(MODELS)


def model_table() -> list[tuple[str, str, str]]:
    """``(name for --model, class, one-line summary)`` for every family and preset."""
    _import_all()
    rows = []
    for cls_name, cls in sorted(MODELS.items()):
        summary = (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")
        rows.append((cls_name.removesuffix("Transceiver"), cls_name, summary))
    for preset, (cls_name, args, summary) in PRESETS.items():
        settings = ", ".join(f"{k}={v}" for k, v in args.items())
        rows.append((preset, cls_name, f"{summary} ({settings})"))
    return sorted(rows, key=lambda row: row[0].lower())


def _import_all() -> None:
    # Importing the package registers every model family.
    import sdk.models  # noqa: F401
