"""FID, KID, precision/recall and IS of a sampler against a dataset split: the protocol in one place.

Samples are quantised to uint8 (as every published protocol saves them to PNG) before the
extractor sees them. Reference features are computed once per (dataset, split, count, extractor,
resize) and cached as a pickle-free .npz, so periodic evaluation in training only pays for the
samples. Every result carries a `protocol` line naming sample count, reference and extractor.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
from typing import Any, Callable, Iterator

import numpy as np

from train.metrics import frechet
from train.metrics.features import Extractor
from train.metrics.inception_score import inception_score
from train.metrics.kid import kernel_inception_distance
from train.metrics.precision_recall import precision_recall
from zoo import files

log = logging.getLogger(__name__)

Sampler = Callable[[int], np.ndarray]  # batch index -> uint8 images [B, H, W, C]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a sample set is compared with a reference: counts, subsets, k and the seed of KID's subsets."""

    num_samples: int = 10_000
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    pr_k: int = 3
    seed: int = 0


def to_uint8(images: Any, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Float images in [low, high] -> uint8 [0, 255], rounded as PNG writers do."""
    x = (np.asarray(images, np.float32) - low) / (high - low)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def source_batches(source: Any, batch_size: int, limit: int = 0) -> Iterator[np.ndarray]:
    """uint8 images of a random-access source in order, `batch_size` at a time, the first `limit` (0 = all)."""
    n = min(limit or len(source), len(source))
    for start in range(0, n, batch_size):
        yield np.stack([np.asarray(source[i]["image"]) for i in range(start, min(start + batch_size, n))])


def extract(extractor: Extractor, batches: Iterator[np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The extractor's outputs over batches of uint8 images, the first `limit` rows."""
    parts: dict[str, list[np.ndarray]] = {}
    count = 0
    for images in batches:
        images = images[: limit - count]
        for key, value in extractor(images).items():
            parts.setdefault(key, []).append(value)
        count += len(images)
        if count >= limit:
            break
    if count < limit:
        raise ValueError(f"asked for {limit} images but the batches ran out after {count}")
    return {key: np.concatenate(values) for key, values in parts.items()}


def sample_outputs(extractor: Extractor, sampler: Sampler, num_samples: int) -> dict[str, np.ndarray]:
    """The extractor's outputs on `num_samples` images drawn batch by batch from `sampler`."""
    return extract(extractor, (sampler(i) for i in range(num_samples)), num_samples)


def reference_outputs(extractor: Extractor, source: Any, name: str, limit: int,
                      cache: pathlib.Path | None) -> dict[str, np.ndarray]:
    """The extractor's outputs on the first `limit` images (0 = all) of `source`, cached under `cache`.

    `name` identifies the dataset and split (e.g. the config's data spec); the cache file's
    metadata must match exactly, so stats from another extractor, resize or count are recomputed,
    never reused.
    """
    n = min(limit or len(source), len(source))
    metadata = frechet.make_metadata(dataset=name, split="", extractor=extractor.name, resize=extractor.resize, count=n)
    path = None
    if cache is not None:
        digest = hashlib.sha256(metadata.encode()).hexdigest()[:16]
        path = cache / f"reference-{extractor.name.split('@')[0]}-{digest}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if str(z["metadata"]) == metadata:
                    return {k: z[k] for k in z.files if k != "metadata"}
            log.warning("%s holds other reference features; recomputing", path)
    log.info("computing reference features for %s (%d images, %s)", name, n, extractor.name)
    outputs = extract(extractor, source_batches(source, extractor.batch_size, n), n)
    if path is not None:
        _save_npz(path, dict(outputs, metadata=np.str_(metadata)))
    return outputs


def _save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays atomically: a reader never sees half a file, an interrupted write leaves none."""
    with files.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def compare(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], protocol: Protocol) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall and, with class probabilities, IS of `fake` against `real`."""
    x, y = real["features"].astype(np.float64), fake["features"].astype(np.float64)
    fid = frechet.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    subset = min(protocol.kid_subset_size, len(x), len(y))
    k = kernel_inception_distance(x, y, num_subsets=protocol.kid_subsets, subset_size=subset, seed=protocol.seed)
    pr = precision_recall(x, y, k=protocol.pr_k)
    out = {"fid": fid, "kid": k.mean, "kid_std": k.std, "precision": pr.precision, "recall": pr.recall}
    if "probs" in fake:
        score = inception_score(fake["probs"], splits=min(10, len(y)))
        out |= {"inception_score": score.mean, "inception_score_std": score.std}
    return out


def describe(protocol: Protocol, extractor: Extractor, reference: str, num_reference: int) -> str:
    """The one line every reported figure carries: counts, reference, extractor and resize."""
    return (f"{protocol.num_samples} samples vs {num_reference} images of {reference}; extractor {extractor.name}, "
            f"resize {extractor.resize}; KID {protocol.kid_subsets} subsets of {protocol.kid_subset_size}; "
            f"precision/recall k={protocol.pr_k}")
