"""The data layer: files -> checked uint8 arrays -> splits -> float32 batches.

``formats`` reads and writes IDX, CSV and NPZ; ``sources`` finds the bytes
(a path, the cache, a download); ``datasets`` names MNIST and Fashion-MNIST,
checks them and splits them; ``loader`` normalises and batches them.
"""

from digitnet.data.datasets import DATASETS, Dataset, DatasetSpec, describe, load_dataset, train_val_split
from digitnet.data.formats import read_csv, read_idx, read_npz, write_idx
from digitnet.data.loader import DataLoader, Normalizer
from digitnet.data.sources import cache_dir

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "DataLoader",
    "Normalizer",
    "cache_dir",
    "describe",
    "load_dataset",
    "read_csv",
    "read_idx",
    "read_npz",
    "train_val_split",
    "write_idx",
]
