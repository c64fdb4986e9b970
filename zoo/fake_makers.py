"""What a pretrained generative model makes from a batch of real images: the fakes detectors learn from.

One function per model kind, each `(images [B, H, W, C] in [0, 1], keys [B]) -> fakes [B, H, W, C] in [0, 1]`:
a face-swap autoencoder swaps the real faces (`a2b`: decoded as its B side, `b2a`: as A); a GAN samples
from `keys` (the real images only set the batch size); a VAE samples its prior or reconstructs the reals
from their posterior mean. Every fake is a function of its own key and image, so a fake set does not
depend on how it was batched.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from zoo import likelihoods

Maker = Callable[[jax.Array, jax.Array], jax.Array]
KINDS = {"swap": ("a2b", "b2a"), "gan": ("sample",), "vae": ("sample", "reconstruction")}


def model_kind(module: Any) -> str:
    """"swap", "vae" or "gan": what the module can make, read from the methods it has."""
    if hasattr(module, "swap") and hasattr(module, "encode"):
        return "swap"
    if hasattr(module, "decode") and hasattr(module, "likelihood"):
        return "vae"
    if hasattr(module, "latent_dim") and hasattr(module, "example_inputs"):
        return "gan"
    raise ValueError(f"{type(module).__name__} is not a generative model the zoo can make fakes with "
                     "(a swap autoencoder, a GAN generator or a VAE)")


def fake_maker(module: Any, variables: dict[str, Any], kind: str) -> Maker:
    """The function making fakes of `kind` (see `KINDS`) with a pretrained module and its variables."""
    family = model_kind(module)
    if kind not in KINDS[family]:
        raise ValueError(f"a {family} model ({type(module).__name__}) makes {', '.join(KINDS[family])}, "
                         f"not {kind!r}")
    if family == "swap":
        return lambda images, keys: module.apply(variables, images, kind, method=module.swap)[0].astype(jnp.float32)
    if family == "gan":
        return lambda images, keys: gan_sample(module, variables, keys)
    if kind == "sample":
        return lambda images, keys: vae_decode(module, variables, _normal(keys, module.latent_dim))
    return lambda images, keys: vae_decode(
        module, variables, module.apply(variables, images, method=module.encode)[0])


def gan_sample(module: Any, variables: dict[str, Any], keys: jax.Array) -> jax.Array:
    """One unconditional sample per key, mapped from the generator's [-1, 1] to [0, 1] and clipped as on saving."""
    if getattr(module, "num_classes", 0):
        raise ValueError(f"{type(module).__name__} is class-conditional (num_classes={module.num_classes}); "
                         "fake sets from it would need a label per fake, which this maker does not draw")
    images = module.apply(variables, _normal(keys, module.latent_dim))
    return jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def vae_decode(module: Any, variables: dict[str, Any], z: jax.Array) -> jax.Array:
    """The likelihood's mean image for latents z: a VAE's output without observation noise."""
    return likelihoods.mean(module.likelihood, module.apply(variables, z, method=module.decode))


def _normal(keys: jax.Array, dim: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.normal(k, (dim,)))(keys)
