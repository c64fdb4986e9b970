"""Feature-statistics metrics against independent references: closed forms, numpy, brute force."""
import json

import chex
import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats

from train import metrics
from train.metrics import frechet


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    """A well-conditioned random covariance."""
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fid_reference(mu1, s1, mu2, s2) -> float:
    """FID via Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric eigen-decomposition route independent of sqrtm(S1 S2)."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


META = metrics.make_metadata(dataset="mnist", split="test", extractor="inception_v3_pool3", resize="299 bilinear")


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_spd(rng, 16)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_shifted_mean_same_covariance_is_squared_shift():
    rng = np.random.default_rng(1)
    mu, sigma, shift = rng.normal(size=16), _random_spd(rng, 16), rng.normal(size=16)
    got = metrics.frechet_distance(mu, sigma, mu + shift, sigma)
    np.testing.assert_allclose(got, shift @ shift, rtol=1e-8)


def test_frechet_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3.0, size=12), rng.uniform(0.1, 3.0, size=12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_general_covariances_match_symmetric_route():
    rng = np.random.default_rng(3)
    mu1, mu2, s1, s2 = rng.normal(size=20), rng.normal(size=20), _random_spd(rng, 20), _random_spd(rng, 20)
    np.testing.assert_allclose(metrics.frechet_distance(mu1, s1, mu2, s2), _fid_reference(mu1, s1, mu2, s2), rtol=1e-8)


def test_frechet_rank_deficient_covariances_stay_finite_and_accurate():
    """Fewer samples than dims (singular covariances), the common small-eval-set case."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 32)), rng.normal(size=(12, 32)) + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    got = metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2)
    np.testing.assert_allclose(got, _fid_reference(x.mean(0), s1, y.mean(0), s2), rtol=1e-5)


def test_frechet_retries_with_offset_when_sqrtm_fails(monkeypatch):
    """The eps-offset fallback: a non-finite sqrtm is retried on (S1 + eps I)(S2 + eps I)."""
    rng = np.random.default_rng(5)
    mu, s1, s2 = rng.normal(size=8), _random_spd(rng, 8), _random_spd(rng, 8)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", flaky_sqrtm)
    got = metrics.frechet_distance(mu, s1, mu, s2, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(8)) @ (s2 + 1e-6 * np.eye(8)))
    np.testing.assert_allclose(got, _fid_reference(mu, s1, mu, s2), atol=1e-4)


def test_frechet_large_imaginary_part_is_an_error():
    with pytest.raises(ValueError, match="imaginary"):
        metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_frechet_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- streaming statistics


@pytest.mark.parametrize("sizes", [[500], [1, 499], [7, 100, 1, 0, 392], [250, 250]])
def test_accumulator_matches_numpy_for_any_batch_split(sizes):
    rng = np.random.default_rng(6)
    # A large common offset: a naive float sum of squares would lose the covariance's digits.
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 1e4
    acc = metrics.FeatureAccumulator()
    for batch in np.split(x, np.cumsum(sizes)[:-1]):
        acc.update(batch.astype(np.float64))
    chex.assert_shape([acc.mean, acc.covariance()], [(6,), (6, 6)])
    assert acc.count == 500
    np.testing.assert_allclose(acc.mean, np.mean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance(), np.cov(x, rowvar=False), rtol=1e-8, atol=1e-8)


def test_accumulator_merge_equals_single_pass():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 5))
    a, b = metrics.FeatureAccumulator().update(x[:120]), metrics.FeatureAccumulator(dim=5).update(x[120:])
    merged = a.merge(b)
    np.testing.assert_allclose(merged.mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(merged.covariance(), np.cov(x, rowvar=False), atol=1e-12)


def test_accumulator_rejects_bad_input():
    acc = metrics.FeatureAccumulator(dim=4)
    with pytest.raises(ValueError, match="dim 3"):
        acc.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="needs more than 1"):
        acc.update(np.zeros((1, 4))).covariance()


# ---------------------------------------------------------------- reference stats files


def test_reference_stats_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    stats = metrics.reference_stats(rng.normal(size=(50, 7)), META)
    path = metrics.save_reference_stats(tmp_path / "refs" / "mnist_test.npz", stats)
    loaded = metrics.load_reference_stats(path)
    chex.assert_shape([loaded.mu, loaded.sigma], [(7,), (7, 7)])
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 50 and loaded.metadata == META
    assert loaded.info["extractor"] == "inception_v3_pool3" and loaded.info["resize"] == "299 bilinear"
    assert [p.name for p in path.parent.iterdir()] == ["mnist_test.npz"]  # no temporary left behind
    assert metrics.frechet_distance_between(stats, loaded) == pytest.approx(0.0, abs=1e-8)


def test_reference_stats_file_missing_keys_is_a_clear_error(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match=r"lacks \['count', 'metadata'\]"):
        metrics.load_reference_stats(path)


def test_reference_stats_refuse_pickles_and_bare_metadata(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3), count=5, metadata=np.array([{"dataset": "x"}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        metrics.load_reference_stats(path)
    with pytest.raises(ValueError, match=r"lacks \['split', 'extractor', 'resize'\]"):
        metrics.ReferenceStats(np.zeros(3), np.eye(3), 5, json.dumps({"dataset": "x"}))


def test_frechet_between_refuses_different_extractors():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20, 4))
    a = metrics.reference_stats(x, META)
    b = metrics.reference_stats(x, dict(json.loads(META), extractor="clip_vit_b32"))
    with pytest.raises(ValueError, match="extractor"):
        metrics.frechet_distance_between(a, b)


# ---------------------------------------------------------------- KID


def _mmd2_brute_force(x, y) -> float:
    """The unbiased MMD^2 U-statistic written out pair by pair, with KID's cubic kernel."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_brute_force_u_statistic():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(25, 5)), rng.normal(size=(25, 5)) + 0.2
    # One subset of all rows is a permutation of each set, which the U-statistic ignores.
    got = metrics.kernel_inception_distance(x, y, num_subsets=1, subset_size=25)
    np.testing.assert_allclose(got.mean, _mmd2_brute_force(x, y), rtol=1e-10)
    assert got.std == 0.0


def test_kid_is_unbiased_on_same_distribution():
    """Mean over 400 subsets within 3 standard errors of 0, a bound the biased V-statistic misses by far.

    The pools (20k rows) are 400x the subset size, so subsets barely overlap and std/sqrt(n) is
    the standard error of the mean; the fixed seed makes the check deterministic.
    """
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(20000, 16)), rng.normal(size=(20000, 16))
    n, m = 400, 50
    kid = metrics.kernel_inception_distance(x, y, num_subsets=n, subset_size=m, seed=0)
    bound = 3 * kid.std / np.sqrt(n)
    assert abs(kid.mean) < bound, (kid, bound)
    # The biased estimator (diagonals kept) on the same sizes: its bias ~ 2 (E k(x,x) - E k(x,y)) / m.
    xs, ys = x[:m], y[:m]
    k = lambda a, b: (a @ b.T / 16 + 1.0) ** 3
    biased = k(xs, xs).mean() + k(ys, ys).mean() - 2 * k(xs, ys).mean()
    assert biased > 10 * bound


def test_kid_is_clearly_positive_for_shifted_distributions():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16)) + 0.5
    kid = metrics.kernel_inception_distance(x, y, num_subsets=50, subset_size=200)
    assert kid.mean > 0.3 and kid.mean > 10 * kid.std / np.sqrt(50), kid


def test_kid_is_deterministic_by_seed_and_checks_sizes():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    run = lambda seed: metrics.kernel_inception_distance(x, y, num_subsets=5, subset_size=100, seed=seed)
    assert run(3) == run(3)
    assert run(3) != run(4)
    with pytest.raises(ValueError, match="subset_size=1000"):
        metrics.kernel_inception_distance(x, y)


# ---------------------------------------------------------------- precision / recall


def _pr_brute_force(real, fake, k=3):
    """Precision/recall from scipy's cdist and a full sort: the definition, without blocking."""
    rr, ff = scipy.spatial.distance.cdist(real, real), scipy.spatial.distance.cdist(fake, fake)
    r_rad, f_rad = np.sort(rr, axis=1)[:, k], np.sort(ff, axis=1)[:, k]  # column 0 is the point itself
    fr = scipy.spatial.distance.cdist(fake, real)
    return (fr <= r_rad[None, :]).any(1).mean(), (fr.T <= f_rad[None, :]).any(1).mean()


def test_precision_recall_identical_sets_are_one():
    x = np.random.default_rng(14).normal(size=(200, 8))
    assert metrics.precision_recall(x, x.copy()) == (1.0, 1.0)


def test_precision_recall_far_apart_sets_are_zero():
    rng = np.random.default_rng(15)
    real, fake = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) + 100.0
    assert metrics.precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_small_blocks_match_brute_force():
    """Odd block sizes exercise the blocked k-NN merge and the per-block coverage test."""
    rng = np.random.default_rng(16)
    real = rng.normal(size=(120, 5))
    fake = np.concatenate([rng.normal(size=(60, 5)) * 1.5, rng.normal(size=(40, 5)) + 4.0])
    got = metrics.precision_recall(real, fake, row_batch_size=7, col_batch_size=11)
    expected = _pr_brute_force(real, fake)
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 1.0  # a case that distinguishes errors
    np.testing.assert_allclose(got, expected)
    radii = metrics.knn_radii(real, 3, row_batch_size=13, col_batch_size=9)
    chex.assert_shape(radii, (120,))
    np.testing.assert_allclose(np.sqrt(radii), np.sort(scipy.spatial.distance.cdist(real, real), 1)[:, 3], rtol=1e-9)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_uniform_confident_is_number_of_classes():
    classes, splits = 10, 10
    labels = np.arange(splits * classes * 3) % classes  # every split holds each class equally often
    assert metrics.inception_score(np.eye(classes)[labels], splits=splits) == pytest.approx((classes, 0.0), abs=1e-9)


def test_inception_score_identical_predictions_is_one():
    p = np.random.default_rng(17).dirichlet(np.ones(7))
    assert metrics.inception_score(np.tile(p, (100, 1))) == pytest.approx((1.0, 0.0), abs=1e-9)


def test_inception_score_matches_entropy_reference():
    """Per split: exp of the mean KL from each row to the split's marginal, via scipy.stats.entropy."""
    probs = np.random.default_rng(18).dirichlet(np.full(6, 0.3), size=99)
    per_split = [np.exp(np.mean([scipy.stats.entropy(p, part.mean(0)) for p in part])) for part in np.split(probs, 3)]
    got = metrics.inception_score(probs, splits=3)
    np.testing.assert_allclose(got, (np.mean(per_split), np.std(per_split)), rtol=1e-10)
    assert got.std > 0


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="logits"):
        metrics.inception_score(np.random.default_rng(19).normal(size=(20, 5)))
