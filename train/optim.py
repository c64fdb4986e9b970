"""Optimisers from the config's `optim` section, shared by every family."""
from __future__ import annotations

import ml_collections
import optax


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up over `warmup_steps`, then constant or cosine decay to zero at total_steps."""
    lr, warmup = optim.learning_rate, optim.warmup_steps
    if optim.schedule == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
    if warmup:
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps)
    return optax.cosine_decay_schedule(lr, total_steps)


def make(optim: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The optax chain: optional global-norm clipping, then the named optimiser."""
    lr = learning_rate(optim, total_steps)
    base = {
        "adam": lambda: optax.adam(lr, b1=optim.b1, b2=optim.b2),
        "adamw": lambda: optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
        "rmsprop": lambda: optax.rmsprop(lr),
        "adabelief": lambda: optax.adabelief(lr, b1=optim.b1, b2=optim.b2),
        "sgd": lambda: optax.sgd(lr, momentum=optim.b1 or None),
    }[optim.name]()
    if optim.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), base)
    return base
