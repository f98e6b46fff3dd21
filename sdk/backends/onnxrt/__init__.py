"""ONNX Runtime backend: the exported ``.onnx`` is the artifact; CPU by default."""
