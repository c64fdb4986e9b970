"""The feature-extractor interface (FID, KID, precision/recall, IS) and where their files are cached.

An extractor takes uint8 images, the form every FID protocol quantises samples to before
measuring them, and returns pooled features (and class probabilities where it has a classifier
head). Its `name` and `resize` are written into every reference-statistics file and result, so two
numbers are only ever compared when they came from the same network at the same input size. The
networks themselves (`inception`, `domain`) and the registry by name (`extractors`) build on this.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

import numpy as np

from zoo import files


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A feature network: `apply(uint8 [batch_size, H, W, C]) -> {"features": [.., D], "probs": [.., K]}`.

    `probs` is present only when `num_classes > 0` (the Inception Score needs it). Calling the
    extractor feeds `apply` exactly `batch_size` images at a time, zero-padding the last chunk and
    dropping its padded rows, so a compiled network sees one shape per image size and memory stays
    bounded.
    """

    name: str
    resize: str
    feature_dim: int
    num_classes: int
    batch_size: int
    apply: Callable[[np.ndarray], dict[str, np.ndarray]]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"extractor {self.name!r} takes uint8 images [N, H, W, 1 or 3], got {images.dtype} {images.shape}; "
                "quantise samples with train.metrics.generative.to_uint8 first"
            )
        return self._chunked(images)

    def unquantised(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for float images on the uint8 scale [0, 255], not rounded: for finite differences (the
        perceptual path length's epsilon step), which quantising would erase. The networks convert their
        input to float32 first, so a uint8 image and its float copy give the same features."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"extractor {self.name!r} takes images [N, H, W, 1 or 3], got {images.shape}")
        return self._chunked(images)

    def _chunked(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            n = len(chunk)
            padded = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)])
            for key, value in self.apply(padded).items():
                out.setdefault(key, []).append(np.asarray(value)[:n])
        return {key: np.concatenate(values) for key, values in out.items()}


def cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    """Where extractor weights and reference statistics live: `override`, $ZOO_CACHE, or ~/.cache."""
    return files.cache_dir(override)
