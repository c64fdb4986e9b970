"""Fréchet distance between Gaussians fitted to features (FID), with streaming statistics.

Features arrive in batches from an extractor, so `FeatureAccumulator` keeps a running float64
mean and centred scatter matrix merged with Chan et al.'s parallel update: the answer does not
depend on how the data was split into batches, and a large common offset in the features does
not cancel catastrophically as a raw sum of squares would. `ReferenceStats` are the (mu, sigma,
count, metadata) of a reference set, saved as a pickle-free `.npz` whose metadata names the
dataset, split, extractor and resize, because FIDs are only comparable when those agree.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import warnings
from typing import Any, Mapping

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from zoo import files

#: Keys every reference-stats file holds.
STATS_KEYS = ("mu", "sigma", "count", "metadata")
#: Keys the metadata JSON must name, because FIDs are only comparable when they agree.
METADATA_KEYS = ("dataset", "split", "extractor", "resize")
#: Relative residual ||X X - A||_F / ||A||_F above which sqrtm's result is retried with an offset.
SQRTM_RESIDUAL_RTOL = 1e-5


def _as_features(features: ArrayLike, dim: int | None) -> np.ndarray:
    """`features` as a float64 (n, d) array, checked against the expected dim, so bad shapes fail early."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (n, d); got {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"features have dim {x.shape[1]}, expected {dim}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x


class FeatureAccumulator:
    """Streaming float64 mean and covariance of (n, d) feature batches, independent of batch split."""

    def __init__(self, dim: int | None = None) -> None:
        """An empty accumulator; `dim` is fixed by the first batch when not given."""
        self.dim = dim
        self.count = 0
        self._mean = None if dim is None else np.zeros(dim)
        self._scatter = None if dim is None else np.zeros((dim, dim))

    def update(self, features: ArrayLike) -> FeatureAccumulator:
        """Adds a batch of (n, d) features; returns self so calls chain."""
        x = _as_features(features, self.dim)
        if x.shape[0] == 0:
            return self
        mean = x.mean(axis=0)
        centred = x - mean
        return self._merge(x.shape[0], mean, centred.T @ centred)

    def merge(self, other: FeatureAccumulator) -> FeatureAccumulator:
        """Adds another accumulator's samples (e.g. from another host); returns self."""
        if other.count == 0:
            return self
        if self.dim is not None and other.dim != self.dim:
            raise ValueError(f"cannot merge dim {other.dim} into dim {self.dim}")
        return self._merge(other.count, other._mean, other._scatter)

    def _merge(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> FeatureAccumulator:
        """Chan et al.'s pairwise update of (count, mean, scatter), stable for large offsets."""
        if self.count == 0:
            self.dim = mean_b.shape[0]
            self.count, self._mean, self._scatter = n_b, mean_b.copy(), scatter_b.copy()
            return self
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n
        return self

    @property
    def mean(self) -> np.ndarray:
        """The (d,) sample mean so far."""
        if self.count == 0:
            raise ValueError("no features accumulated")
        return self._mean.copy()

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """The (d, d) sample covariance; ddof=1 matches np.cov and the usual FID statistics."""
        if self.count <= ddof:
            raise ValueError(f"covariance with ddof={ddof} needs more than {ddof} samples; have {self.count}")
        return self._scatter / (self.count - ddof)

    def to_reference(self, metadata: str) -> ReferenceStats:
        """These statistics as `ReferenceStats`, labelled with `make_metadata(...)`'s string."""
        return ReferenceStats(mu=self.mean, sigma=self.covariance(), count=self.count, metadata=metadata)


def make_metadata(*, dataset: str, split: str, extractor: str, resize: str, **extra: Any) -> str:
    """The canonical metadata JSON for reference stats, so files that should compare equal do."""
    return json.dumps(dict(extra, dataset=dataset, split=split, extractor=extractor, resize=resize), sort_keys=True)


def _parse_metadata(metadata: str) -> dict[str, Any]:
    """The metadata JSON as a dict, or a ValueError saying what it lacks."""
    try:
        info = json.loads(metadata)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"metadata must be a JSON object string (see make_metadata); got {metadata!r}") from e
    if not isinstance(info, dict):
        raise ValueError(f"metadata must be a JSON object string (see make_metadata); got {metadata!r}")
    missing = [k for k in METADATA_KEYS if k not in info]
    if missing:
        raise ValueError(f"metadata lacks {missing}; it must name {list(METADATA_KEYS)}")
    return info


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Gaussian statistics of a feature set plus the metadata saying how the features were made."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    metadata: str

    def __post_init__(self) -> None:
        """Checks shapes, count and metadata so a malformed set of stats never reaches a metric."""
        mu, sigma = np.asarray(self.mu, dtype=np.float64), np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"need mu (d,) and sigma (d, d); got {mu.shape} and {sigma.shape}")
        if int(self.count) < 2:
            raise ValueError(f"count must be at least 2; got {self.count}")
        _parse_metadata(self.metadata)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "count", int(self.count))

    @property
    def info(self) -> dict[str, Any]:
        """The metadata as a dict (dataset, split, extractor, resize, and any extras)."""
        return _parse_metadata(self.metadata)


def save_reference_stats(path: str | os.PathLike, stats: ReferenceStats) -> pathlib.Path:
    """Writes `stats` to `path` as a pickle-free .npz, atomically so readers never see half a file."""
    path = pathlib.Path(path)
    with files.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count), metadata=np.str_(stats.metadata))
    return path


def load_reference_stats(path: str | os.PathLike) -> ReferenceStats:
    """Reads stats written by `save_reference_stats`, refusing pickles and files missing keys."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in STATS_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{path}: reference stats file lacks {missing}; it must hold {list(STATS_KEYS)}")
        return ReferenceStats(mu=z["mu"], sigma=z["sigma"], count=int(z["count"]), metadata=str(z["metadata"]))


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """sqrtm(sigma1 @ sigma2), quietly, as (possibly complex) array; may be non-finite or inaccurate."""
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(product)
    root = np.asarray(root)
    if not np.isfinite(root).all():
        return root
    norm = np.linalg.norm(product)
    residual = np.linalg.norm(root @ root - product) / norm if norm > 0 else 0.0
    if residual > SQRTM_RESIDUAL_RTOL:
        return np.full_like(root, np.nan)  # treat as failed: the caller retries with an offset
    return root


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *, eps: float = 1e-6, imag_atol: float = 1e-3
) -> float:
    """|mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)): the Fréchet distance of two Gaussians, as in FID."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2

    covmean = _sqrtm_product(sigma1, sigma2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dims): the usual fix is a small diagonal offset.
        offset = np.eye(d) * eps
        covmean = _sqrtm_product(sigma1 + offset, sigma2 + offset)
        if not np.isfinite(covmean).all():
            raise ValueError(f"sqrtm(sigma1 @ sigma2) failed even with eps={eps} added to the diagonals")
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > imag_atol:
            raise ValueError(
                f"sqrtm(sigma1 @ sigma2) has imaginary component {imag:.3g} > {imag_atol}: "
                "the covariances are probably not positive semi-definite (too few samples, or not covariances)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_between(a: ReferenceStats, b: ReferenceStats, **kwargs: Any) -> float:
    """`frechet_distance` of two stats, refusing pairs made with different extractors or resizes."""
    ia, ib = a.info, b.info
    for key in ("extractor", "resize"):
        if ia[key] != ib[key]:
            raise ValueError(f"stats differ in {key}: {ia[key]!r} vs {ib[key]!r}; their FID would be meaningless")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, **kwargs)


def reference_stats(features: ArrayLike, metadata: str | Mapping[str, Any]) -> ReferenceStats:
    """Reference stats of an in-memory (n, d) feature array (metadata as string or make_metadata kwargs)."""
    if not isinstance(metadata, str):
        metadata = make_metadata(**metadata)
    return FeatureAccumulator().update(features).to_reference(metadata)
