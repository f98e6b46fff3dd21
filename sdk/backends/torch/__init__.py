"""PyTorch backend: runs a checkpoint directly (the reference every backend is compared with)."""
