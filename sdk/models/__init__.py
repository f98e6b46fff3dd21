"""Transceiver model families; importing this package registers them all."""

from sdk.models.base import Transceiver
from sdk.models.gai import GAITransceiver
from sdk.models.jscc import DeepJSCC
from sdk.models.kem import KEMTransceiver, simplex_etf, topk_attention
from sdk.models.registry import available_models, build_model
from sdk.models.vq import VectorQuantizer, VQTransceiver

__all__ = [
    "DeepJSCC",
    "GAITransceiver",
    "KEMTransceiver",
    "Transceiver",
    "VQTransceiver",
    "VectorQuantizer",
    "available_models",
    "build_model",
    "simplex_etf",
    "topk_attention",
]
