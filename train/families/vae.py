"""VAE family: negative-ELBO training (beta-VAE, KL warm-up) and likelihood evaluation.

Data handling follows the likelihood. `bernoulli` binarises every image afresh each time it is
seen (dynamic binarisation, as in the IWAE protocol); `gaussian` dequantises 8-bit pixels with
uniform noise, so its NLL plus D*log(256) bounds the discrete NLL; `logistic` models the 256 bins
exactly. Evaluation uses the same per-example keys, derived from each example's index, so a test
set is binarised or dequantised identically on every run.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import losses, parallel, sections
from train import optim as optim_lib
from train.config import model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from zoo import likelihoods, registry

METRICS = ("elbo", "iwae", "psnr")


def section() -> ml_collections.ConfigDict:
    """The `config.vae` defaults, defined in `train.sections`."""
    return sections.vae()


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
    num_dims = int(np.prod(image_shape))
    offset = discrete_offset(model.likelihood, num_dims)
    tx = optim_lib.make(config.optim, config.total_steps)
    hp = config.vae
    fields = dict(kw, dtype=jnp.dtype(kw["dtype"]).name, image_shape=list(image_shape))
    iwae = functools.partial(eval_iwae, model, offset, num_dims, hp.iwae_samples, hp.iwae_chunk)
    step = functools.partial(train_step, model, tx, hp.beta, hp.kl_warmup_steps, offset)
    return Family(
        init=functools.partial(init_state, model, tx),
        steps={"train": Step(step, prefix="")},
        preview=functools.partial(preview, model),
        preview_columns=8,
        evaluators={"elbo": functools.partial(eval_elbo, model, offset), "iwae": iwae,
                    "psnr": functools.partial(eval_psnr, model)},
        default_metrics=METRICS,
        export=functools.partial(export, config.model.name, fields),
        generate=functools.partial(generate, model),
    )


def observe(model: Any, keys: jax.Array, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example observation and reparameterisation noise from per-example keys, so evaluation is repeatable."""
    obs_keys, eps_keys = jnp.split(jax.vmap(jax.random.split)(keys), 2, axis=1)
    x = jax.vmap(lambda k, p: prepare_images(model.likelihood, k, p))(obs_keys[:, 0], pixels)
    eps = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(eps_keys[:, 0])
    return x, eps


def elbo_terms(model: Any, params: Any, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example log p(x|z) and KL(q(z|x) || p(z)) at z = mean + std * eps: the ELBO's two terms."""
    out, mean, logvar = model.apply({"params": params}, x, eps)
    return likelihoods.log_prob(model.likelihood, out, x), kl_divergence(mean, logvar)


def init_state(model: Any, tx: optax.GradientTransformation, rng: jax.Array, batch: Batch) -> State:
    """Fresh params and optimiser state; the model's own example inputs fix the shapes, not the batch."""
    params = model.init(rng, *model.example_inputs())["params"]
    return {"step": jnp.int32(0), "params": {"vae": params}, "opt_state": {"vae": tx.init(params)}}


def train_step(model: Any, tx: optax.GradientTransformation, beta: float, kl_warmup_steps: int, offset: float,
               state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """One update on the beta-weighted negative ELBO; beta ramps over `kl_warmup_steps` against posterior collapse."""
    pixels = batch["image"]
    x, eps = observe(model, parallel.example_keys(rng, pixels.shape[0]), pixels)
    warm = jnp.minimum(1.0, state["step"] / kl_warmup_steps) if kl_warmup_steps else 1.0
    beta = beta * warm

    def loss_fn(params):
        log_px, kl = elbo_terms(model, params, x, eps)
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
    """One key per example from its index, so an example draws the same noise in every run and batch."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])


def eval_elbo(model: Any, offset: float, state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example negative ELBO, KL and reconstruction NLL in nats (plus `offset` to bound discrete data)."""
    x, eps = observe(model, eval_keys(rng, batch), batch["image"])
    log_px, kl = elbo_terms(model, state["params"]["vae"], x, eps)
    return {"neg_elbo": kl - log_px + offset, "kl": kl, "recon_nll": -log_px + offset}


def eval_iwae(model: Any, offset: float, num_dims: int, num_samples: int, chunk_budget: int,
              state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example importance-weighted NLL with `num_samples` samples, in nats and bits per dimension."""
    keys = eval_keys(rng, batch)
    x, _ = observe(model, keys, batch["image"])
    nll = importance_weighted_nll(model, state["params"]["vae"], x, keys, num_samples, chunk_budget) + offset
    return {f"iwae_nll_k{num_samples}": nll, f"iwae_bpd_k{num_samples}": nll / (num_dims * math.log(2))}


def eval_psnr(model: Any, state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example PSNR of the reconstruction from the posterior mean: a deterministic quality number."""
    target = batch["image"].astype(jnp.float32) / 255.0
    return {"psnr": losses.psnr(reconstruct(model, state["params"]["vae"], target), target)}


def reconstruct(model: Any, params: Any, x: jax.Array) -> jax.Array:
    """The likelihood's mean decoded from the posterior mean of x, the reconstruction without sampling noise."""
    mean, _ = model.apply({"params": params}, x, method=model.encode)
    return likelihoods.mean(model.likelihood, model.apply({"params": params}, mean, method=model.decode))


def generate(model: Any, state: State, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """A fake set's VAE outputs: a prior "sample" keyed by each row's index, and the "reconstruction" of the row."""
    params = state["params"]["vae"]
    z = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(eval_keys(rng, batch))
    sample = likelihoods.mean(model.likelihood, model.apply({"params": params}, z, method=model.decode))
    target = batch["image"].astype(jnp.float32) / 255.0
    return {"sample": sample, "reconstruction": reconstruct(model, params, target)}


def preview(model: Any, state: State, batch: Batch, rng: jax.Array) -> jax.Array:
    """Rows of 8: inputs, their reconstructions, samples from the prior."""
    params = state["params"]["vae"]
    target = batch["image"][:8].astype(jnp.float32) / 255.0
    z = jax.random.normal(rng, (8, model.latent_dim))
    samples = likelihoods.mean(model.likelihood, model.apply({"params": params}, z, method=model.decode))
    return jnp.concatenate([target, reconstruct(model, params, target), samples])


def export(name: str, fields: dict[str, Any], state: State) -> Export:
    """The VAE's params with its registry name and fields, what `zoo.pretrained` rebuilds it from."""
    return Export(name, fields, state["params"]["vae"])


def importance_weighted_nll(
    model: Any, params: Any, x: jax.Array, keys: jax.Array, num_samples: int, chunk_budget: int
) -> jax.Array:
    """-log p(x) estimated with k importance samples (Burda et al. 2016), per example, in nats.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k. Example i's k noise
    vectors are `normal(fold_in(keys[i], 0), (k, latent))` however the work is split, so the estimate does not
    depend on batch size or budget. The decoder runs as one GEMM over all k samples of as many examples
    as `chunk_budget` decodes hold; when k alone exceeds it, k is split with a running logsumexp.
    """
    mean, logvar = model.apply({"params": params}, x, method=model.encode)
    per_call = max(1, chunk_budget // num_samples)
    samples = _largest_divisor_at_most(num_samples, chunk_budget)
    log_px = functools.partial(_example_log_px, model, params, num_samples, samples)
    return -jax.lax.map(lambda a: log_px(*a), (x, keys, mean, logvar), batch_size=per_call)


def _example_log_px(model: Any, params: Any, num_samples: int, samples: int, x: jax.Array, key: jax.Array,
                    mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """One example's k-sample log p(x) estimate, decoding `samples` at a time so memory stays bounded."""
    eps = jax.random.normal(jax.random.fold_in(key, 0), (num_samples, mean.shape[-1]))
    eps = eps.reshape(num_samples // samples, samples, -1)

    def body(acc: jax.Array, e: jax.Array) -> tuple[jax.Array, None]:
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_weights(model, params, x, mean, logvar, e))), None

    acc, _ = jax.lax.scan(body, jnp.float32(-jnp.inf), eps)
    return acc - math.log(num_samples)


def log_weights(model: Any, params: Any, x: jax.Array, mean: jax.Array, logvar: jax.Array,
                eps: jax.Array) -> jax.Array:
    """log p(x|z) + log p(z) - log q(z|x) of one example x at z = mean + std * eps for each row of eps [S, L]."""
    z = mean + jnp.exp(0.5 * logvar) * eps
    out = model.apply({"params": params}, z, method=model.decode)
    log_px = likelihoods.log_prob(model.likelihood, out, jnp.broadcast_to(x, (z.shape[0],) + x.shape))
    return log_px + gaussian_log_prob(z, 0.0, jnp.zeros_like(z)) - gaussian_log_prob(z, mean, logvar)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)
