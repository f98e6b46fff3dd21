"""On-device adaptation: ZFDA sparse deltas and SLF split learning."""
