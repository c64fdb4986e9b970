"""Inception Score (Salimans et al. 2016) from a classifier's class probabilities.

IS = exp(E_x[KL(p(y|x) || p(y))]): high when each sample is classified confidently (sharp
p(y|x)) and the samples cover many classes (broad p(y)). It ranges from 1 to the number of
classes. As in the original code, the samples are cut into `splits` contiguous parts, the score
is computed on each, and the mean and (population) std over parts are reported.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special
from numpy.typing import ArrayLike


class ISResult(NamedTuple):
    """Mean and standard deviation of the per-split Inception Scores."""

    mean: float
    std: float


def inception_score(probs: ArrayLike, splits: int = 10, *, atol: float = 1e-3) -> ISResult:
    """IS of (n, classes) probabilities, checked to be rows summing to 1 so logits are not passed by mistake."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (n, classes); got {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=atol):
        raise ValueError("probs must be non-negative rows summing to 1 (softmax outputs, not logits)")
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, n] = [1, {n}]; got {splits}")
    scores = np.empty(splits)
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        # rel_entr gives 0 where p(y|x) = 0, so one-hot predictions need no epsilon.
        kl = scipy.special.rel_entr(part, marginal).sum(axis=1).mean()
        scores[i] = np.exp(kl)
    return ISResult(mean=float(scores.mean()), std=float(scores.std()))
