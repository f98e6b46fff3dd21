"""Serial flasher (host) and device agent; torch-free by design."""
