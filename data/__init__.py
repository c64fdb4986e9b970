"""Data layer: random-access sources named by spec strings, and grain pipelines the trainer iterates."""
from data.pipeline import eval_batches, make_dataset, make_pair_dataset
from data.sources import (
    ArraySource,
    DatasetNotPreparedError,
    Source,
    SourceInfo,
    TfdsSource,
    get_source,
    list_sources,
    local_datasets,
    read_idx,
)

__all__ = [
    "ArraySource",
    "DatasetNotPreparedError",
    "Source",
    "SourceInfo",
    "TfdsSource",
    "eval_batches",
    "get_source",
    "list_sources",
    "local_datasets",
    "make_dataset",
    "make_pair_dataset",
    "read_idx",
]
