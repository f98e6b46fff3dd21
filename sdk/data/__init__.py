"""Offline datasets (real data shipped by pip packages) and domain shifts."""

from sdk.data.datasets import DATASETS, SPLITS, DataError, ImageDataset, load_dataset

__all__ = ["DATASETS", "SPLITS", "DataError", "ImageDataset", "load_dataset"]
