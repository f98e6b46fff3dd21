"""Pipelines that string the SDK's layers together: ``semedge demo`` / ``quickstart``."""
