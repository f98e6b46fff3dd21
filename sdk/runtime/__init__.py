"""On-device runtime: Polygraphy-style runners (torch, onnxrt, trt) and :class:`Runtime`.

Backends import their heavy dependencies lazily, so ``import sdk.runtime`` needs only
numpy; a missing optional package is a one-line ``MissingDependencyError``.
"""

from sdk.runtime.base import BaseRunner, InputError, RunnerError, TensorSpec
from sdk.runtime.runtime import DeltaTargetError, Runtime

__all__ = ["BaseRunner", "DeltaTargetError", "InputError", "RunnerError", "Runtime", "TensorSpec"]
