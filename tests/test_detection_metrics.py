"""Detection metrics (train.metrics.detection) against scikit-learn, on random, tied and hand-made scores."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from train.metrics import detection
from zoo.errors import DataError


def _cases():
    """(labels, scores) pairs: continuous, heavily tied (scores on a coarse grid), unbalanced, separable."""
    rng = np.random.default_rng(0)
    cases = []
    for n, share, grid in [(200, 0.5, None), (333, 0.2, None), (400, 0.5, 0.5), (150, 0.9, 1.0), (1000, 0.3, 0.25)]:
        labels = (rng.random(n) < share).astype(int)
        labels[:2] = (0, 1)
        scores = rng.normal(size=n) + 0.8 * labels
        if grid is not None:
            scores = np.round(scores / grid) * grid
        cases.append((labels, scores))
    cases.append((np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 0.0, 0.0])))  # all tied
    cases.append((np.array([0, 1, 0, 1, 1]), np.array([-3.0, 2.0, -1.0, 5.0, 0.5])))  # separable
    return cases


CASES = _cases()


def _sklearn_tpr_at_fpr(labels, scores, target):
    """The TPR of roc_curve's last point with FPR <= target (every threshold kept, no interpolation)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return tpr[np.searchsorted(fpr, target, side="right") - 1]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_auc_and_ap_match_sklearn(case):
    labels, scores = CASES[case]
    assert detection.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert detection.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores),
                                                                        abs=1e-12)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.29, 0.5, 1.0])
def test_tpr_at_fpr_matches_sklearn_roc_curve(case, target):
    labels, scores = CASES[case]
    assert detection.tpr_at_fpr(labels, scores, target) == pytest.approx(
        _sklearn_tpr_at_fpr(labels, scores, target), abs=1e-12)


def test_tpr_at_fpr_by_hand_with_a_tie_at_the_threshold():
    # 10 reals: 0..9; at 10% FPR one real (9) may be flagged, so the threshold is the 2nd highest real, 8.
    reals = np.arange(10.0)
    fakes = np.array([8.0, 8.5, 9.5, 3.0])  # the fake tied with the threshold (8.0) is not flagged
    labels = np.r_[np.zeros(10), np.ones(4)]
    scores = np.r_[reals, fakes]
    assert detection.threshold_at_fpr(reals, 0.1) == 8.0
    assert detection.tpr_at_fpr(labels, scores, 0.1) == 0.5
    # With two reals tied at the top, 10% FPR cannot flag one of them alone: nothing real is flagged.
    tied = np.r_[np.arange(8.0), 9.0, 9.0]
    assert detection.threshold_at_fpr(tied, 0.1) == 9.0
    assert detection.tpr_at_fpr(labels, np.r_[tied, fakes], 0.1) == 0.25


def test_threshold_at_fpr_realises_at_most_the_rate():
    rng = np.random.default_rng(1)
    reals = np.round(rng.normal(size=997), 1)  # ties
    for target in (0.0, 0.01, 0.05, 0.2, 0.999):
        t = detection.threshold_at_fpr(reals, target)
        assert np.mean(reals > t) <= target
        assert np.mean(reals >= t) > target  # any lower threshold would flag more than the rate
    assert detection.threshold_at_fpr(reals, 1.0) == -np.inf
    assert detection.threshold_at_fpr(reals, 0.0) == reals.max()


def test_accuracy_at_counts_score_above_threshold_as_fake():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([-1.0, 0.0, 0.0, 0.1, 2.0])
    assert detection.accuracy_at(labels, scores) == pytest.approx(4 / 5)  # logit 0 = p 0.5 is "real"
    assert detection.accuracy_at(labels, scores, threshold=-0.5) == pytest.approx(4 / 5)
    assert detection.accuracy_at(labels, scores, threshold=5.0) == pytest.approx(2 / 5)


def test_video_level_means_and_sorted_keys():
    scores = np.array([1.0, 3.0, -2.0, 0.5, 4.0, 0.0])
    labels = np.array([1, 1, 0, 0, 1, 0])
    groups = np.array(["b", "b", "a", "c", "d", "a"])
    videos = detection.video_level(labels, scores, groups)
    assert videos.keys.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(videos.scores, [-1.0, 2.0, 0.5, 4.0])
    assert videos.labels.tolist() == [0, 1, 0, 1]


def test_video_level_refuses_a_video_with_both_labels():
    with pytest.raises(DataError, match=r"1 video\(s\) mix real and fake frames \(7\)"):
        detection.video_level([0, 1, 0], [0.1, 0.2, 0.3], [7, 7, 8])


def test_summarize_row_against_sklearn_and_video_auc():
    rng = np.random.default_rng(2)
    videos, frames = 40, 8
    video_labels = np.r_[np.zeros(videos // 2), np.ones(videos // 2)].astype(int)
    groups = np.repeat(np.arange(videos), frames)
    labels = video_labels[groups]
    scores = rng.normal(size=videos * frames) + 0.7 * labels + np.repeat(rng.normal(size=videos), frames)
    row = detection.summarize(labels, scores, groups)
    assert set(row) == {"auc", "ap", "acc", "tpr@1%fpr", "tpr@5%fpr", "video_auc", "num_real", "num_fake"}
    assert all(isinstance(v, float) for v in row.values())
    assert row["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert row["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert row["acc"] == pytest.approx(np.mean((scores > 0) == labels))
    assert row["tpr@5%fpr"] == pytest.approx(_sklearn_tpr_at_fpr(labels, scores, 0.05), abs=1e-12)
    video_scores = scores.reshape(videos, frames).mean(axis=1)
    assert row["video_auc"] == pytest.approx(roc_auc_score(video_labels, video_scores), abs=1e-12)
    assert (row["num_real"], row["num_fake"]) == (160.0, 160.0)
    assert "video_auc" not in detection.summarize(labels, scores)


@pytest.mark.parametrize("labels, message", [([0, 0, 0], "no fake"), ([1, 1], "no real")])
def test_a_missing_class_is_a_data_error(labels, message):
    with pytest.raises(DataError, match=message):
        detection.summarize(labels, np.zeros(len(labels)))


@pytest.mark.parametrize("labels, scores, message", [
    ([0, 1, 2], [0.0, 1.0, 2.0], "must be 0 \\(real\\) or 1 \\(fake\\)"),
    ([0, 1], [0.0, np.nan], "NaN or infinite"),
    ([0, 1, 1], [0.0, 1.0], "one length"),
])
def test_bad_inputs_are_data_errors(labels, scores, message):
    with pytest.raises(DataError, match=message):
        detection.roc_auc(labels, scores)


def test_threshold_at_fpr_refuses_a_percentage():
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        detection.threshold_at_fpr([0.0, 1.0], 5)
