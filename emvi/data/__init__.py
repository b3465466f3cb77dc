"""Data: datasets by name, the user's own arrays and sequences, text corpora, transforms and held-out splits."""

from .datasets import (
    BUILTIN_DATASETS,
    ENV_DATA_ROOT,
    TEXT_DATASETS,
    ArrayDataset,
    data_root,
    has_test_split,
    load_array_file,
    load_dataset,
    train_valid_split,
)
from .info import DataInfo
from .text import (
    TextCorpus,
    counts_to_padded,
    document_completion_split,
    load_sotu,
    load_text_dataset,
    padded_to_counts,
    split_documents,
    tokenize,
)

__all__ = [
    "ArrayDataset",
    "BUILTIN_DATASETS",
    "DataInfo",
    "ENV_DATA_ROOT",
    "TEXT_DATASETS",
    "TextCorpus",
    "has_test_split",
    "counts_to_padded",
    "data_root",
    "document_completion_split",
    "load_array_file",
    "load_dataset",
    "load_sotu",
    "load_text_dataset",
    "padded_to_counts",
    "split_documents",
    "tokenize",
    "train_valid_split",
]
