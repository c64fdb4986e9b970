"""VAE models and their maths: shapes, KL, likelihoods, and the importance-weighted bound."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from train.families import vae as vae_family
from zoo import create_model, likelihoods, list_models


@pytest.mark.parametrize("name", ["vae_mlp", "vae_conv"])
@pytest.mark.parametrize("kind", likelihoods.LIKELIHOODS)
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_model_shapes_and_dtypes(name, kind, shape):
    model = create_model(name, image_shape=shape, likelihood=kind, latent_dim=6)
    x, eps = model.example_inputs()
    x, eps = jnp.ones((3, *shape)) * 0.5, jnp.zeros((3, 6))
    params = model.init(jax.random.key(0), x, eps)["params"]
    out, mean, logvar = model.apply({"params": params}, x, eps)
    chex.assert_shape(out, (3, *shape[:2], shape[2] * likelihoods.num_outputs(kind)))
    chex.assert_shape([mean, logvar], (3, 6))
    chex.assert_type([out, mean, logvar], jnp.float32)
    chex.assert_tree_all_finite(out)


def test_bf16_compute_keeps_f32_params():
    model = create_model("vae_conv", image_shape=(8, 8, 1), dtype=jnp.bfloat16)
    params = model.init(jax.random.key(0), *model.example_inputs())["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out, _, _ = model.apply({"params": params}, *model.example_inputs())
    assert out.dtype == jnp.bfloat16


def test_registry_lists_and_rejects():
    assert {"vae_mlp", "vae_conv"} <= set(list_models("vae_*"))
    with pytest.raises(ValueError, match="registered models"):
        create_model("vae_nonexistent")


def test_conv_vae_rejects_indivisible_resolution():
    model = create_model("vae_conv", image_shape=(10, 10, 1), channels=(8, 16, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        model.init(jax.random.key(0), *model.example_inputs())


def test_kl_matches_monte_carlo_of_the_densities():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=4), rng.normal(size=4) * 0.5
    std = np.exp(0.5 * logvar)
    z = mean + std * rng.standard_normal((400_000, 4))
    mc = np.mean(np.sum(stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z), axis=1))
    closed = float(vae_family.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)))
    assert closed == pytest.approx(mc, abs=0.02)
    assert float(vae_family.kl_divergence(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_softplus_matches_log1p_exp_and_its_gradient_is_the_sigmoid_everywhere():
    x = jnp.asarray([-100.0, -20.0, -1.5, -1e-3, 0.0, 1e-3, 2.0, 30.0, 100.0], jnp.float32)
    want = np.logaddexp(0.0, np.asarray(x, np.float64))
    np.testing.assert_allclose(likelihoods.softplus(x), want, rtol=1e-6, atol=1e-30)
    grad = jax.vmap(jax.grad(likelihoods.softplus))(x)
    np.testing.assert_allclose(grad, 1 / (1 + np.exp(-np.asarray(x, np.float64))), rtol=1e-6, atol=1e-30)


def test_bernoulli_and_gaussian_match_scipy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    x = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    want = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).reshape(2, -1).sum(1)
    np.testing.assert_allclose(likelihoods.log_prob("bernoulli", logits, x), want, rtol=1e-5)

    loc, log_scale = rng.random((2, 4, 4, 1)), rng.normal(size=(2, 4, 4, 1)) * 0.3 - 2
    xc = rng.random((2, 4, 4, 1))
    want = stats.norm.logpdf(xc, loc, np.exp(log_scale)).reshape(2, -1).sum(1)
    out = np.concatenate([loc, log_scale], -1).astype(np.float32)
    np.testing.assert_allclose(likelihoods.log_prob("gaussian", out, xc.astype(np.float32)), want, rtol=1e-4)


def test_discretised_logistic_is_a_distribution_over_256_bins():
    bins = np.arange(256, dtype=np.float32) / 255.0
    x = bins.reshape(256, 1, 1, 1)
    for loc, log_scale in [(0.3, -3.0), (0.9, -1.0), (0.0, -5.0)]:
        out = np.broadcast_to(np.array([loc, log_scale], np.float32), (256, 1, 1, 2))
        p = np.exp(np.asarray(likelihoods.log_prob("logistic", out, x), np.float64))
        assert p.sum() == pytest.approx(1.0, abs=1e-4)
        interior = 100
        s = np.exp(log_scale)
        want = stats.logistic.cdf(bins[interior] + 0.5 / 255, loc, s) - stats.logistic.cdf(bins[interior] - 0.5 / 255, loc, s)
        assert p[interior] == pytest.approx(want, rel=1e-3)


def test_prepare_images_per_likelihood():
    key = jax.random.key(0)
    pixels = jnp.array([[[[0]], [[255]]]], jnp.uint8)[0]
    np.testing.assert_array_equal(vae_family.prepare_images("bernoulli", key, pixels).ravel(), [0.0, 1.0])
    np.testing.assert_allclose(vae_family.prepare_images("logistic", key, pixels).ravel(), [0.0, 1.0])
    g = vae_family.prepare_images("gaussian", key, pixels).ravel()
    assert 0 <= g[0] < 1 / 256 and 255 / 256 <= g[1] < 1


def test_importance_weighted_bound_equals_exact_marginal_for_a_linear_gaussian():
    """With a linear-Gaussian decoder and the exact posterior as q, every IW estimate equals log p(x)."""
    import flax.linen as nn

    class LinearGaussian(nn.Module):
        likelihood: str = "gaussian"

        def encode(self, x):
            # p(z)=N(0,1), p(x|z)=N(z, s^2): posterior N(x/(1+s^2), s^2/(1+s^2)) with s = exp(-1).
            s2 = jnp.exp(-2.0)
            xv = x.reshape(x.shape[0], 1)
            return xv / (1 + s2), jnp.full_like(xv, jnp.log(s2 / (1 + s2)))

        def decode(self, z):
            return jnp.concatenate([z, jnp.full_like(z, -1.0)], -1).reshape(z.shape[0], 1, 1, 2)

    model = LinearGaussian()
    x = jnp.array([0.2, 0.7, -0.4]).reshape(3, 1, 1, 1)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(3))
    nll = vae_family.importance_weighted_nll(model, {}, x, keys, num_samples=12, chunk_budget=9)
    exact = -stats.norm.logpdf(np.asarray(x).ravel(), 0.0, np.sqrt(1 + np.exp(-2.0)))
    np.testing.assert_allclose(nll, exact, rtol=1e-4)


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_iwae_bound_is_above_the_elbo_and_tightens_with_k_on_a_trained_model():
    """On the trained, bundled digits VAE: NLL_k <= neg-ELBO, decreasing in k (Burda et al. 2016, Thm 1)."""
    from data import sources
    from zoo import pretrained

    loaded = pretrained.load("vae_digits")
    model, params = loaded.module, loaded.params
    pixels = sources.get_source("digits", "test").images[:64]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(64))
    x = jax.vmap(lambda k, p: vae_family.prepare_images("bernoulli", k, p))(keys, jnp.asarray(pixels))

    def neg_elbo(sample_key):
        eps = jax.random.normal(sample_key, (64, model.latent_dim))
        out, mean, logvar = model.apply({"params": params}, x, eps)
        return -likelihoods.log_prob("bernoulli", out, x) + vae_family.kl_divergence(mean, logvar)

    elbo = float(jnp.mean(jax.vmap(neg_elbo)(jax.random.split(jax.random.key(4), 200))))
    nll = {k: float(jnp.mean(vae_family.importance_weighted_nll(model, params, x, keys, k, 20_000)))
           for k in (1, 10, 100, 1000)}
    assert nll[1] == pytest.approx(elbo, rel=0.03)
    assert nll[10] < nll[1] - 0.2 and nll[100] < nll[10] and nll[1000] < nll[100]
    assert nll[1000] < elbo - 0.3


@pytest.mark.parametrize("budget", [10_000, 128, 16])
def test_batched_iwae_equals_a_straightforward_reference(budget):
    """All k samples of several examples per decoder call, or k split with a running logsumexp: one estimate."""
    model = create_model("vae_mlp", image_shape=(4, 4, 1), likelihood="bernoulli", latent_dim=3, hidden=(8,))
    params = model.init(jax.random.key(0), *model.example_inputs())["params"]
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 4, 4, 1)) > 0.5, jnp.float32)
    keys = jax.random.split(jax.random.key(1), 5)
    k = 64
    got = vae_family.importance_weighted_nll(model, params, x, keys, k, budget)
    mean, logvar = model.apply({"params": params}, x, method=model.encode)
    expected = []
    for i in range(5):
        eps = jax.random.normal(jax.random.fold_in(keys[i], 0), (k, 3))
        z = np.asarray(mean[i] + jnp.exp(0.5 * logvar[i]) * eps, np.float64)
        logits = np.asarray(model.apply({"params": params}, jnp.asarray(z, jnp.float32), method=model.decode),
                            np.float64).reshape(k, -1)
        xi = np.asarray(x[i], np.float64).reshape(-1)
        log_px = np.sum(xi * -np.logaddexp(0, -logits) + (1 - xi) * -np.logaddexp(0, logits), axis=1)
        m, lv = np.asarray(mean[i], np.float64), np.asarray(logvar[i], np.float64)
        log_pz = np.sum(stats.norm.logpdf(z), axis=1)
        log_qz = np.sum(stats.norm.logpdf(z, m, np.exp(0.5 * lv)), axis=1)
        w = log_px + log_pz - log_qz
        expected.append(-(np.max(w) + np.log(np.mean(np.exp(w - np.max(w))))))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
