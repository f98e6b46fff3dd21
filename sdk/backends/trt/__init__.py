"""TensorRT backend: plan builder, plugin loading, device-resident delta core, refit, runner."""
