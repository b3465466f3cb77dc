"""Data: datasets by name, the user's own arrays, transforms and held-out splits."""

from .datasets import (
    BUILTIN_DATASETS,
    ENV_DATA_ROOT,
    ArrayDataset,
    data_root,
    load_array_file,
    load_dataset,
    train_valid_split,
)

__all__ = [
    "ArrayDataset",
    "BUILTIN_DATASETS",
    "ENV_DATA_ROOT",
    "data_root",
    "load_array_file",
    "load_dataset",
    "train_valid_split",
]
