"""INT8 post-training quantization: calibration data and explicit Q/DQ."""
