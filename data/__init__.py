"""Data layer: random-access sources named by spec strings, and grain pipelines the trainer iterates.

The public names below load their modules on first use (`zoo.lazy`), as do the submodules, so
`import data.faces.extract` (and each extraction worker it spawns) imports neither grain nor JAX.
"""
from typing import TYPE_CHECKING

from zoo import lazy

_EXPORTS = {
    **dict.fromkeys(("eval_batches", "make_dataset", "make_pair_dataset"), "data.pipeline"),
    **dict.fromkeys(("ArraySource", "DatasetNotPreparedError", "Source", "SourceInfo", "TfdsSource", "get_source",
                     "list_sources", "local_datasets", "read_idx"), "data.sources"),
}
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
__getattr__, __dir__ = lazy.attributes(globals(), _EXPORTS)

if TYPE_CHECKING:
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
