"""Optimisers from the config's `optim` section, shared by every family."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from train import parallel


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up over `warmup_steps`, then constant or cosine decay to zero at total_steps."""
    lr, warmup = optim.learning_rate, optim.warmup_steps
    if optim.schedule == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
    if warmup:
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps)
    return optax.cosine_decay_schedule(lr, total_steps)


class KeepState(NamedTuple):
    key: jax.Array  # raw uint32 key data, so the state checkpoints like any array


def keep_updates(keep_prob: float, seed: int = 0) -> optax.GradientTransformation:
    """Keep each parameter's update with probability `keep_prob`, zero it otherwise.

    DeepFaceLab's "learning-rate dropout" (lr_dropout = 0.3 keeps 30% of the entries each step):
    a sparse, noisy update that it recommends for the last stage of training. The mask is drawn
    from a key carried in the optimiser state, so every device draws the same mask and a resumed
    run draws what an uninterrupted one would.
    """
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob={keep_prob} must be in (0, 1]")

    def init(params: Any) -> KeepState:
        del params
        return KeepState(jax.random.key_data(jax.random.key(seed)))

    def update(updates: Any, state: KeepState, params: Any = None) -> tuple[Any, KeepState]:
        del params
        key, draw = jax.random.split(jax.random.wrap_key_data(state.key))
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(draw, len(leaves))
        kept = [jnp.where(jax.random.bernoulli(k, keep_prob, u.shape), u, jnp.zeros_like(u)) for k, u in zip(keys, leaves)]
        return jax.tree.unflatten(treedef, kept), KeepState(jax.random.key_data(key))

    return optax.GradientTransformation(init, update)


def make(optim: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The optax chain: optional global-norm clipping, the named optimiser, optional update dropout."""
    lr = learning_rate(optim, total_steps)
    base = {
        "adam": lambda: optax.adam(lr, b1=optim.b1, b2=optim.b2),
        "adamw": lambda: optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
        "rmsprop": lambda: optax.rmsprop(lr),
        "adabelief": lambda: optax.adabelief(lr, b1=optim.b1, b2=optim.b2),
        "sgd": lambda: optax.sgd(lr, momentum=optim.b1 or None),
    }[optim.name]()
    parts = [base]
    if optim.grad_clip_norm > 0:
        parts.insert(0, optax.clip_by_global_norm(optim.grad_clip_norm))
    if optim.update_keep_prob < 1.0:
        parts.append(keep_updates(optim.update_keep_prob))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def descend(state: dict, net: str, tx: optax.GradientTransformation, loss_fn: Callable[[Any], tuple[jax.Array, Any]]
            ) -> tuple[dict, Any, Any]:
    """One optimiser step of `state["params"][net]` on `loss_fn(params) -> (loss, aux)`.

    Gradients and aux are averaged over data-parallel replicas first (`parallel.pmean`), so the
    step is the same under every strategy. Returns the new state, the gradients and the aux.
    """
    params = state["params"][net]
    grads, aux = jax.grad(loss_fn, has_aux=True)(params)
    grads, aux = parallel.pmean((grads, aux))
    updates, opt_state = tx.update(grads, state["opt_state"][net], params)
    new = dict(state, params=dict(state["params"], **{net: optax.apply_updates(params, updates)}),
               opt_state=dict(state["opt_state"], **{net: opt_state}))
    return new, grads, aux
