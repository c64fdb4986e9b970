"""VAE family: negative-ELBO training (beta-VAE, KL warm-up) and likelihood evaluation.

Data handling follows the likelihood. `bernoulli` binarises every image afresh each time it is
seen (dynamic binarisation, as in the IWAE protocol); `gaussian` dequantises 8-bit pixels with
uniform noise, so its NLL plus D*log(256) bounds the discrete NLL; `logistic` models the 256 bins
exactly. Evaluation uses the same per-example keys, derived from each example's index, so a test
set is binarised or dequantised identically on every run.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import losses, parallel
from train import optim as optim_lib
from train.config import model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from zoo import likelihoods, registry

METRICS = ("elbo", "iwae", "psnr")


def section() -> ml_collections.ConfigDict:
    """The `config.vae` defaults."""
    s = ml_collections.ConfigDict()
    s.beta = 1.0
    s.kl_warmup_steps = 0
    s.iwae_samples = 5000
    s.iwae_chunk = 50000
    return s


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, in nats (closed form)."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, exp(logvar)) summed over the last axis."""
    return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar + jnp.log(2 * jnp.pi), axis=-1)


def prepare_images(kind: str, key: jax.Array, pixels: jax.Array) -> jax.Array:
    """uint8 pixels of one image -> the model's observation in [0, 1] for likelihood `kind`."""
    x = pixels.astype(jnp.float32)
    if kind == "bernoulli":
        return jax.random.bernoulli(key, x / 255.0).astype(jnp.float32)
    if kind == "gaussian":
        return (x + jax.random.uniform(key, x.shape)) / 256.0
    return x / 255.0


def discrete_offset(kind: str, num_dims: int) -> float:
    """Nats to add to a continuous NLL on dequantised [0,1) data to bound the 8-bit NLL."""
    return num_dims * math.log(256.0) if kind == "gaussian" else 0.0


def make(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
    """The VAE family for `config`, on images of `image_shape` (H, W, C)."""
    kw = model_kwargs(config.model)
    kw["dtype"] = jnp.dtype(kw.get("dtype", "float32"))
    model = registry.create_model(config.model.name, image_shape=tuple(image_shape), **kw)
    kind = model.likelihood
    latent = model.latent_dim
    num_dims = int(np.prod(image_shape))
    offset = discrete_offset(kind, num_dims)
    tx = optim_lib.make(config.optim, config.total_steps)
    hp = config.vae

    def observe(keys: jax.Array, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-example observation and reparameterisation noise from per-example keys."""
        obs_keys, eps_keys = jnp.split(jax.vmap(jax.random.split)(keys), 2, axis=1)
        x = jax.vmap(lambda k, p: prepare_images(kind, k, p))(obs_keys[:, 0], pixels)
        eps = jax.vmap(lambda k: jax.random.normal(k, (latent,)))(eps_keys[:, 0])
        return x, eps

    def elbo_terms(params: Any, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
        out, mean, logvar = model.apply({"params": params}, x, eps)
        return likelihoods.log_prob(kind, out, x), kl_divergence(mean, logvar)

    def init(rng: jax.Array, batch: Batch) -> State:
        params = model.init(rng, *model.example_inputs())["params"]
        return {"step": jnp.int32(0), "params": {"vae": params}, "opt_state": {"vae": tx.init(params)}}

    def train_step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
        pixels = batch["image"]
        x, eps = observe(parallel.example_keys(rng, pixels.shape[0]), pixels)
        warm = jnp.minimum(1.0, state["step"] / hp.kl_warmup_steps) if hp.kl_warmup_steps else 1.0
        beta = hp.beta * warm

        def loss_fn(params):
            log_px, kl = elbo_terms(params, x, eps)
            loss = jnp.mean(-(log_px - beta * kl))
            return loss, {"loss": loss, "neg_elbo": jnp.mean(kl - log_px) + offset, "kl": jnp.mean(kl)}

        params, opt_state = state["params"]["vae"], state["opt_state"]["vae"]
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
        grads, metrics = parallel.pmean((grads, metrics))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["beta"] = jnp.asarray(beta, jnp.float32)
        return dict(state, params={"vae": params}, opt_state={"vae": opt_state}), metrics

    def eval_keys(rng: jax.Array, batch: Batch) -> jax.Array:
        return jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])

    def eval_elbo(state: State, batch: Batch, rng: jax.Array) -> dict:
        x, eps = observe(eval_keys(rng, batch), batch["image"])
        log_px, kl = elbo_terms(state["params"]["vae"], x, eps)
        return {"neg_elbo": kl - log_px + offset, "kl": kl, "recon_nll": -log_px + offset}

    def eval_iwae(state: State, batch: Batch, rng: jax.Array) -> dict:
        params = state["params"]["vae"]
        keys = eval_keys(rng, batch)
        x, _ = observe(keys, batch["image"])
        nll = importance_weighted_nll(model, params, x, keys, hp.iwae_samples, hp.iwae_chunk) + offset
        return {f"iwae_nll_k{hp.iwae_samples}": nll, f"iwae_bpd_k{hp.iwae_samples}": nll / (num_dims * math.log(2))}

    def eval_psnr(state: State, batch: Batch, rng: jax.Array) -> dict:
        target = batch["image"].astype(jnp.float32) / 255.0
        return {"psnr": losses.psnr(reconstruct(state, target), target)}

    def reconstruct(state: State, x: jax.Array) -> jax.Array:
        params = state["params"]["vae"]
        mean, _ = model.apply({"params": params}, x, method=model.encode)
        return likelihoods.mean(kind, model.apply({"params": params}, mean, method=model.decode))

    def preview(state: State, batch: Batch, rng: jax.Array) -> jax.Array:
        """Rows of 8: inputs, their reconstructions, samples from the prior."""
        target = batch["image"][:8].astype(jnp.float32) / 255.0
        z = jax.random.normal(rng, (8, latent))
        samples = likelihoods.mean(kind, model.apply({"params": state["params"]["vae"]}, z, method=model.decode))
        return jnp.concatenate([target, reconstruct(state, target), samples])

    def export(state: State) -> Export:
        fields = dict(kw, dtype=jnp.dtype(kw["dtype"]).name, image_shape=list(image_shape))
        return Export(config.model.name, fields, state["params"]["vae"])

    return Family(
        init=init,
        steps={"train": Step(train_step, prefix="")},
        preview=preview,
        preview_columns=8,
        evaluators={"elbo": eval_elbo, "iwae": eval_iwae, "psnr": eval_psnr},
        default_metrics=METRICS,
        export=export,
    )


def importance_weighted_nll(
    model: Any, params: Any, x: jax.Array, keys: jax.Array, num_samples: int, chunk_budget: int
) -> jax.Array:
    """-log p(x) estimated with k importance samples (Burda et al. 2016), per example, in nats.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, accumulated
    over chunks of samples with a running logsumexp so memory stays at `chunk_budget` decodes.
    """
    batch = x.shape[0]
    chunk = _largest_divisor_at_most(num_samples, max(1, chunk_budget // batch))
    mean, logvar = model.apply({"params": params}, x, method=model.encode)
    std = jnp.exp(0.5 * logvar)
    kind = model.likelihood

    def body(acc: jax.Array, j: jax.Array) -> tuple[jax.Array, None]:
        eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, j), (chunk, mean.shape[-1])))(keys)
        z = mean[:, None] + std[:, None] * eps
        out = model.apply({"params": params}, z.reshape(batch * chunk, -1), method=model.decode)
        x_rep = jnp.repeat(x, chunk, axis=0)
        log_px = likelihoods.log_prob(kind, out, x_rep).reshape(batch, chunk)
        log_pz = gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
        log_qz = gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_px + log_pz - log_qz, axis=1)), None

    acc, _ = jax.lax.scan(body, jnp.full((batch,), -jnp.inf), jnp.arange(num_samples // chunk))
    return -(acc - math.log(num_samples))


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)
