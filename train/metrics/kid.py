"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

Unlike FID, the estimator is unbiased, so its expectation is zero when both feature sets come from
the same distribution and small sample sizes do not inflate it. As in the paper and
torch-fidelity, it is averaged over `num_subsets` random subsets of `subset_size` rows drawn
without replacement from each set; the mean and (population) std over subsets are reported.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class KIDResult(NamedTuple):
    """Mean and standard deviation of the per-subset MMD^2 estimates."""

    mean: float
    std: float


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (x.y / d + coef0)^degree for all row pairs: KID's kernel, scale-free in d."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 U-statistic of two equal-size samples (within-set diagonals excluded)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"need two samples of the same size >= 2; got {x.shape[0]} and {y.shape[0]}")
    k_xx = polynomial_kernel(x, x, degree=degree, coef0=coef0)
    k_yy = polynomial_kernel(y, y, degree=degree, coef0=coef0)
    k_xy = polynomial_kernel(x, y, degree=degree, coef0=coef0)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    # x_i and y_i are independent, so every cross pair (the diagonal included) is unbiased.
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """KID of two (n, d) feature sets: unbiased polynomial MMD^2 averaged over seeded random subsets."""
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need (n, d) feature arrays with the same d; got {x.shape} and {y.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be positive; got {num_subsets}")
    if not 2 <= subset_size <= min(x.shape[0], y.shape[0]):
        raise ValueError(
            f"subset_size={subset_size} needs 2 <= subset_size <= min(#real, #fake) = "
            f"{min(x.shape[0], y.shape[0])}; pass a smaller subset_size or more samples"
        )
    rng = np.random.default_rng(seed)
    scores = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], subset_size, replace=False)]
        ys = y[rng.choice(y.shape[0], subset_size, replace=False)]
        scores[i] = mmd2_unbiased(xs, ys, degree=degree, coef0=coef0)
    return KIDResult(mean=float(scores.mean()), std=float(scores.std()))
