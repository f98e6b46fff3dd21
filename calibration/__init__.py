"""INT8 post-training quantization to explicit, symmetric Q/DQ ONNX models.

ONNX Runtime's quantizer does the heavy lifting (range collection, Q/DQ insertion);
semedge adds the calibration data (:mod:`sdk.data`), the method presets
(:mod:`calibration.methods`), a range cache (:mod:`calibration.cache`), per-layer
sensitivity with a drop budget (:mod:`calibration.sensitivity`) and a graph form that
keeps ZFDA delta targets switchable (:mod:`calibration.refittable`).
:func:`calibration.calibrate.calibrate` runs them in order.
"""

from calibration.errors import CalibrationError

__all__ = ["CalibrationError"]
