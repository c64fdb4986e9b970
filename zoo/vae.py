"""Variational autoencoders (Kingma & Welling 2014) with MLP and convolutional bodies.

Both expose the same three calls, `encode(x) -> (mean, logvar)`, `decode(z) -> out` and
`__call__(x, eps) -> (out, mean, logvar)`, on images in [0, 1] laid out [B, H, W, C]. The
reparameterisation noise `eps` is an argument rather than drawn inside, so the family decides how
noise is keyed and every parallel strategy draws the same numbers. `out` is the decoder's raw
output for the likelihood named by `likelihood` (see `zoo.likelihoods`).

`vae_mlp` defaults to the IWAE paper's one-stochastic-layer model (Burda et al. 2016: 784-200-200-50,
tanh); `vae_conv` is a small DCGAN-like body (stride-2 convs down, transposed convs up) whose
transposed convs use the fast-gradient blocks of `zoo.layers`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from zoo import layers, likelihoods
from zoo.registry import register

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "silu": nn.silu, "elu": nn.elu, "leaky_relu": nn.leaky_relu}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class _Gaussian(nn.Module):
    """Dense head producing the posterior's mean and log-variance."""

    latent_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        stats = layers.Dense(2 * self.latent_dim, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        mean, logvar = jnp.split(stats.astype(jnp.float32), 2, axis=-1)
        return mean, logvar


class _VAE(nn.Module):
    """Shared reparameterised forward pass; subclasses define encode and decode."""

    def example_inputs(self) -> tuple[jax.Array, jax.Array]:
        """Zero inputs of batch 1 for `init`: an image and its noise."""
        return jnp.zeros((1, *self.image_shape), jnp.float32), jnp.zeros((1, self.latent_dim), jnp.float32)

    def __call__(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


class MLPVAE(_VAE):
    """Fully connected VAE: flattened pixels -> hidden layers -> Gaussian posterior -> mirror."""

    image_shape: tuple[int, int, int]
    latent_dim: int = 50
    hidden: Sequence[int] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        act = _activation(self.activation)
        dense = lambda n: layers.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype)  # noqa: E731
        self._act = act
        self.enc = [dense(n) for n in self.hidden]
        self.posterior = _Gaussian(self.latent_dim, self.dtype, self.param_dtype)
        self.dec = [dense(n) for n in reversed(self.hidden)]
        self.head = dense(math.prod(self.image_shape) * likelihoods.num_outputs(self.likelihood))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = rearrange(x, "b h w c -> b (h w c)").astype(self.dtype)
        for layer in self.enc:
            h = self._act(layer(h))
        return self.posterior(h)

    def decode(self, z: jax.Array) -> jax.Array:
        h = z.astype(self.dtype)
        for layer in self.dec:
            h = self._act(layer(h))
        height, width, _ = self.image_shape
        return rearrange(self.head(h), "b (h w c) -> b h w c", h=height, w=width)


class ConvVAE(_VAE):
    """Convolutional VAE: stride-2 convs down to H/2^n, dense bottleneck, transposed convs up."""

    image_shape: tuple[int, int, int]
    latent_dim: int = 32
    channels: Sequence[int] = (32, 64)
    hidden: int = 256
    activation: str = "silu"
    likelihood: str = "bernoulli"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        height, width, _ = self.image_shape
        factor = 2 ** len(self.channels)
        if height % factor or width % factor:
            raise ValueError(
                f"vae_conv with {len(self.channels)} stride-2 stages needs image sides divisible by {factor}, "
                f"got {height}x{width}; change model.channels or data.resolution"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self._act = _activation(self.activation)
        self.down = [layers.Conv(c, (4, 4), strides=(2, 2), **kw) for c in self.channels]
        self.enc_hidden = layers.Dense(self.hidden, **kw)
        self.posterior = _Gaussian(self.latent_dim, **kw)
        self.dec_hidden = layers.Dense(self.hidden, **kw)
        self.bottom = layers.Dense((height // factor) * (width // factor) * self.channels[-1], **kw)
        self.up = [layers.ConvTranspose(c, (4, 4), strides=(2, 2), **kw) for c in reversed(self.channels)]
        out_channels = self.image_shape[-1] * likelihoods.num_outputs(self.likelihood)
        self.head = layers.Conv(out_channels, (3, 3), **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.astype(self.dtype)
        for conv in self.down:
            h = self._act(conv(h))
        h = self._act(self.enc_hidden(rearrange(h, "b h w c -> b (h w c)")))
        return self.posterior(h)

    def decode(self, z: jax.Array) -> jax.Array:
        height, width, _ = self.image_shape
        factor = 2 ** len(self.channels)
        h = self._act(self.dec_hidden(z.astype(self.dtype)))
        h = self._act(self.bottom(h))
        h = rearrange(h, "b (h w c) -> b h w c", h=height // factor, w=width // factor)
        for conv in self.up:
            h = self._act(conv(h))
        return self.head(h)


register("vae_mlp")(MLPVAE)
register("vae_conv")(ConvVAE)
