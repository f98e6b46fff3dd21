"""TensorRT backend: plan builder, plugin loading, device-resident delta core, runner + refit."""
