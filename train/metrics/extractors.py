"""The feature extractors by name: `get_extractor("inception_v3_fid" | "domain_mnist" | ...)`.

The interface they share is `train.metrics.features.Extractor`; each network lives in its own
module, imported only when its name is asked for. The zoo's own extractors are read from the files
bundled in zoo/weights (`BUNDLED`, sha256 pinned), never trained on the machine that measures: their
seeded training is not bitwise repeatable across CPUs and XLA flags, and two machines' Fashion-MNIST
extractors put one GAN's FID at 32.2 and 34.1.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

from train.metrics.features import Extractor, cache_dir
from zoo import pretrained
from zoo.errors import WeightsError

BUNDLED = {  # zoo/weights/<name>-v1.safetensors, each trained by its module with the defaults
    "domain_mnist": "d7a7d8f7f6704d580203c4fea67840bf08d02de5bb7d2f09388a35c168ec0420",
    "domain_fashion_mnist": "30639353a9b1c150f390034914fdb58d1734e8f3622bb5f2c985969caa8c4524",
    "domain_synthetic_faces": "aac0e0d87f9e3c766805de84e40a4c8d82d20c4f8febc15aeffa436b8ef2d331",
}


def bundled_weights(name: str) -> str:
    """The path of extractor `name`'s file shipped in zoo/weights, checked against its pinned sha256."""
    path = pretrained.WEIGHTS_DIR / f"{name}-v1.safetensors"
    what = f"the bundled {name} extractor"
    if not path.is_file():
        raise WeightsError(f"{what} is missing: no {path}; reinstall deepfake-zoo (its package data include it)")
    pretrained.verify_sha256(path, BUNDLED[name], what=what, fix="the bundled file was changed: reinstall deepfake-zoo")
    return str(path)


def _inception(cache: pathlib.Path, weights: str | None) -> Extractor:
    from train.metrics import inception

    return inception.fid_inception_extractor(weights, cache)


def _domain(dataset: str) -> Callable[[pathlib.Path, str | None], Extractor]:
    def build(cache: pathlib.Path, weights: str | None) -> Extractor:
        from train.metrics import domain

        return domain.domain_extractor(dataset, cache, weights or bundled_weights(f"domain_{dataset}"))

    return build


def _synthetic_faces(cache: pathlib.Path, weights: str | None) -> Extractor:
    from train.metrics import domain_faces

    return domain_faces.faces_extractor(cache, weights or bundled_weights("domain_synthetic_faces"))


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
