"""Detection metrics: a detector's scores and the real/fake labels -> AUC, AP, accuracy, TPR at fixed FPR.

Conventions, shared with the detection family: label 1 = fake, 0 = real; a score is a logit (higher =
more likely fake, 0.0 = probability 0.5). One decision rule holds everywhere here: an example is
flagged fake when `score > threshold`, so `accuracy_at`, `threshold_at_fpr` and `tpr_at_fpr` agree
on what a threshold means. The numbers follow the published protocols: frame-level ROC AUC
(DeepfakeBench), AP and accuracy at 0.5 (Wang et al. 2020), TPR at a pinned low FPR, and video-level
AUC over per-video mean scores (DeepfakeBench's video AUC). Everything is NumPy on the host, float64.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from zoo.errors import DataError

__all__ = [
    "VideoScores",
    "accuracy_at",
    "average_precision",
    "roc_auc",
    "summarize",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "video_level",
]

SUMMARY_FPRS = {"tpr@1%fpr": 0.01, "tpr@5%fpr": 0.05}
"""The pinned false-positive rates `summarize` reports TPR at."""


class VideoScores(NamedTuple):
    """Per-video aggregates: the group keys (sorted), each video's mean score and its label."""

    keys: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _checked(labels: ArrayLike, scores: ArrayLike, *, both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float64, both 1-D of one length; DataError naming the fault otherwise."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise DataError(f"labels {y.shape} and scores {s.shape} must be 1-D arrays of one length "
                        "(one label and one logit per example); flatten them first")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise DataError(f"labels must be 0 (real) or 1 (fake); got {bad.tolist()}")
    if not np.isfinite(s).all():
        raise DataError(f"{int((~np.isfinite(s)).sum())} of {s.size} scores are NaN or infinite; a detector that "
                        "diverged has no AUC: check its training loss, or drop those examples knowingly")
    y = y.astype(bool)
    if both:
        num_fake = int(y.sum())
        if num_fake == 0 or num_fake == y.size:
            present = "no fake (label 1)" if num_fake == 0 else "no real (label 0)"
            raise DataError(f"{y.size} examples with {present} example: AUC, AP and TPR at FPR need both classes; "
                            "evaluate on a split holding real and fake images")
    return y, s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` in ascending order, ties given their mean rank (as Mann-Whitney needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: P(fake score > real score) + 1/2 P(equal), the Mann-Whitney U / (n1 n0).

    Equal to the trapezoidal area under the full ROC curve (scikit-learn's roc_auc_score), ties included.
    """
    y, s = _checked(labels, scores)
    num_fake, num_real = int(y.sum()), int((~y).sum())
    rank_sum = _average_ranks(s)[y].sum()
    return float((rank_sum - num_fake * (num_fake + 1) / 2.0) / (num_fake * num_real))


def _descending_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true, false) positives at each distinct score, highest first, flagging `score >= t`."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y)[last_of_tie]
    fps = np.cumsum(~y)[last_of_tie]
    return tps.astype(np.float64), fps.astype(np.float64)


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """AP = sum over distinct thresholds (highest first) of (R_n - R_{n-1}) P_n, scikit-learn's definition.

    A step sum, not the trapezoid (which is optimistic); tied scores form one threshold, so a tie
    between a fake and a real counts at their joint precision.
    """
    y, s = _checked(labels, scores)
    tps, fps = _descending_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def accuracy_at(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.0) -> float:
    """Share of examples classified right when `score > threshold` means fake (0.0 on logits = probability 0.5).

    Needs no particular class mix; an empty input is a DataError.
    """
    y, s = _checked(labels, scores, both=False)
    if not y.size:
        raise DataError("accuracy of no examples: pass at least one label and score")
    return float(np.mean((s > threshold) == y))


def _max_count(fpr: float, n: int) -> int:
    """The largest k in [0, n] with k / n <= fpr, compared in floating point exactly as an ROC curve's FPRs are."""
    k = min(max(int(np.floor(fpr * n)), 0), n)
    while k < n and (k + 1) / n <= fpr:
        k += 1
    while k > 0 and k / n > fpr:
        k -= 1
    return k


def threshold_at_fpr(negative_scores: ArrayLike, fpr: float) -> float:
    """The lowest threshold at which at most a share `fpr` of real examples is flagged (`score > threshold`).

    With the real scores sorted from high to low, s_1 >= s_2 >= ... >= s_n, and k the largest count with
    k / n <= fpr, this is s_{k+1}: at most k real scores exceed it, and any lower threshold flags at
    least k + 1. Ties make the realised FPR on these scores smaller than `fpr`, never larger (all real
    scores equal to the threshold stay unflagged). fpr >= 1 gives -inf (flag everything); fpr = 0 gives
    the highest real score. This is a detector's pinned operating point: computed once on held-out real
    images, then applied unchanged to other sets.
    """
    if not 0.0 <= fpr <= 1.0 or not np.isfinite(fpr):
        raise DataError(f"fpr={fpr} must be a rate in [0, 1] (0.05 for 5%)")
    s = np.asarray(negative_scores, dtype=np.float64)
    if s.ndim != 1 or not s.size:
        raise DataError(f"negative_scores must be a non-empty 1-D array of real examples' scores; got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataError(f"{int((~np.isfinite(s)).sum())} real scores are NaN or infinite; no threshold exists")
    k = _max_count(fpr, s.size)
    if k == s.size:
        return float("-inf")
    return float(np.sort(s)[::-1][k])


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """True-positive rate at the lowest threshold whose FPR on the real examples does not exceed `fpr`.

    The threshold is `threshold_at_fpr(real scores, fpr)` and fakes count when `score > threshold`.
    That is the highest TPR among the ROC curve's points with FPR <= fpr (the point at the largest
    such FPR), as read from scikit-learn's roc_curve without interpolation: a block of tied scores is
    never split, so when real and fake examples tie at the threshold none of them is flagged.
    """
    y, s = _checked(labels, scores)
    threshold = threshold_at_fpr(s[~y], fpr)
    return float(np.mean(s[y] > threshold))


def video_level(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> VideoScores:
    """Each video's mean frame score and its label, keyed by `groups` (a clip id per frame), keys sorted.

    DeepfakeBench's video-level protocol; a video whose frames carry both labels is a DataError, since a
    clip is real or fake as a whole and a mixed one means the grouping key is wrong.
    """
    y, s = _checked(labels, scores, both=False)
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise DataError(f"groups {g.shape} must give one video key per example, like labels {y.shape}")
    if not y.size:
        raise DataError("no frames to group into videos")
    keys, inverse = np.unique(g, return_inverse=True)
    inverse = inverse.reshape(-1)
    frames = np.bincount(inverse, minlength=keys.size)
    fakes = np.bincount(inverse, weights=y.astype(np.float64), minlength=keys.size)
    mixed = np.flatnonzero((fakes > 0) & (fakes < frames))
    if mixed.size:
        shown = ", ".join(repr(k.item() if hasattr(k, "item") else k) for k in keys[mixed[:5]])
        raise DataError(f"{mixed.size} video(s) mix real and fake frames ({shown}); a video key must name one clip, "
                        "so group by the clip id (the `video` field), not by identity")
    means = np.bincount(inverse, weights=s, minlength=keys.size) / frames
    return VideoScores(keys=keys, scores=means, labels=(fakes > 0).astype(np.int64))


def summarize(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike | None = None) -> dict[str, float]:
    """The detection row of an evaluation: auc, ap, acc (at logit 0), tpr@1%fpr, tpr@5%fpr, counts; video_auc with groups.

    `num_real` and `num_fake` count frames; every value is a float so the row goes into JSON as is.
    """
    y, s = _checked(labels, scores)
    row = {
        "auc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "acc": accuracy_at(y, s, 0.0),
        **{name: tpr_at_fpr(y, s, rate) for name, rate in SUMMARY_FPRS.items()},
    }
    if groups is not None:
        videos = video_level(y, s, groups)
        row["video_auc"] = roc_auc(videos.labels, videos.scores)
    row["num_real"] = float((~y).sum())
    row["num_fake"] = float(y.sum())
    return row
