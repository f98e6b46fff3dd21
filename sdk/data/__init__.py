"""Offline datasets (real data shipped by pip packages), a user's folder, domain shifts."""

from sdk.data.datasets import DATASETS, SPLITS, DataError, ImageDataset, load_dataset
from sdk.data.samples import DATASET_FOR_SHAPE, load_folder, names_folder, sample_images, sample_set

__all__ = [
    "DATASETS",
    "DATASET_FOR_SHAPE",
    "SPLITS",
    "DataError",
    "ImageDataset",
    "load_dataset",
    "load_folder",
    "names_folder",
    "sample_images",
    "sample_set",
]
