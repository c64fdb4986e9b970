"""The detection family's pure functions: the balanced loss, one training run on a toy, the metric rows."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from data.base import ArraySource
from train import parallel, sections
from train.families import detect
from train.metrics import detection


def _bce(logit: np.ndarray, label: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, logit) - label * logit  # -y log s(x) - (1 - y) log(1 - s(x))


def test_balanced_bce_weighs_each_class_half_whatever_its_share():
    rng = np.random.default_rng(0)
    logit = rng.normal(size=10).astype(np.float32)
    label = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 1], np.float32)
    per = _bce(logit.astype(np.float64), label)
    want = 0.5 * per[label == 1].mean() + 0.5 * per[label == 0].mean()
    np.testing.assert_allclose(detect.balanced_bce(jnp.asarray(logit), jnp.asarray(label), True), want, rtol=1e-6)
    np.testing.assert_allclose(detect.balanced_bce(jnp.asarray(logit), jnp.asarray(label), False), per.mean(),
                               rtol=1e-6)


def test_balanced_bce_gradient_is_the_same_on_one_device_and_split_over_eight():
    """Each replica sees other class counts; with the counts averaged, the mean of their gradients is the global one."""
    n = jax.device_count()
    rng = np.random.default_rng(1)
    logit = jnp.asarray(rng.normal(size=2 * n), jnp.float32)
    label = jnp.asarray((np.arange(2 * n) % 3 == 0), jnp.float32)  # replicas hold 0, 1 or 2 fakes
    whole = jax.grad(lambda x: detect.balanced_bce(x, label, True))(logit)

    def replica(x, y):
        return jax.grad(lambda v: detect.balanced_bce(v, y, True))(x)

    # A replica's gradient reaches shared params through its own rows only; the trainer's pmean divides by n.
    split = jax.pmap(replica, axis_name=parallel.AXIS)(logit.reshape(n, 2), label.reshape(n, 2))
    chex.assert_trees_all_close(split.reshape(-1) / n, whole, atol=1e-7)


def _config(model: str, **model_fields) -> ml_collections.ConfigDict:
    c = sections.base_config()
    c.family = "detect"
    c.detect = sections.detect()
    c.detect.sweep = ("jpeg50",)
    c.model = sections.model_section(model, **model_fields)
    c.total_steps = 30
    c.optim.learning_rate = 3e-3
    c.eval.batch_size = 16
    return c


def _toy(n: int, seed: int) -> ArraySource:
    """Real: noisy textures; fake: flat grey images. Label 1 = fake."""
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    fake = np.full((n, 32, 32, 3), 128, np.uint8)
    return ArraySource("toy", np.concatenate([real, fake]), np.repeat([0, 1], n), num_classes=2)


def test_a_detector_trained_a_few_steps_on_an_easy_toy_separates_it_completely():
    config = _config("resnet_detector", stages=(1, 1), widths=(8, 16))
    family = detect.make(config, (32, 32, 3))
    train, test = _toy(32, 0), _toy(24, 1)
    state = family.init(jax.random.key(0), None)
    step = jax.jit(family.steps["train"].fn)
    rng = np.random.default_rng(0)
    for i in range(config.total_steps):
        rows = rng.choice(len(train), 16, replace=False)
        batch = {k: jnp.asarray(v) for k, v in train.gather(rows).items()}
        state, metrics = step(state, batch, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"]))
    results = family.host_evaluators["detect"](state, test, 0)
    assert results["auc"] == 1.0 and results["num_real"] == 24 and results["num_fake"] == 24
    assert "jpeg50/auc" in results


def test_the_detect_rows_are_the_metric_module_on_the_model_scores():
    config = _config("resnet_detector", stages=(1, 1), widths=(8, 16))
    family = detect.make(config, (32, 32, 3))
    state = family.init(jax.random.key(1), None)
    test = _toy(10, 2)
    results = family.host_evaluators["detect"](state, test, 0)
    model = family.steps["train"].fn.args[0]
    scores = np.asarray(detect.logits(model, state, jnp.asarray(test.images)))
    want = detection.summarize(test.labels, scores.astype(np.float64))
    for key, value in want.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key


def test_export_carries_params_and_batch_statistics():
    config = _config("resnet_detector", stages=(1, 1), widths=(8, 16))
    family = detect.make(config, (32, 32, 3))
    state = family.init(jax.random.key(0), None)
    exported = family.export(state)
    assert exported.model == "resnet_detector"
    chex.assert_trees_all_equal(exported.params, state["params"]["detector"])
    assert set(exported.collections) == set(state["collections"]["detector"])
    assert optax.global_norm(exported.params) > 0


@pytest.mark.parametrize("name", detect.SPECTRAL)
def test_spectral_baselines_are_refused_with_where_to_fit_them(name):
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="spectral_head"):
        detect.make(_config(name), (32, 32, 3))
