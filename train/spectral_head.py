"""Fit a spectral detector (`zoo.detectors`, Durall's or Frank's) in seconds: feature stats, then logistic regression.

The spectral baselines are a fixed transform and a linear classifier, so they need no trainer:
`fit_spectral_head` computes the features of the whole training set once, their per-dimension mean
and std (the module's "stats" collection), and the L2-regularised logistic regression on the
standardised features by full-batch L-BFGS (optax), a convex problem that converges in tens to a
few hundred iterations. It returns the module's complete variables, so `module.apply(variables, x)`
scores images and an export keeps both collections. A detection family that prefers to train the
head with Adam through the trainer calls `fit_feature_stats` first and treats "head" as an ordinary param.

The objective is mean_i(w_i * BCE(z_i . w + b, y_i)) + l2 / 2 * |w|^2 with the intercept b
unpenalised, which is scikit-learn's `LogisticRegression(C=1 / (n * l2))` (`class_weight="balanced"`
with `balanced=True`: w_i = n / (2 n_class)).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo import detectors
from zoo.errors import DataError

Array = jax.Array

__all__ = ["fit_feature_stats", "fit_logistic", "fit_spectral_head", "spectral_features"]


def spectral_features(module: detectors._SpectralDetector, images: Any, batch_size: int = 256) -> np.ndarray:
    """The module's features of `images` [N, H, W, C] in [0, 1]: [N, D] float32, computed in chunks of `batch_size`."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"{module.registered_name} fits on images [N, H, W, C], got shape {images.shape}")
    fn = jax.jit(module.features)
    return np.concatenate([np.asarray(fn(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


def _stats(features: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension mean and std (ddof 0); a constant dimension gets std 1, so it standardises to 0."""
    std = features.std(axis=0)
    return {"mean": features.mean(axis=0).astype(np.float32),
            "std": np.where(std > 0, std, 1.0).astype(np.float32)}


def fit_feature_stats(module: detectors._SpectralDetector, images: Any, batch_size: int = 256) -> dict[str, Array]:
    """The "stats" collection for `module`: its features' mean and std over `images` [N, H, W, C]."""
    return jax.tree.map(jnp.asarray, _stats(spectral_features(module, images, batch_size)))


def _check_labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise DataError(f"spectral head fit: labels must be [N] = [{n}] of 0 (real) and 1 (fake) with both present, "
                        f"got shape {y.shape} and values {np.unique(y)[:5]}")
    return y.astype(np.float32)


def fit_logistic(features: Any, labels: Any, l2: float, *, balanced: bool = False, max_iter: int = 500,
                 tol: float = 1e-6) -> tuple[Array, Array]:
    """L2-regularised logistic regression on `features` [N, D] by full-batch L-BFGS: (weights [D], bias []).

    Stops when the gradient's norm is below `tol` or after `max_iter` iterations; the problem is
    strictly convex for l2 > 0, so the answer does not depend on the start (zeros).
    """
    if l2 <= 0:
        raise DataError(f"spectral head fit: l2 = {l2} must be > 0 (the features may be separable, and then an "
                        "unpenalised logistic regression has no minimum)")
    x = jnp.asarray(features, jnp.float32)
    y = jnp.asarray(_check_labels(labels, x.shape[0]))
    if balanced:
        counts = jnp.stack([jnp.sum(1 - y), jnp.sum(y)])
        weights = (x.shape[0] / (2 * counts))[y.astype(jnp.int32)]
    else:
        weights = jnp.ones_like(y)
    return _lbfgs(x, y, weights, jnp.float32(l2), max_iter, jnp.float32(tol))


@functools.partial(jax.jit, static_argnums=(4,))
def _lbfgs(x: Array, y: Array, weights: Array, l2: Array, max_iter: int, tol: Array) -> tuple[Array, Array]:
    def loss(params: tuple[Array, Array]) -> Array:
        w, b = params
        bce = optax.sigmoid_binary_cross_entropy(x @ w + b, y)
        return jnp.mean(weights * bce) + 0.5 * l2 * jnp.sum(w * w)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(params, updates), state

    def running(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    params = (jnp.zeros(x.shape[1], jnp.float32), jnp.zeros((), jnp.float32))
    params, _ = jax.lax.while_loop(running, step, (params, opt.init(params)))
    return params


def fit_spectral_head(module: detectors._SpectralDetector, images: Any, labels: Any, l2: float = 1e-3, *,
                      balanced: bool = False, max_iter: int = 500, tol: float = 1e-6,
                      batch_size: int = 256) -> dict[str, Any]:
    """Variables {"params": {"head": ...}, "stats": {"mean", "std"}} of `module` fitted to images [N, H, W, C] in [0, 1].

    labels [N]: 1 = fake, 0 = real. `l2` is the penalty on the mean loss (scikit-learn's C = 1 / (N * l2));
    the default 1e-3 is scikit-learn's default C = 1 at N = 1000.
    """
    feats = spectral_features(module, images, batch_size)
    stats = _stats(feats)
    w, b = fit_logistic((feats - stats["mean"]) / stats["std"], labels, l2, balanced=balanced, max_iter=max_iter,
                        tol=tol)
    head = {"kernel": w[:, None].astype(module.param_dtype), "bias": b[None].astype(module.param_dtype)}
    return {"params": {"head": head}, detectors.STATS: jax.tree.map(jnp.asarray, stats)}
