"""One folder per backend (``torch``, ``onnxrt``, ``trt``): its builder or loader and its runner.

The :class:`~sdk.runtime.Runtime` an app uses dispatches here. Each backend imports its
heavy dependency lazily (:func:`sdk.errors.lazy_import`), so importing a backend
package needs only numpy; a missing optional package is a one-line
``MissingDependencyError``.
"""
