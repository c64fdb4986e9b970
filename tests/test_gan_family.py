"""The GAN family: losses and penalties against their formulas, step schedule, strategies agree, clear errors."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import set_fields
from scipy.special import expit

from train import config as config_lib
from train import runs
from train.families import gan

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke(name: str = "dcgan_mnist", **overrides):
    """A config's :smoke variant on ../shared/data's MNIST, whatever data the config names."""
    config = config_lib.load(str(ROOT / f"configs/{name}.py:smoke"))
    config.data.source = "idx:../shared/data/mnist"
    return set_fields(config, overrides)


@pytest.fixture
def in_repo(monkeypatch, shared_data):
    monkeypatch.chdir(ROOT)


def test_losses_match_their_formulas():
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=64) * 3, rng.normal(size=64) * 3
    ns_d = -np.log(expit(r)) - np.log(1 - expit(f))
    np.testing.assert_allclose(gan.discriminator_loss("non_saturating", r, f), ns_d, rtol=1e-5)
    np.testing.assert_allclose(gan.generator_loss("non_saturating", f), -np.log(expit(f)), rtol=1e-5)
    np.testing.assert_allclose(gan.discriminator_loss("hinge", r, f),
                               np.maximum(0, 1 - r) + np.maximum(0, 1 + f), rtol=1e-6)
    np.testing.assert_allclose(gan.discriminator_loss("wgan_gp", r, f), f - r, rtol=1e-6)
    for kind in ("hinge", "wgan_gp"):
        np.testing.assert_allclose(gan.generator_loss(kind, f), -f, rtol=1e-6)


@pytest.mark.parametrize("norm", [1.0, 2.0, 0.5])
def test_gradient_penalty_and_r1_of_a_linear_critic(norm):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 8, 3))
    w = jnp.asarray(w / np.linalg.norm(w) * norm, jnp.float32)
    critic = lambda x: jnp.einsum("bhwc,hwc->b", x, w)  # noqa: E731  gradient w everywhere
    x = jnp.asarray(rng.normal(size=(5, 8, 8, 3)), jnp.float32)
    # a 1-Lipschitz linear critic with a unit-norm gradient has zero penalty; otherwise (|w| - 1)^2
    np.testing.assert_allclose(gan.gradient_penalty(critic, x), (norm - 1.0) ** 2, atol=1e-6)
    np.testing.assert_allclose(gan.r1_penalty(critic, x), norm**2, rtol=1e-5)


def test_gradient_penalty_is_per_example():
    critic = lambda x: jnp.sum(x**2, axis=(1, 2, 3))  # noqa: E731  gradient 2x, norm 2|x|
    x = jnp.stack([jnp.full((2, 2, 1), 0.25), jnp.full((2, 2, 1), 1.0)])
    norms = 2 * np.sqrt(4 * np.array([0.25, 1.0]) ** 2)
    np.testing.assert_allclose(gan.gradient_penalty(critic, x), np.mean((norms - 1) ** 2), rtol=1e-5)


def test_ema_half_life_counts_images():
    beta = gan.ema_beta(64, 10_000)
    assert beta ** (10_000 / 64) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"gan.loss": "wgan"}, "non_saturating, hinge, wgan_gp"),
        ({"gan.loss": "wgan_gp"}, "gan.discriminator.norm = 'none' or 'layer'"),
        ({"gan.diffaugment": "color,flip"}, "unknown DiffAugment op 'flip'"),
        ({"gan.n_critic": 0}, "gan.n_critic = 0 must be >= 1"),
    ],
)
def test_bad_gan_configs_fail_at_build_with_the_fix(overrides, message, in_repo):

    with pytest.raises(config_lib.ConfigError) as error:
        runs.build(smoke(**overrides))
    assert message in str(error.value)


def test_discriminator_section_is_checked_against_its_model():
    config = smoke()
    config.gan.discriminator.ndff = 3
    with pytest.raises(config_lib.ConfigError, match="Did you mean 'ndf'"):
        config_lib.validate(config, gan.section())


def test_conditional_models_must_agree_on_classes(in_repo):

    config = smoke("sngan_fashion_mnist")
    config.model.num_classes = 10
    with pytest.raises(config_lib.ConfigError, match="gan.discriminator.num_classes = 0"):
        runs.build(config)


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_frozen_config_with_another_discriminator_reloads(tmp_path, in_repo):
    from train import trainer

    config = smoke("sngan_fashion_mnist", total_steps=1, eval_every=0, preview_every=0)
    trainer.train(config, tmp_path)
    reloaded = runs.load_config(tmp_path)
    assert reloaded.gan.discriminator.to_dict() == config.gan.discriminator.to_dict()


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_generator_steps_every_n_critic_and_r1_on_its_interval(tmp_path, in_repo):
    from train import trainer

    config = smoke(**{"gan.n_critic": 2, "gan.r1_gamma": 1.0, "gan.r1_every": 3, "eval_every": 0})
    state = trainer.train(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps_with = lambda key: [r["step"] for r in records if key in r]  # noqa: E731
    assert steps_with("train/D/loss") == [1, 2, 3, 4]
    assert steps_with("train/G/loss") == [1, 3]  # trainer steps 0 and 2
    assert steps_with("train/D_r1/r1_penalty") == [1, 4]  # trainer steps 0 and 3
    adam_counts = {net: int(jax.tree.leaves(state["opt_state"][net][0].count)[0]) for net in ("G", "D")}
    assert adam_counts == {"G": 2, "D": 6}


@pytest.mark.slow
def test_conditional_sngan_trains_and_exports_a_loadable_generator(tmp_path, in_repo):
    from train import export, trainer
    from zoo import pretrained

    config = smoke("sngan_fashion_mnist", **{"model.num_classes": 10, "gan.discriminator.num_classes": 10,
                                     "gan.ema_half_life_images": 500.0, "gan.diffaugment": "color,translation,cutout"})
    state = trainer.train(config, tmp_path)
    assert "ema" in state and set(state["collections"]) == {"G", "D"}
    loaded = pretrained.load(export.export_run(tmp_path))
    assert set(loaded.collections) == {"batch_stats"}
    z, labels = jnp.zeros((3, 128)), jnp.array([0, 5, 9])
    images = loaded.module.apply(loaded.variables, z, labels)
    expected = loaded.module.apply({"params": state["ema"]["G"], **state["collections"]["G"]}, z, labels)
    np.testing.assert_allclose(images, expected, atol=1e-6)
    assert not np.allclose(images[0], images[1], atol=1e-4), "class labels should change the samples"


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("dcgan_mnist", {"gan.r1_gamma": 1.0, "gan.r1_every": 2}),
    ("sngan_fashion_mnist", {"gan.loss": "wgan_gp", "gan.discriminator.spectral_norm": True, "gan.n_critic": 2}),
])
def test_one_device_jit8_and_pmap8_reach_the_same_parameters(name, extra, tmp_path, in_repo):
    from test_trainer import assert_params_close, params_of

    from train import trainer

    assert jax.device_count() == 8
    common = {"total_steps": 3, "eval_every": 0, "preview_every": 0, "checkpoint.every": 0,
              "gan.ema_half_life_images": 100.0, "gan.diffaugment": "color,translation,cutout",
              "optim.name": "sgd", "optim.learning_rate": 0.01, **extra}
    # SGD, because Adam turns float noise in near-zero gradients into lr-sized steps
    one = trainer.train(smoke(name, **common, **{"parallel.num_devices": 1}), tmp_path / "one")
    jit8 = trainer.train(smoke(name, **common), tmp_path / "jit8")
    pmap8 = trainer.train(smoke(name, **common, **{"parallel.strategy": "pmap"}), tmp_path / "pmap8")
    setup = runs.build(smoke(name, **common))
    initial = params_of(setup.family.init(*setup.init_args))
    p_one = params_of(one)
    moved = {k.split("/")[0] for k in p_one if not np.allclose(initial[k], p_one[k])}
    assert moved == {"G", "D"}, f"training moved only {moved}"
    # Batch statistics summed in another order on 8 devices leave float noise of ~1e-5 in parameters
    # that 3 steps move by ~1e-3; an unsynchronised batch norm would differ by the whole update.
    tol = dict(rtol=1e-3, atol=5e-5)
    for other in (jit8, pmap8):
        assert_params_close(p_one, params_of(other), **tol)
        assert_params_close(params_of({"params": one["ema"]}), params_of({"params": other["ema"]}), **tol)
        for net, collections in one.get("collections", {}).items():
            for a, b in zip(jax.tree.leaves(collections), jax.tree.leaves(other["collections"][net])):
                np.testing.assert_allclose(a, b, **tol)


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_missing_fid_weights_name_the_download_and_cost_no_checkpoint(tmp_path, in_repo, monkeypatch):
    from train import checkpoint, trainer

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_FID_INCEPTION_WEIGHTS", raising=False)
    config = smoke(**{"eval.metrics": ("fid",), "gan.extractor": "inception_v3_fid", "checkpoint.every": 4})
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth") as error:
        trainer.train(config, tmp_path / "run")
    assert "https://github.com/mseitzer/pytorch-fid/releases" in str(error.value)
    assert checkpoint.Checkpointer(tmp_path / "run").steps() == [4], "the checkpoint is saved before evaluating"
