"""Offline datasets (real data shipped by pip packages) and domain shifts."""
