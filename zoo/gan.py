"""GAN generators and discriminators: DCGAN (and the WGAN-GP critic) and SNGAN with the projection discriminator.

Registered models, one module per role, created by name as a family's config says:

- `dcgan_g` / `dcgan_d`: DCGAN (Radford, Metz & Chintala 2016, arXiv 1511.06434) for 32x32 and
  64x64 images. `dcgan_d` with `norm="none"` (or `"layer"`) is the WGAN-GP critic (Gulrajani et
  al. 2017, arXiv 1704.00028, which drops batch norm from the critic and suggests layer norm).
- `sngan_g` / `sngan_d`: the CIFAR-10 ResNet GAN of SNGAN (Miyato et al. 2018, arXiv 1802.05957,
  Table 4; as in the authors' chainer code pfnet-research/sngan_projection and Mimicry) for 32x32
  images. With `num_classes > 0`, G uses conditional batch norm (de Vries et al. 2017; Dumoulin et
  al. 2017) and D is the projection discriminator (Miyato & Koyama 2018, arXiv 1802.05637).

One interface for all four (tensors NHWC, images in [-1, 1]):

- G: `__call__(z, labels=None, *, train=False) -> images [B, H, W, C]` in [-1, 1] (tanh), float32.
- D: `__call__(x, labels=None, *, train=False) -> logits [B]`, float32: one raw logit per image
  (no sigmoid); shape [B], not [B, 1].
- `labels` are int class ids [B]. They are required when `num_classes > 0` and rejected when it is 0;
  the DCGAN models are unconditional and expose `num_classes == 0` as a read-only property, so a
  family can read `model.num_classes` of any of them.
- `example_inputs()`: batch-1 zero inputs for `model.init(rng, *model.example_inputs())`.

Variable collections (pass the non-"params" ones as `mutable` in training and thread them on):

- "batch_stats": batch-norm running means/variances (`dcgan_g`, `sngan_g`, `dcgan_d` with
  `norm="batch"`). `train=True` normalises with the batch's statistics and updates the running ones,
  so it needs `mutable=["batch_stats"]`; `train=False` uses the running statistics and changes
  nothing.
- "spectral" (`SPECTRAL`): the power-iteration vector `u` and the last `sigma` of every spectrally
  normalised weight (`sngan_d` with `spectral_norm=True`). Each call runs one power iteration from
  the stored `u` (as the paper); `train=True` stores the new `u` and `sigma`, so it needs
  `mutable=["spectral"]`; `train=False` leaves them as they are (deterministic evaluation).
- `dcgan_d` with `norm="none"` or `"layer"` has params only.
In a train step: `out, state = model.apply({"params": p, **state}, ..., train=True,
mutable=list(state))` with `state = {k: v for k, v in variables.items() if k != "params"}`.

The convolutions are `zoo.layers.Conv`/`ConvTranspose` (and `SNConv`, which runs `layers.strided_conv`),
whose custom VJPs are fast on XLA:CPU; differentiating their gradients again (the WGAN-GP gradient
penalty: d/dparams of ||dD/dx||) works, as it is plain JAX inside.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange, reduce, repeat
from flax.linen.dtypes import promote_dtype

from zoo import layers
from zoo.registry import register

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

__all__ = [
    "BATCH_STATS", "DCGAN_NORMS", "SPECTRAL", "DCGANDiscriminator", "DCGANGenerator", "SNConv", "SNDense",
    "SNEmbed", "SNGANDiscriminator", "SNGANGenerator", "SpectralNorm",
]

BATCH_STATS = "batch_stats"
SPECTRAL = "spectral"
DCGAN_NORMS = ("batch", "layer", "none")
DCGAN_SIZES = (32, 64)
SNGAN_SIZES = (32,)

_LEAK = 0.2
_DCGAN_INIT = nn.initializers.normal(0.02)


def _xavier(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier uniform with PyTorch's `gain` (bound gain*sqrt(6/(fan_in+fan_out))), as SNGAN's code inits."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def _check_image_shape(model: str, image_shape: Sequence[int], sizes: tuple[int, ...]) -> tuple[int, int, int]:
    """image_shape as (H, W, C), or a ValueError naming the sizes `model` supports."""
    shape = tuple(image_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in sizes or shape[2] < 1:
        supported = ", ".join(f"({s}, {s}, C)" for s in sizes)
        raise ValueError(
            f"{model} supports image_shape {supported} (square, H = W in {list(sizes)}), got {shape}; "
            f"resize the data with data.resolution"
        )
    return shape  # type: ignore[return-value]


def _check_positive(module: nn.Module, fields: tuple[str, ...]) -> None:
    """Raise a ValueError naming the first of `fields` that is not a positive int."""
    for field in fields:
        value = getattr(module, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{field} must be a positive int, got {value!r}")


def _check_labels(model: str, num_classes: int, labels: Array | None, batch: int) -> None:
    """Labels [B] are required exactly when the model is conditional."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if num_classes == 0 and labels is not None:
        raise ValueError(f"{model} is unconditional (num_classes=0) but got labels; pass labels=None")
    if num_classes > 0:
        if labels is None:
            raise ValueError(f"{model} is conditional (num_classes={num_classes}) and needs int labels [B]")
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {labels.shape}")


def _check_input(model: str, x: Array, image_shape: tuple[int, int, int]) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{model} was built for images [B, {', '.join(map(str, image_shape))}], got {x.shape}")


# ---------------------------------------------------------------------------------------------------
# Spectral normalisation (Miyato et al. 2018).


def _l2_normalize(v: Array, eps: float) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


class SpectralNorm(nn.Module):
    """W / sigma(W), sigma(W) estimated by power iteration with `u` kept in the "spectral" collection.

    The weight is viewed as the matrix `W.reshape(-1, W.shape[-1])` (HWIO kernel -> [(h w i), o],
    dense kernel [in, out], embedding [classes, features]); its singular values are those of
    PyTorch's/chainer's [o, (i h w)] view. One call runs `n_steps` power iterations from the stored
    `u` (in float32, without gradient through u and v, as the paper's Algorithm 1): v = Wu/|Wu|,
    u = W^T v/|W^T v|, sigma = v^T W u, so the gradient flows through sigma's dependence on W.
    With `update_stats=True` the new `u` and `sigma` are stored (needs `mutable=["spectral"]`).
    A zero matrix gives sigma 0 and is returned unscaled.
    """

    n_steps: int = 1
    eps: float = 1e-12

    @nn.compact
    def __call__(self, w: Array, update_stats: bool) -> Array:
        """The normalised weight, same shape and dtype as `w`."""
        mat = w.reshape(-1, w.shape[-1]).astype(jnp.float32)
        u_var = self.variable(
            SPECTRAL, "u",
            lambda: _l2_normalize(jax.random.normal(self.make_rng("params"), (mat.shape[1],), jnp.float32), self.eps))
        sigma_var = self.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32))
        if self.n_steps < 1:
            raise ValueError(f"SpectralNorm needs n_steps >= 1, got {self.n_steps}")
        u = u_var.value
        for _ in range(self.n_steps):
            v = _l2_normalize(mat @ u, self.eps)
            u = _l2_normalize(mat.T @ v, self.eps)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = v @ mat @ u
        if update_stats and not self.is_initializing():
            u_var.value = u
            sigma_var.value = jax.lax.stop_gradient(sigma)
        return (mat / jnp.where(sigma != 0, sigma, 1.0)).reshape(w.shape).astype(w.dtype)


class SNConv(nn.Module):
    """A `zoo.layers.Conv` (same params "kernel"/"bias", NHWC/HWIO) whose kernel is spectrally normalised.

    `__call__(x, update_stats)`; the power-iteration state lives in the "spectral" collection under
    this module's "sn" child.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = (1, 1)
    padding: layers.PaddingLike = "SAME"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array, update_stats: bool) -> Array:
        """Applies the normalised conv to [B, H, W, C]."""
        kernel = self.param("kernel", self.kernel_init, layers._pair(self.kernel_size) + (x.shape[-1], self.features),
                            self.param_dtype)
        kernel = SpectralNorm(name="sn")(kernel, update_stats)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = layers.strided_conv(x, kernel, self.strides, self.padding)
        return y if bias is None else y + bias


class SNDense(nn.Module):
    """`nn.Dense` (params "kernel" [in, out], "bias") with a spectrally normalised kernel; `__call__(x, update_stats)`."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array, update_stats: bool) -> Array:
        """Applies the normalised dense layer to [..., in]."""
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        kernel = SpectralNorm(name="sn")(kernel, update_stats)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = x @ kernel
        return y if bias is None else y + bias


class SNEmbed(nn.Module):
    """`nn.Embed` (param "embedding" [num_embeddings, features]) with the table spectrally normalised as one matrix."""

    num_embeddings: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = _xavier()

    @nn.compact
    def __call__(self, ids: Array, update_stats: bool) -> Array:
        """Rows of the normalised table for int ids."""
        table = self.param("embedding", self.embedding_init, (self.num_embeddings, self.features), self.param_dtype)
        table = SpectralNorm(name="sn")(table, update_stats)
        (table,) = promote_dtype(table, dtype=self.dtype)
        return jnp.take(table, ids, axis=0)


# ---------------------------------------------------------------------------------------------------
# DCGAN.


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016, Fig. 1; widths as in dcgan.torch and PyTorch's DCGAN example).

    z [B, latent_dim] -> bias-free dense projection to 4x4x(ngf*2^(n-1)), BN, ReLU -> n-1 stride-2
    4x4 transposed convs halving the width down to ngf, each BN + ReLU -> a stride-2 4x4 transposed
    conv to C channels -> tanh; n = log2(H) - 2 upsamplings (3 for 32x32, 4 for 64x64: widths 512,
    256, 128, 64 at ngf 64). Weights ~ N(0, 0.02) (the paper); BN scale 1, bias 0.

    Differences from the paper/dcgan.torch: the projection is a Dense layer (the same function and
    parameters as their 4x4 full convolution of a 1x1 z); transposed convs use "SAME" padding with
    lax's kernel orientation (a flipped kernel relative to PyTorch's padding 1); no conv has a bias
    (dcgan.torch calls noBias on every conv), the last one included. BN momentum 0.9 (PyTorch 0.1),
    eps 1e-5. Unconditional only (the paper has no class-conditional model).

    Parameters at 64x64x3, ngf=64, latent_dim=100: 3,576,704 (PyTorch's DCGAN example's count).
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 100
    ngf: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def num_classes(self) -> int:
        """Always 0: DCGAN is unconditional."""
        return 0

    def example_inputs(self) -> tuple[Array]:
        """A batch-1 zero latent for `init`."""
        return (jnp.zeros((1, self.latent_dim), jnp.float32),)

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, *, train: bool = False) -> Array:
        """Latents [B, latent_dim] -> images [B, H, W, C] in [-1, 1], float32; `train` picks batch vs running BN stats."""
        size, _, channels = _check_image_shape("dcgan_g", self.image_shape, DCGAN_SIZES)
        _check_positive(self, ("latent_dim", "ngf"))
        _check_labels("dcgan_g", 0, labels, z.shape[0])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n = size.bit_length() - 3
        widths = [self.ngf * 2 ** (n - 1 - i) for i in range(n)]
        h = layers.Dense(16 * widths[0], use_bias=False, kernel_init=_DCGAN_INIT, name="project", **kw)(z)
        h = rearrange(h, "b (h w c) -> b h w c", h=4, w=4)
        h = nn.relu(layers.batch_norm(train, "project_bn", **kw)(h))
        for i, width in enumerate(widths[1:]):
            h = layers.ConvTranspose(width, (4, 4), strides=(2, 2), use_bias=False, kernel_init=_DCGAN_INIT,
                                     name=f"up_{i}", **kw)(h)
            h = nn.relu(layers.batch_norm(train, f"up_{i}_bn", **kw)(h))
        h = layers.ConvTranspose(channels, (4, 4), strides=(2, 2), use_bias=False, kernel_init=_DCGAN_INIT,
                                 name="out", **kw)(h)
        return jnp.tanh(h.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (Radford et al. 2016) and, with `norm="none"`/`"layer"`, the WGAN-GP critic.

    n = log2(H) - 2 stride-2 4x4 convs (padding 1) of widths ndf, 2ndf, ..., ndf*2^(n-1) (64, 128,
    256, 512 at 64x64), each LeakyReLU(0.2), with a normalisation after every conv but the first,
    then a 4x4 "VALID" conv on the 4x4 map to one logit per image: logits [B] (no sigmoid).

    `norm`: "batch" (DCGAN; "batch_stats" collection), "none" (the WGAN-GP critic: batch norm makes
    each critic output depend on the whole batch, which breaks the per-sample gradient penalty;
    params only) or "layer" (the layer norm that Gulrajani et al. suggest instead: per-sample
    normalisation over H, W and C with per-channel scale and bias; params only).

    Differences: no conv bias except with `norm="none"`, where every conv has one (dcgan.torch drops
    all conv biases; the WGAN-GP critic, with no normalisation to supply shifts, keeps them).
    Weights ~ N(0, 0.02); BN momentum 0.9, eps 1e-5. Unconditional only.

    Parameters at 64x64x3, ndf=64: 2,765,568 with "batch" (PyTorch's DCGAN example's count),
    2,763,776 + 961 biases = 2,764,737 with "none".
    """

    image_shape: tuple[int, int, int]
    ndf: int = 64
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def num_classes(self) -> int:
        """Always 0: DCGAN is unconditional."""
        return 0

    def example_inputs(self) -> tuple[Array]:
        """A batch-1 zero image for `init`."""
        return (jnp.zeros((1, *self.image_shape), jnp.float32),)

    def _norm(self, h: Array, train: bool, name: str) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.norm == "batch":
            return layers.batch_norm(train, name, **kw)(h)
        if self.norm == "layer":
            return nn.LayerNorm(epsilon=layers.TORCH_NORM_EPS, reduction_axes=(1, 2, 3), feature_axes=-1, name=name, **kw)(h)
        return h

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, train: bool = False) -> Array:
        """Images [B, H, W, C] -> logits [B], float32; with norm="batch", `train` picks batch vs running stats."""
        size, _, _ = _check_image_shape("dcgan_d", self.image_shape, DCGAN_SIZES)
        _check_positive(self, ("ndf",))
        if self.norm not in DCGAN_NORMS:
            raise ValueError(f"dcgan_d norm {self.norm!r}: choose one of {DCGAN_NORMS}")
        _check_input("dcgan_d", x, self.image_shape)
        _check_labels("dcgan_d", 0, labels, x.shape[0])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_DCGAN_INIT,
                  use_bias=self.norm == "none")
        h = x
        for i in range(size.bit_length() - 3):
            h = layers.Conv(self.ndf * 2**i, (4, 4), strides=(2, 2), padding=1, name=f"down_{i}", **kw)(h)
            if i > 0:
                h = self._norm(h, train, f"down_{i}_{self.norm}")
            h = nn.leaky_relu(h, _LEAK)
        logits = layers.Conv(1, (4, 4), padding="VALID", name="out", **kw)(h)
        return rearrange(logits, "b 1 1 1 -> b").astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------
# SNGAN ResNet (CIFAR-10) with conditional batch norm and the projection discriminator.


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are per class: gamma[y] * BN(x) + beta[y] (de Vries et al. 2017).

    With `num_classes == 0` it is an ordinary affine batch norm. The unscaled BN ("bn") keeps its
    running statistics in "batch_stats"; the class tables "gamma" (init 1) and "beta" (init 0) are
    embeddings [num_classes, C].
    """

    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, labels: Array | None, train: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.num_classes == 0:
            return layers.batch_norm(train, "bn", **kw)(x)
        h = layers.batch_norm(train, "bn", affine=False, **kw)(x)
        ch = x.shape[-1]
        gamma = nn.Embed(self.num_classes, ch, embedding_init=nn.initializers.ones, name="gamma", **kw)(labels)
        beta = nn.Embed(self.num_classes, ch, embedding_init=nn.initializers.zeros, name="beta", **kw)(labels)
        return h * gamma[:, None, None, :] + beta[:, None, None, :]


def _upsample(x: Array) -> Array:
    """2x nearest-neighbour upsampling (the chainer SNGAN code's unpooling)."""
    return repeat(x, "b h w c -> b (h 2) (w 2) c")


def _downsample(x: Array) -> Array:
    """2x2 average pooling."""
    return reduce(x, "b (h 2) (w 2) c -> b h w c", "mean")


class _GBlock(nn.Module):
    """SNGAN's up ResBlock: [cBN, ReLU, up, conv3x3, cBN, ReLU, conv3x3] + [up, conv1x1]."""

    features: int
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, labels: Array | None, train: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.relu(ConditionalBatchNorm(self.num_classes, name="bn_0", **kw)(x, labels, train))
        h = layers.Conv(self.features, (3, 3), kernel_init=_xavier(2**0.5), name="conv_0", **kw)(_upsample(h))
        h = nn.relu(ConditionalBatchNorm(self.num_classes, name="bn_1", **kw)(h, labels, train))
        h = layers.Conv(self.features, (3, 3), kernel_init=_xavier(2**0.5), name="conv_1", **kw)(h)
        skip = layers.Conv(self.features, (1, 1), kernel_init=_xavier(), name="shortcut", **kw)(_upsample(x))
        return h + skip


class _DBlock(nn.Module):
    """SNGAN's D ResBlock: [ReLU, conv3x3, ReLU, conv3x3, (avgpool)] + [conv1x1, (avgpool)] if it resizes or rewidens.

    `first=True` is the "optimized" first block on the image: [conv3x3, ReLU, conv3x3, avgpool] +
    [avgpool, conv1x1] (no leading ReLU, always downsampling).
    """

    features: int
    downsample: bool = False
    first: bool = False
    spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _conv(self, h: Array, k: int, gain: float, name: str, train: bool) -> Array:
        kw = dict(kernel_init=_xavier(gain), dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        if self.spectral_norm:
            return SNConv(self.features, (k, k), **kw)(h, update_stats=train)
        return layers.Conv(self.features, (k, k), **kw)(h)

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if self.first:
            h = self._conv(nn.relu(self._conv(x, 3, 2**0.5, "conv_0", train)), 3, 2**0.5, "conv_1", train)
            return _downsample(h) + self._conv(_downsample(x), 1, 1.0, "shortcut", train)
        h = self._conv(nn.relu(x), 3, 2**0.5, "conv_0", train)
        h = self._conv(nn.relu(h), 3, 2**0.5, "conv_1", train)
        skip = x
        if self.downsample or x.shape[-1] != self.features:
            skip = self._conv(x, 1, 1.0, "shortcut", train)
        if self.downsample:
            h, skip = _downsample(h), _downsample(skip)
        return h + skip


class SNGANGenerator(nn.Module):
    """SNGAN's CIFAR-10 ResNet generator (Miyato et al. 2018, Table 4; cGAN-PD's with num_classes > 0).

    z [B, latent_dim] -> dense to 4x4xngf -> 3 up ResBlocks of width ngf (4 -> 8 -> 16 -> 32) ->
    BN, ReLU, 3x3 conv to C, tanh. Each ResBlock is [BN, ReLU, 2x nearest up, conv3x3, BN, ReLU,
    conv3x3] + [up, conv1x1]. With `num_classes > 0` the ResBlocks' BNs are conditional (class
    gains/biases); the final BN stays unconditional, as in the authors' code. No spectral norm in G
    (the paper normalises D only). Init: Xavier-uniform, gain sqrt(2) in the residual convs and 1
    elsewhere, as the authors' code; BN momentum 0.9, eps 1e-5.

    Defaults are the paper's CIFAR-10 G (ngf 256, z 128; Mimicry's ngf=256). Differences: nearest
    upsampling as the chainer code (Mimicry uses bilinear); only 32x32 outputs.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 128
    ngf: int = 256
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def example_inputs(self) -> tuple[Array, ...]:
        """A batch-1 zero latent (and class 0 when conditional) for `init`."""
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        return (z, jnp.zeros((1,), jnp.int32)) if self.num_classes else (z,)

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, *, train: bool = False) -> Array:
        """Latents [B, latent_dim] (and labels [B]) -> images [B, 32, 32, C] in [-1, 1], float32."""
        _, _, channels = _check_image_shape("sngan_g", self.image_shape, SNGAN_SIZES)
        _check_positive(self, ("latent_dim", "ngf"))
        _check_labels("sngan_g", self.num_classes, labels, z.shape[0])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.Dense(16 * self.ngf, kernel_init=_xavier(), name="project", **kw)(z)
        h = rearrange(h, "b (h w c) -> b h w c", h=4, w=4)
        for i in range(3):
            h = _GBlock(self.ngf, self.num_classes, name=f"block_{i}", **kw)(h, labels, train)
        h = nn.relu(layers.batch_norm(train, "out_bn", **kw)(h))
        h = layers.Conv(channels, (3, 3), kernel_init=_xavier(), name="out", **kw)(h)
        return jnp.tanh(h.astype(jnp.float32))


class SNGANDiscriminator(nn.Module):
    """SNGAN's CIFAR-10 ResNet discriminator (Miyato et al. 2018, Table 4), projection D with num_classes > 0.

    Optimized down ResBlock (32 -> 16), down ResBlock (16 -> 8), two ResBlocks at 8x8, all of width
    ndf; ReLU; global sum pooling to features h [B, ndf]; logit = dense(h) [+ <embed(y), h>, the
    projection of Miyato & Koyama 2018]. Every conv, the dense head and the class embedding are
    spectrally normalised (one power iteration per call, state in "spectral"); `spectral_norm=False`
    gives the same net without it (Mimicry's ResNet WGAN-GP critic is this net). Returns logits [B].
    `features(x, train=...)` returns h. Init: Xavier-uniform, gain sqrt(2) in the residual convs and
    1 in shortcuts, head and embedding, as the authors' code.

    Defaults are the paper's CIFAR-10 D (ndf 128). Only 32x32 inputs.
    """

    image_shape: tuple[int, int, int]
    ndf: int = 128
    num_classes: int = 0
    spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        _check_image_shape("sngan_d", self.image_shape, SNGAN_SIZES)
        _check_positive(self, ("ndf",))
        kw = dict(spectral_norm=self.spectral_norm, dtype=self.dtype, param_dtype=self.param_dtype)
        self.blocks = [
            _DBlock(self.ndf, downsample=True, first=True, **kw),
            _DBlock(self.ndf, downsample=True, **kw),
            _DBlock(self.ndf, **kw),
            _DBlock(self.ndf, **kw),
        ]
        dense_kw = dict(kernel_init=_xavier(), dtype=self.dtype, param_dtype=self.param_dtype)
        embed_kw = dict(embedding_init=_xavier(), dtype=self.dtype, param_dtype=self.param_dtype)
        if self.spectral_norm:
            self.head = SNDense(1, **dense_kw)
            self.embed = SNEmbed(self.num_classes, self.ndf, **embed_kw) if self.num_classes > 0 else None
        else:
            self.head = layers.Dense(1, **dense_kw)
            self.embed = nn.Embed(self.num_classes, self.ndf, **embed_kw) if self.num_classes > 0 else None

    def example_inputs(self) -> tuple[Array, ...]:
        """A batch-1 zero image (and class 0 when conditional) for `init`."""
        x = jnp.zeros((1, *self.image_shape), jnp.float32)
        return (x, jnp.zeros((1,), jnp.int32)) if self.num_classes else (x,)

    def _sn(self, layer: nn.Module, x: Array, train: bool) -> Array:
        return layer(x, update_stats=train) if self.spectral_norm else layer(x)

    def features(self, x: Array, *, train: bool = False) -> Array:
        """Images [B, 32, 32, C] -> globally sum-pooled ReLU features h [B, ndf]."""
        _check_input("sngan_d", x, self.image_shape)
        h = x.astype(self.dtype)
        for block in self.blocks:
            h = block(h, train)
        return jnp.sum(nn.relu(h), axis=(1, 2))

    def __call__(self, x: Array, labels: Array | None = None, *, train: bool = False) -> Array:
        """Images [B, 32, 32, C] (and labels [B]) -> logits [B], float32; `train` stores the power iteration."""
        _check_labels("sngan_d", self.num_classes, labels, x.shape[0])
        h = self.features(x, train=train)
        logits = self._sn(self.head, h, train)[:, 0]
        if self.embed is not None:
            logits = logits + jnp.sum(self._sn(self.embed, labels, train) * h, axis=-1)
        return logits.astype(jnp.float32)


register("dcgan_g")(DCGANGenerator)
register("dcgan_d")(DCGANDiscriminator)
register("sngan_g")(SNGANGenerator)
register("sngan_d")(SNGANDiscriminator)
