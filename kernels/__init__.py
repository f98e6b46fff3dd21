"""CUDA kernels (Top-K memory attention, sparse delta), numpy references, loaders."""
