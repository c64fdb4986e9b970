"""Feature-statistics metrics for generative models: FID, KID, precision/recall and Inception Score.

Each takes features (or class probabilities) already extracted on the host as arrays, so any
extractor can feed them and the numbers do not depend on the accelerator.
"""
from train.metrics.frechet import (
    FeatureAccumulator,
    ReferenceStats,
    frechet_distance,
    frechet_distance_between,
    load_reference_stats,
    make_metadata,
    reference_stats,
    save_reference_stats,
)
from train.metrics.inception_score import ISResult, inception_score
from train.metrics.kid import KIDResult, kernel_inception_distance, mmd2_unbiased
from train.metrics.precision_recall import PRResult, fraction_inside, knn_radii, precision_recall

__all__ = [
    "FeatureAccumulator",
    "ISResult",
    "KIDResult",
    "PRResult",
    "ReferenceStats",
    "fraction_inside",
    "frechet_distance",
    "frechet_distance_between",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "load_reference_stats",
    "make_metadata",
    "mmd2_unbiased",
    "precision_recall",
    "reference_stats",
    "save_reference_stats",
]
