"""Improved precision and recall (Kynkäänniemi et al. 2019) from k-NN manifold estimates.

Each set's manifold is approximated by the union of balls around its samples with radius the
distance to that sample's k-th nearest neighbour (k=3 in the paper). Precision is the fraction
of fake samples inside the real manifold (fidelity); recall is the fraction of real samples
inside the fake manifold (coverage). FID mixes the two; these separate them. Distances are
computed in (row_batch_size, col_batch_size) blocks, so memory stays bounded for 50k+ samples.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class PRResult(NamedTuple):
    """Precision (fake inside real manifold) and recall (real inside fake manifold), both in [0, 1]."""

    precision: float
    recall: float


def _as_features(features: ArrayLike) -> np.ndarray:
    """`features` as a float64 (n, d) array, so shape errors surface here rather than in a matmul."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (n, d); got {x.shape}")
    return x


def _squared_distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of rows, via |a|^2 + |b|^2 - 2 a.b (clipped at 0)."""
    d = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def knn_radii(features: ArrayLike, k: int = 3, *, row_batch_size: int = 1024, col_batch_size: int = 8192) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row: the manifold ball radii."""
    x = _as_features(features)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n) = [1, {n}); got {k}")
    sq = np.einsum("ij,ij->i", x, x)
    radii = np.empty(n)
    for r0 in range(0, n, row_batch_size):
        rows = slice(r0, min(r0 + row_batch_size, n))
        best = np.full((rows.stop - r0, k + 1), np.inf)  # the k+1 smallest so far, self included
        for c0 in range(0, n, col_batch_size):
            cols = slice(c0, min(c0 + col_batch_size, n))
            d = _squared_distances(x[rows], sq[rows], x[cols], sq[cols])
            lo, hi = max(r0, c0), min(rows.stop, cols.stop)
            if lo < hi:  # self-distances are exactly zero, whatever the rounding of the expansion
                idx = np.arange(lo, hi)
                d[idx - r0, idx - c0] = 0.0
            best = np.partition(np.concatenate([best, d], axis=1), k, axis=1)[:, : k + 1]
        radii[rows] = best.max(axis=1)
    return radii


def fraction_inside(
    queries: ArrayLike,
    references: ArrayLike,
    radii: np.ndarray,
    *,
    row_batch_size: int = 1024,
    col_batch_size: int = 8192,
) -> float:
    """Fraction of query rows within squared distance radii[j] of some reference row j."""
    q, r = _as_features(queries), _as_features(references)
    radii = np.asarray(radii, np.float64)
    if q.shape[1] != r.shape[1] or radii.shape != (r.shape[0],):
        raise ValueError(f"shape mismatch: queries {q.shape}, references {r.shape}, radii {radii.shape}")
    q_sq, r_sq = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", r, r)
    inside = np.zeros(q.shape[0], dtype=bool)
    for r0 in range(0, q.shape[0], row_batch_size):
        rows = slice(r0, min(r0 + row_batch_size, q.shape[0]))
        hit = np.zeros(rows.stop - r0, dtype=bool)
        for c0 in range(0, r.shape[0], col_batch_size):
            cols = slice(c0, min(c0 + col_batch_size, r.shape[0]))
            hit |= (_squared_distances(q[rows], q_sq[rows], r[cols], r_sq[cols]) <= radii[None, cols]).any(axis=1)
            if hit.all():
                break
        inside[rows] = hit
    return float(inside.mean())


def precision_recall(
    real: ArrayLike, fake: ArrayLike, *, k: int = 3, row_batch_size: int = 1024, col_batch_size: int = 8192
) -> PRResult:
    """Improved precision and recall of fake features against real ones, with k-NN radii (k=3)."""
    x, y = _as_features(real), _as_features(fake)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake features differ in dim: {x.shape} vs {y.shape}")
    batches = dict(row_batch_size=row_batch_size, col_batch_size=col_batch_size)
    real_radii = knn_radii(x, k, **batches)
    fake_radii = knn_radii(y, k, **batches)
    return PRResult(
        precision=fraction_inside(y, x, real_radii, **batches),
        recall=fraction_inside(x, y, fake_radii, **batches),
    )
