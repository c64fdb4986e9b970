"""Families' losses and evaluators called alone, as module-level functions, against hand computations."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.families import gan, swap, vae
from zoo import create_model


def _log_sigmoid(v: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -v)


def test_vae_elbo_evaluator_matches_the_numpy_formula():
    model = create_model("vae_mlp", image_shape=(4, 4, 1), likelihood="bernoulli", latent_dim=3)
    params = model.init(jax.random.key(0), *model.example_inputs())["params"]
    state = {"params": {"vae": params}}
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1)).astype(np.uint8)
    batch = {"image": jnp.asarray(pixels), "index": jnp.arange(5) + 7}
    rng = jax.random.key(3)
    got = jax.device_get(vae.eval_elbo(model, 1.5, state, batch, rng))
    x, eps = vae.observe(model, vae.eval_keys(rng, batch), batch["image"])
    assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}
    logits, mean, logvar = (np.asarray(a, np.float64) for a in model.apply({"params": params}, x, eps))
    x = np.asarray(x, np.float64)
    log_px = np.sum(x * _log_sigmoid(logits) + (1 - x) * _log_sigmoid(-logits), axis=(1, 2, 3))
    kl = 0.5 * np.sum(mean**2 + np.exp(logvar) - 1.0 - logvar, axis=1)
    np.testing.assert_allclose(got["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(got["recon_nll"], -log_px + 1.5, rtol=1e-5)
    np.testing.assert_allclose(got["neg_elbo"], kl - log_px + 1.5, rtol=1e-5)


@dataclasses.dataclass(frozen=True)
class _ScaleModel:
    """A stand-in autoencoder: each side's output is its input times a learnt scale, and a constant mask."""

    def apply(self, variables, in_a, in_b):
        w = variables["params"]["w"]
        return {"src": (in_a * w, jnp.full(in_a.shape[:-1] + (1,), 0.25)),
                "dst": (in_b * w, jnp.full(in_b.shape[:-1] + (1,), 0.75))}


def test_swap_autoencoder_loss_sums_both_sides_weighted_terms():
    hp = swap.section()
    hp.masked_training, hp.eyes_mouth_prio = False, True
    hp.dssim_weight, hp.mse_weight, hp.mask_weight, hp.eyes_mouth_weight = 0.0, 2.0, 3.0, 5.0
    rng = np.random.default_rng(1)

    def side():
        s = {k: rng.uniform(size=(2, 8, 8, 3)).astype(np.float32) for k in ("input", "target")}
        s["mask"] = (rng.uniform(size=(2, 8, 8, 1)) > 0.5).astype(np.float32)
        s["em_mask"] = (rng.uniform(size=(2, 8, 8, 1)) > 0.7).astype(np.float32)
        return s

    batch = {"a": side(), "b": side()}
    loss, metrics = swap.autoencoder_loss({"swap": _ScaleModel()}, hp, 8, {}, {"w": jnp.float32(0.5)}, batch)

    def hand(s, pred_mask):
        out = s["input"] * 0.5
        mse = np.mean((s["target"] - out) ** 2)
        mask_mse = np.mean((s["mask"] - pred_mask) ** 2)
        l1 = np.mean(np.abs(s["target"] * s["em_mask"] - out * s["em_mask"]))
        return 2.0 * mse + 3.0 * mask_mse + 5.0 * l1, mse

    (la, mse_a), (lb, mse_b) = hand(batch["a"], 0.25), hand(batch["b"], 0.75)
    np.testing.assert_allclose(metrics["a_loss"], la, rtol=1e-5)
    np.testing.assert_allclose(metrics["a_mse"], mse_a, rtol=1e-5)
    np.testing.assert_allclose(metrics["b_mse"], mse_b, rtol=1e-5)
    np.testing.assert_allclose(loss, la + lb, rtol=1e-5)
    assert float(metrics["loss"]) == float(loss)


@dataclasses.dataclass(frozen=True)
class _LinearCritic:
    """A stand-in critic D(x) = sum(w * x) per example: its input gradient is w everywhere."""

    num_classes: int = 0

    def apply(self, variables, x, labels, train):
        return jnp.sum(variables["params"]["w"] * x, axis=(1, 2, 3))


@pytest.mark.parametrize("kind", ["hinge", "wgan_gp"])
def test_gan_discriminator_loss_matches_the_formula_with_its_penalty(kind):
    rng = np.random.default_rng(2)
    real, fake = (jnp.asarray(rng.normal(size=(4, 2, 2, 1)), jnp.float32) for _ in range(2))
    w = jnp.asarray(rng.normal(size=(2, 2, 1)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 4)
    loss, (metrics, cols) = gan.d_loss(_LinearCritic(), {}, kind, 10.0, real, None, fake, None, keys, {"w": w})
    r = np.sum(np.asarray(w) * np.asarray(real), axis=(1, 2, 3))
    f = np.sum(np.asarray(w) * np.asarray(fake), axis=(1, 2, 3))
    if kind == "hinge":
        expected = np.mean(np.maximum(0, 1 - r) + np.maximum(0, 1 + f))
    else:
        penalty = (math.sqrt(float(np.sum(np.asarray(w) ** 2))) - 1.0) ** 2
        np.testing.assert_allclose(metrics["gradient_penalty"], penalty, rtol=1e-5)
        expected = np.mean(f - r) + 10.0 * penalty
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["real_logit"], np.mean(r), rtol=1e-5)
    assert cols == {} and float(metrics["total_loss"]) == float(loss)
