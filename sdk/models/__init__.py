"""Transceiver model families; importing this package registers them all."""

from sdk.models.base import Transceiver
from sdk.models.jscc import DeepJSCC
from sdk.models.registry import available_models, build_model

__all__ = ["DeepJSCC", "Transceiver", "available_models", "build_model"]
