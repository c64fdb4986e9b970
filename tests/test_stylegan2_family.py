"""StyleGAN2's training recipe in the GAN family: penalties against finite differences, lazy Adam, EMA ramp-up, ADA's
controller in the state, strategies agree, exports load."""
from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import set_fields

from train import config as config_lib
from train.config import ConfigError
from train.families import gan
from zoo import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(image_shape=(16, 16, 3), channel_base=128, channel_max=8)


@functools.lru_cache(maxsize=None)
def _net(name: str, **kw):
    model = registry.create_model(name, **(SMALL | kw))
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), *model.example_inputs())


def _float64(name: str, **kw):
    """The small net in float64 (model dtype and variables), so central differences are exact to ~1e-9."""
    model, v = _net(name, **kw)
    return model.clone(dtype=jnp.float64), jax.tree.map(lambda a: np.asarray(a, np.float64), v)


def _directional(f, x, u, eps=1e-5):
    """Central difference of a scalar f along u: in float64 with a step small enough to cross no lrelu kink."""
    return (float(f(x + eps * u)) - float(f(x - eps * u))) / (2 * eps)


@pytest.mark.slow  # compiles the networks (and their derivatives) for several seconds
def test_path_length_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        gen, v = _float64("stylegan2_g", latent_dim=8, w_dim=8, mapping_layers=2)
        keys = jax.random.split(jax.random.PRNGKey(1), 3)
        z = jax.random.normal(jax.random.PRNGKey(2), (3, 8), jnp.float64)
        ws = gen.apply(v, z, method=gen.map_latents)
        style_keys = gan.style_kwargs(gen, keys, 0.0)["keys"]
        grads = jax.jit(gan.path_length_grads, static_argnums=0)(gen, v, ws, style_keys, keys)
        y = gan.path_length_noise(keys, (16, 16, 3))
        assert ws.dtype == grads.dtype == y.dtype == jnp.float64
        f = jax.jit(lambda w: jnp.sum(gen.apply(v, w, style_keys, method=gen.synthesize) * y))
        rng = np.random.default_rng(0)
        for _ in range(3):
            u = jnp.asarray(rng.normal(size=ws.shape))
            assert _directional(f, ws, u) == pytest.approx(float(jnp.sum(grads * u)), rel=1e-6)
        g = np.asarray(grads)
        np.testing.assert_allclose(gan.path_lengths(grads), np.sqrt((g**2).sum(2).mean(1)), rtol=1e-12)


@pytest.mark.slow  # compiles the networks (and their derivatives) for several seconds
def test_r1_gradient_of_the_stylegan2_discriminator_matches_finite_differences():
    with jax.enable_x64(True):
        d, v = _float64("stylegan2_d", mbstd_group=2)
        x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(4, 16, 16, 3)))
        logits = jax.jit(lambda x: d.apply(v, x))
        assert logits(x).dtype == jnp.float64
        grad = jax.grad(lambda x: jnp.sum(logits(x)))(x)
        rng = np.random.default_rng(4)
        for _ in range(3):
            u = jnp.asarray(rng.normal(size=x.shape))
            assert _directional(lambda t: jnp.sum(logits(t)), x, u) == pytest.approx(float(jnp.sum(grad * u)),
                                                                                     rel=1e-6)
        want = np.mean(np.sum(np.asarray(grad) ** 2, axis=(1, 2, 3)))
        assert float(gan.r1_penalty(logits, x)) == pytest.approx(want, rel=1e-6)


def _config(**overrides):
    config = config_lib.load(str(ROOT / "configs/stylegan2_fashion_mnist.py:smoke"))
    return set_fields(config, overrides)


def test_lazy_adam_rescales_lr_and_betas_by_the_interval_ratio(monkeypatch):
    seen = {}
    real_make = gan.optim_lib.make

    def spy(optim, steps):
        seen[len(seen)] = optim.to_dict()
        return real_make(optim, steps)

    monkeypatch.setattr(gan.optim_lib, "make", spy)
    gan.optimizers(_config(**{"gan.pl_weight": 2.0, "gan.pl_every": 4, "gan.r1_every": 16,
                              "optim.learning_rate": 0.0025, "optim.b1": 0.5, "optim.b2": 0.99}))
    g, d = seen[0], seen[1]
    assert g["learning_rate"] == pytest.approx(0.0025 * 4 / 5) and g["b2"] == pytest.approx(0.99 ** (4 / 5))
    assert d["learning_rate"] == pytest.approx(0.0025 * 16 / 17) and d["b2"] == pytest.approx(0.99 ** (16 / 17))
    assert g["b1"] == pytest.approx(0.5 ** 0.8) and d["b1"] == pytest.approx(0.5 ** (16 / 17))


def test_ema_half_life_ramps_up_with_the_images_seen():
    r = gan.recipe(_config(**{"gan.ema_half_life_images": 10_000.0, "gan.ema_rampup": 0.05, "batch_size": 16}))
    for step in (1, 100, 20_000):
        half_life = min(10_000.0, step * 16 * 0.05)
        assert float(gan.ema_decay(r, jnp.int32(step))) == pytest.approx(0.5 ** (16 / half_life), rel=1e-5)


def test_ada_step_moves_p_by_the_controllers_rule_and_resets_the_statistic():
    state = {"ada": gan.ada_state(0.1) | {"sign_sum": jnp.float32(3.6), "steps": jnp.float32(4.0)}}
    new, metrics = gan.ada_step(0.6, 64 * 4, 500.0, state, {}, jax.random.PRNGKey(0))
    assert float(metrics["r_t"]) == pytest.approx(0.9)
    assert float(new["ada"]["p"]) == pytest.approx(0.1 + 256 / 500_000)  # r_t > target: D overfits, p rises
    assert float(new["ada"]["sign_sum"]) == 0.0 and float(new["ada"]["steps"]) == 0.0
    state = {"ada": gan.ada_state(0.0) | {"sign_sum": jnp.float32(-1.0), "steps": jnp.float32(4.0)}}
    assert float(gan.ada_step(0.6, 256, 500.0, state, {}, jax.random.PRNGKey(0))[0]["ada"]["p"]) == 0.0


@pytest.mark.parametrize("overrides, message", [
    ({"model.name": "dcgan_g", "gan.style_mixing": 0.9}, "style-based generator"),
    ({"gan.style_mixing": 1.5}, "probability"),
    ({"gan.ada_target": 0.6, "gan.diffaugment": "color"}, "switch one off"),
    ({"gan.ada_target": 0.6, "gan.ada_pipe": "bgz"}, "gan.ada_pipe"),
    ({"gan.pl_weight": 2.0, "gan.pl_batch_shrink": 3}, "must divide batch_size"),
    ({"gan.lazy_adam": True, "optim.name": "sgd"}, "rescales Adam"),
    ({"gan.ppl_sampling": "middle"}, "'end'"),
    ({"gan.truncation_psi": (0.5, 1.5)}, r"in \[0, 1\]"),
])
def test_bad_stylegan2_recipes_fail_at_build_with_the_fix(overrides, message):
    from train import sections

    model = overrides.pop("model.name", None)
    config = _config(**overrides)
    if model:
        config.model = sections.model_section(model)
    with pytest.raises(ConfigError, match=message):
        gan.make(config, (32, 32, 1))


@pytest.fixture
def in_repo(monkeypatch, shared_data):
    monkeypatch.chdir(ROOT)


def _smoke_on_mnist(**overrides):
    return _config(**{"data.source": "idx:../shared/data/mnist", **overrides})


@pytest.mark.slow
def test_one_device_jit8_and_pmap8_reach_the_same_stylegan2_parameters(tmp_path, in_repo):
    from test_trainer import assert_params_close, params_of

    from train import runs, trainer

    assert jax.device_count() == 8
    common = {"total_steps": 5, "eval_every": 0, "preview_every": 0, "checkpoint.every": 0,
              "gan.discriminator.mbstd_group": 2, "gan.r1_gamma": 1.0, "gan.r1_every": 2, "gan.pl_weight": 2.0,
              "gan.pl_every": 2, "gan.style_mixing": 0.9, "gan.ema_half_life_images": 100.0, "gan.ema_rampup": 0.5,
              "gan.ada_target": 0.6, "gan.ada_p": 0.5, "gan.ada_every": 2, "gan.ada_kimg": 0.5, "gan.lazy_adam": False,
              "optim.name": "sgd", "optim.learning_rate": 0.01}
    one = trainer.train(_smoke_on_mnist(**common, **{"parallel.num_devices": 1}), tmp_path / "one")
    jit8 = trainer.train(_smoke_on_mnist(**common), tmp_path / "jit8")
    pmap8 = trainer.train(_smoke_on_mnist(**common, **{"parallel.strategy": "pmap"}), tmp_path / "pmap8")
    setup = runs.build(_smoke_on_mnist(**common))
    initial = params_of(setup.family.init(*setup.init_args))
    p_one = params_of(one)
    moved = {k.split("/")[0] for k in p_one if not np.allclose(initial[k], p_one[k])}
    assert moved == {"G", "D"}, f"training moved only {moved}"
    assert float(one["ada"]["p"]) not in (0.0, 0.5), "ADA's controller should have moved p"
    assert float(one["pl_mean"]) > 0
    tol = dict(rtol=1e-3, atol=5e-5)
    for other in (jit8, pmap8):
        assert_params_close(p_one, params_of(other), **tol)
        assert_params_close(params_of({"params": one["ema"]}), params_of({"params": other["ema"]}), **tol)
        for a, b in zip(jax.tree.leaves(one["collections"]), jax.tree.leaves(other["collections"])):
            np.testing.assert_allclose(a, b, **tol)
        for key in ("pl_mean",):
            np.testing.assert_allclose(one[key], other[key], rtol=1e-4)
        np.testing.assert_allclose(one["ada"]["p"], other["ada"]["p"])


@pytest.mark.slow
def test_stylegan2_trains_and_exports_a_generator_that_loads_with_its_buffers(tmp_path, in_repo):
    from train import export, trainer
    from zoo import pretrained

    config = _smoke_on_mnist(**{"gan.style_mixing": 0.9, "gan.pl_weight": 2.0, "gan.pl_every": 2,
                                "gan.ema_half_life_images": 500.0, "eval_every": 0})
    state = trainer.train(config, tmp_path)
    w_avg = state["collections"]["G"]["buffers"]["mapping"]["w_avg"]
    assert float(jnp.abs(w_avg).sum()) > 0, "training should track w_avg"
    loaded = pretrained.load(export.export_run(tmp_path))
    assert set(loaded.collections) == {"buffers"}
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
    images = loaded.module.apply(loaded.variables, z, psi=0.7, noise_mode="const")
    expected = loaded.module.apply({"params": state["ema"]["G"], **state["collections"]["G"]}, z, psi=0.7,
                                   noise_mode="const")
    np.testing.assert_allclose(images, expected, atol=1e-6)


def _pixel_extractor(n: int):
    """Features = the image's pixels / 255: a linear extractor, so the path length has a closed form."""
    from train.metrics.features import Extractor

    return Extractor(name="pixels@test", resize="none", feature_dim=16 * 16 * 3, num_classes=0, batch_size=n,
                     apply=lambda images: {"features": np.asarray(images, np.float32).reshape(len(images), -1) / 255})


def _g_state(**overrides):
    gen, v = _net("stylegan2_g", latent_dim=8, w_dim=8, mapping_layers=2)
    v = jax.tree_util.tree_map_with_path(lambda p, a: a + 0.3 if p[-1].key == "noise_strength" else a, v)
    config = _config(**{"gan.sample_batch_size": 8, **overrides})
    return gen, {"params": {"G": v["params"]}, "collections": {"G": {"buffers": v["buffers"]}}}, config


@pytest.mark.slow  # compiles the networks (and their derivatives) for several seconds
def test_ppl_equals_the_squared_directional_derivative_of_the_features(monkeypatch):
    from zoo import layers

    gen, state, config = _g_state(**{"gan.ppl_samples": 8})
    monkeypatch.setattr(gan.extractors, "get_extractor", lambda name, weights=None: _pixel_extractor(8))
    out = gan.eval_ppl(config, gen, False, state, None, 0)
    # Independently: with linear features the distance is |d image / dt|^2 / 255^2 * 127.5^2 at t = 0 (forward mode).
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(gan.evaluators.eval_key(config.seed), gan._PL),
                                                 j))(jnp.arange(8))
    v = {"params": state["params"]["G"], **state["collections"]["G"]}
    z0, _ = gan.latents(gen, keys)
    z1 = gan.draws(keys, gan._MIX, lambda k: jax.random.normal(k, (8,)))
    w0, w1 = (gen.apply(v, z, method=gen.map_latents) for z in (z0, z1))
    with layers.use_forms("plain"):
        _, tangent = jax.jvp(lambda w: gen.apply(v, w, None, "const", method=gen.synthesize), (w0,), (w1 - w0,))
    d = np.sum(np.square(np.asarray(tangent, np.float64) * 127.5 / 255), axis=(1, 2, 3))
    lo, hi = np.percentile(d, 1), np.percentile(d, 99)
    assert out["ppl_wend_pixels"] == pytest.approx(d[(d >= lo) & (d <= hi)].mean(), rel=0.05)
    assert "epsilon 0.0001" in out["ppl_protocol"]


@pytest.mark.slow  # compiles the networks (and their derivatives) for several seconds
def test_truncation_sweep_reports_each_psi_and_psi_zero_collapses_diversity(monkeypatch):
    gen, state, config = _g_state(**{"gan.eval_samples": 16, "gan.truncation_psi": (0.0, 1.0),
                                     "gan.kid_subset_size": 8, "gan.kid_subsets": 2})
    extractor = _pixel_extractor(8)
    real = {"features": np.random.default_rng(0).uniform(0, 1, size=(16, 768)).astype(np.float32)}
    monkeypatch.setattr(gan, "measurement", lambda c, s, n: (extractor, gan.generative.Protocol(16, 8, 2, 3), real))
    seen = []
    real_compare = gan.generative.compare
    monkeypatch.setattr(gan.generative, "compare", lambda r, f, p: seen.append(f["features"]) or real_compare(r, f, p))
    out = gan.eval_truncation(config, gen, False, state, None, 0)
    assert {f"{m}_psi{p}" for m in ("fid", "kid", "precision", "recall") for p in ("0", "1")} <= set(out)
    spread = [float(np.var(f, axis=0).sum()) for f in seen]
    assert spread[0] < 0.5 * spread[1], "psi = 0 puts every w at w_avg: only the noise varies"


@pytest.mark.parametrize("metric", ["ppl", "truncation"])
def test_w_space_metrics_name_the_generator_they_need(metric):
    from train import sections

    config = _config()
    config.model = sections.model_section("dcgan_g")
    family = gan.make(config, (32, 32, 1))
    with pytest.raises(ConfigError, match="needs a style-based generator"):
        family.host_evaluators[metric]({}, None, 0)


def test_a_batch_the_minibatch_stddev_cannot_group_is_refused_at_start():
    """An evaluation batch of 250 with groups of 4 once failed only at the end of a 34-minute run."""
    from train import sections
    from train.families import gan as gan_family
    from zoo.errors import ConfigError

    config = sections.load("configs/stylegan2_synthetic_faces.py")
    config.eval.batch_size = 250
    with pytest.raises(ConfigError, match="eval.batch_size = 250 is not a multiple of gan.discriminator.mbstd_group"):
        gan_family._validate(config)
    config.eval.batch_size = 200
    gan_family._validate(config)
