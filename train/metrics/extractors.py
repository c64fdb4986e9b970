"""The feature extractors by name: `get_extractor("inception_v3_fid" | "domain_mnist" | ...)`.

The interface they share is `train.metrics.features.Extractor`; each network lives in its own
module, imported only when its name is asked for.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

from train.metrics.features import Extractor, cache_dir


def _inception(cache: pathlib.Path, weights: str | None) -> Extractor:
    from train.metrics import inception

    return inception.fid_inception_extractor(weights, cache)


def _domain(dataset: str) -> Callable[[pathlib.Path, str | None], Extractor]:
    def build(cache: pathlib.Path, weights: str | None) -> Extractor:
        from train.metrics import domain

        return domain.domain_extractor(dataset, cache, weights or str(domain.bundled_weights(dataset)))

    return build


def _synthetic_faces(cache: pathlib.Path, weights: str | None) -> Extractor:
    from train.metrics import domain_faces

    return domain_faces.faces_extractor(cache, weights)


EXTRACTORS: dict[str, Callable[[pathlib.Path, str | None], Extractor]] = {
    "inception_v3_fid": _inception,
    "domain_mnist": _domain("mnist"),
    "domain_fashion_mnist": _domain("fashion_mnist"),
    "domain_synthetic_faces": _synthetic_faces,
}


def list_extractors() -> list[str]:
    """Names `get_extractor` accepts."""
    return sorted(EXTRACTORS)


def get_extractor(name: str, *, cache: str | os.PathLike | None = None, weights: str | None = None) -> Extractor:
    """The extractor called `name`; `weights` overrides where its weights file is read from."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(list_extractors())}")
    return EXTRACTORS[name](cache_dir(cache), weights)
