"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020, arXiv 1912.04958).

Registered models (NHWC, images in [-1, 1], the GAN family's interface):

- `stylegan2_g`: mapping network (z normalised by its second moment, `mapping_layers` equalised
  FC layers at learning-rate multiplier `mapping_lr_mul`, a tracked `w_avg` for truncation) and
  the skip-architecture synthesis network: a learned 4x4 constant, per resolution two modulated
  3x3 convolutions (the first upsampling) with demodulation, per-pixel noise of learned strength,
  and a 1x1 ToRGB without demodulation whose outputs are upsampled and summed.
  `__call__(z, labels=None, *, train=False, keys=None, mixing_prob=0.0, psi=1.0, cutoff=None)`.
- `stylegan2_d`: the residual discriminator (FIR-downsampling blocks with a 1x1 skip, both scaled by
  sqrt(1/2)) with the minibatch-standard-deviation epilogue; `__call__(x, labels=None, *, train=False)`
  -> logits [B]. With `num_classes > 0` both are conditional as in StyleGAN2-ADA (G concatenates an
  embedded one-hot label to z; D projects onto a mapped label embedding).

Behaviour follows the paper and NVIDIA's stylegan2-ada-pytorch (non-commercial licence: its
behaviour and constants, not its code), so converted NVIDIA weights (`zoo.stylegan2_convert`) give
the same images:

- Equalised learning rate everywhere: weights are stored as N(0, 1) / lr_mul and scaled at run
  time by lr_mul / sqrt(fan_in); biases are stored as their init and scaled by lr_mul. lrelu(0.2)
  layers multiply by sqrt(2). `conv_clamp` > 0 clamps every conv's output to +-conv_clamp.
- Resampling is `zoo.resample.upfirdn2d` with the [1, 3, 3, 1] filter. An upsampling conv is a
  stride-2 transposed conv (PyTorch's orientation) followed by the filter with gain 4; a
  downsampling conv filters first, then convolves with stride 2.
- Modulated convolution: the input is scaled by the style s (the "activation scaling" form, which
  equals a per-example conv with weights w * s), convolved with the shared weight, and each
  output channel is demodulated by rsqrt(sum_i s_i^2 sum_k w_oik^2 + 1e-8), computed as one matrix
  product instead of materialising per-example weights.
- Randomness is per example: `keys` [B] draw each layer's noise and the style-mixing decision, so
  an example's image depends on its key and not on the batch it is in (one device, jit and pmap
  agree). Without keys the noise is each layer's stored `noise_const` buffer (NVIDIA's
  noise_mode "const"). Style mixing is decided per example (NVIDIA decides once per batch): with
  probability `mixing_prob`, the ws from a cutoff drawn in [1, num_ws) onward come from a second z.
- Minibatch stddev groups `mbstd_group` consecutive examples (NVIDIA groups with a stride of B / G;
  the statistics are the same, and consecutive groups stay on one device under pmap).
- bf16: blocks at the `num_bf16_res` highest resolutions compute in bfloat16 where NVIDIA uses
  float16 (bf16 has float32's exponent range, so NVIDIA's fp16 pre-normalisation of weights and
  styles is unnecessary); params, styles, demodulation and the RGB image stay float32.

Variables: "params" (trainable) and "buffers" (`w_avg` [w_dim], updated as an EMA with beta
`w_avg_beta` when `train=True`, so that needs `mutable=["buffers"]`; `noise_const` per layer).
Param names mirror NVIDIA's module paths (`mapping/fc0/weight`, `synthesis/b64/conv0/affine/bias`,
`b32/skip/weight`, ...); the converter's docstring tabulates the mapping.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, reduce, repeat
from jax import lax

from zoo import layers, resample
from zoo.registry import register

Array = jax.Array
Dtype = Any

__all__ = ["BUFFERS", "StyleGAN2Discriminator", "StyleGAN2Generator", "channels_at", "modulated_conv"]

BUFFERS = "buffers"
RESOLUTIONS = tuple(2**i for i in range(3, 11))  # 8 .. 1024 (8 and 16 for tests and toy data)
_LRELU_GAIN = math.sqrt(2.0)
_SKIP_GAIN = math.sqrt(0.5)
_DEMOD_EPS = 1e-8
_NOISE, _MIX = 0, 1  # fold_in tags of a key's two streams
_DN = ("NHWC", "HWIO", "NHWC")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution `res`: min(channel_base // res, channel_max), as NVIDIA's configs size them."""
    return max(1, min(channel_base // res, channel_max))


def _wide(x: Array) -> Array:
    """x in float32 or wider: bf16 blocks hand float32 on, and a float64 model (for exact derivative checks) stays so."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _normalize_2nd_moment(x: Array, eps: float = 1e-8) -> Array:
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def _bias_act(x: Array, bias: Array | None, act: str, gain: float = 1.0, clamp: float = 0.0) -> Array:
    """x + bias, then lrelu(0.2) * sqrt(2) or linear, times `gain`, clamped to +-clamp when clamp > 0."""
    if bias is not None:
        x = x + bias.astype(x.dtype)
    if act == "lrelu":
        x = jax.nn.leaky_relu(x, 0.2) * _LRELU_GAIN
    if gain != 1.0:
        x = x * gain
    return jnp.clip(x, -clamp, clamp) if clamp > 0 else x


def _check_resolution(model: str, image_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in RESOLUTIONS or shape[2] < 1:
        raise ValueError(f"{model} supports square power-of-two images from 8 to 1024 (image_shape (R, R, C), R in "
                         f"{list(RESOLUTIONS)}), got {shape}; resize the data with data.resolution")
    return shape[0], shape[2]


def _labels_onehot(model: str, num_classes: int, labels: Array | None, batch: int) -> Array | None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError(f"{model} is unconditional (num_classes=0) but got labels; pass labels=None")
        return None
    if labels is None or labels.shape != (batch,):
        raise ValueError(f"{model} is conditional (num_classes={num_classes}) and needs int labels [{batch}]")
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _conv_transpose_torch(x: Array, w: Array) -> Array:
    """PyTorch's conv_transpose2d(stride 2, padding 0) for NHWC x and HWIO w: [B, H, W, I] -> [B, 2H+k-2, 2W+k-2, O]."""
    return layers.conv_transpose(x, jnp.flip(w, (0, 1)), 2, "VALID")


def modulated_conv(x: Array, weight: Array, styles: Array, *, demodulate: bool = True, up: bool = False,
                   fir: np.ndarray | None = None) -> tuple[Array, Array | None]:
    """x [B, H, W, I] convolved with weight [k, k, I, O] modulated per example by styles [B, I].

    Returns the (not yet demodulated) output and the demodulation coefficients [B, O] (None when
    `demodulate` is off): the caller multiplies them in, before noise, as the paper does. With `up`,
    a stride-2 transposed conv then the FIR filter (gain 4) double the size; otherwise "SAME".
    """
    dcoefs = None
    if demodulate:
        wsq = jnp.sum(jnp.square(_wide(weight)), axis=(0, 1))  # [I, O]
        dcoefs = lax.rsqrt(jnp.square(_wide(styles)) @ wsq + _DEMOD_EPS)
    x = x * styles[:, None, None, :].astype(x.dtype)
    w = weight.astype(x.dtype)
    if up:
        x = _conv_transpose_torch(x, w)
        x = resample.upfirdn2d(x, fir, pad=(1, 1, 1, 1), gain=4.0)
    else:
        k = weight.shape[0]
        x = layers.strided_conv(x, w, 1, ((k // 2, k // 2), (k // 2, k // 2)))
    return x, dcoefs


class FullyConnected(nn.Module):
    """Equalised-learning-rate dense layer: params "weight" [in, out] ~ N(0, 1) / lr_mul and "bias" = bias_init."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: str = "linear"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        weight = self.param("weight", lambda k, s: jax.random.normal(k, s) / self.lr_mul, (fan_in, self.features))
        bias = None
        if self.use_bias:
            bias = self.param("bias", lambda k, s: jnp.full(s, self.bias_init, jnp.float32), (self.features,))
            bias = bias * self.lr_mul
        y = layers.dense_matmul(_wide(x), weight * (self.lr_mul / math.sqrt(fan_in)))
        return _bias_act(y, bias, self.activation)


class MappingNetwork(nn.Module):
    """z (and a one-hot label) -> w [B, w_dim]; tracks `w_avg` in "buffers" when `w_avg_beta` is set."""

    z_dim: int
    w_dim: int
    num_classes: int = 0
    num_layers: int = 8
    lr_mul: float = 0.01
    w_avg_beta: float | None = 0.995

    @nn.compact
    def __call__(self, z: Array | None, onehot: Array | None, update_w_avg: bool = False) -> Array:
        parts = []
        if self.z_dim:
            parts.append(_normalize_2nd_moment(_wide(z)))
        if self.num_classes:
            parts.append(_normalize_2nd_moment(FullyConnected(self.w_dim, name="embed")(onehot)))
        x = jnp.concatenate(parts, axis=-1)
        for i in range(self.num_layers):
            x = FullyConnected(self.w_dim, lr_mul=self.lr_mul, activation="lrelu", name=f"fc{i}")(x)
        if self.w_avg_beta is not None:
            w_avg = self.variable(BUFFERS, "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
            if update_w_avg and not self.is_initializing():
                mean = jnp.mean(lax.stop_gradient(x), axis=0)
                axis = layers.bound_data_axis()
                if axis is not None:
                    mean = lax.pmean(mean, axis)
                w_avg.value = mean + self.w_avg_beta * (w_avg.value - mean)
        return x

    def truncate(self, ws: Array, psi: float, cutoff: int | None) -> Array:
        """ws [B, L, w_dim] pulled toward `w_avg` by psi on the first `cutoff` layers (all when None)."""
        w_avg = self.get_variable(BUFFERS, "w_avg")
        layer = jnp.arange(ws.shape[1])[None, :, None]
        pulled = w_avg + psi * (ws - w_avg)
        return pulled if cutoff is None else jnp.where(layer < cutoff, pulled, ws)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling), demodulation, noise of learned strength, bias, lrelu."""

    features: int
    resolution: int
    layer_index: int
    up: bool = False
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, w: Array, keys: Array | None, noise_mode: str) -> Array:
        fan_in = x.shape[-1]
        styles = FullyConnected(fan_in, bias_init=1.0, name="affine")(w)
        weight = self.param("weight", nn.initializers.normal(1.0), (3, 3, fan_in, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        strength = self.param("noise_strength", nn.initializers.zeros_init(), ())
        res = self.resolution
        noise_const = self.variable(BUFFERS, "noise_const", lambda: jax.random.normal(self.make_rng("params"),
                                                                                        (res, res)))
        x, dcoefs = modulated_conv(x.astype(self.dtype), weight, styles, up=self.up, fir=resample.fir_filter())
        x = x * dcoefs[:, None, None, :].astype(x.dtype)
        if noise_mode == "random":
            noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, _NOISE),
                                                                             self.layer_index), (res, res)))(keys)
        elif noise_mode == "const":
            noise = noise_const.value[None]
        else:
            noise = None
        if noise is not None:
            x = x + (noise * strength)[..., None].astype(x.dtype)
        return _bias_act(x, bias, "lrelu", clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels without demodulation (styles scaled by 1/sqrt(fan_in)), bias, clamp."""

    channels: int
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, w: Array) -> Array:
        fan_in = x.shape[-1]
        styles = FullyConnected(fan_in, bias_init=1.0, name="affine")(w) / math.sqrt(fan_in)
        weight = self.param("weight", nn.initializers.normal(1.0), (1, 1, fan_in, self.channels))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.channels,))
        x, _ = modulated_conv(x.astype(self.dtype), weight, styles, demodulate=False)
        return _bias_act(_wide(x), bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: the 4x4 constant (at 4) or an upsampling layer, then a layer and ToRGB; adds to the image."""

    features: int
    resolution: int
    img_channels: int
    first_layer: int
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array | None, img: Array | None, ws: Array, keys: Array | None,
                 noise_mode: str) -> tuple[Array, Array]:
        """ws [B, 3, w_dim] at 4x4 (only the first two used) or [B, 3, w_dim] above: conv0, conv1, ToRGB."""
        kw = dict(resolution=self.resolution, conv_clamp=self.conv_clamp, dtype=self.dtype)
        if x is None:
            const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features))
            x = repeat(const, "h w c -> b h w c", b=ws.shape[0])
            x = SynthesisLayer(self.features, layer_index=self.first_layer, name="conv1", **kw)(
                x, ws[:, 0], keys, noise_mode)
            w_rgb = ws[:, 1]
        else:
            x = SynthesisLayer(self.features, layer_index=self.first_layer, up=True, name="conv0", **kw)(
                x, ws[:, 0], keys, noise_mode)
            x = SynthesisLayer(self.features, layer_index=self.first_layer + 1, name="conv1", **kw)(
                x, ws[:, 1], keys, noise_mode)
            w_rgb = ws[:, 2]
        y = ToRGB(self.img_channels, conv_clamp=self.conv_clamp, dtype=self.dtype, name="torgb")(x, w_rgb)
        img = y if img is None else resample.upsample2d(img, resample.fir_filter()) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, R, R, C] float32: the skip architecture from a learned 4x4 constant.

    Block b at resolution 2^(b+2) reads ws[2b-1 : 2b+2] (b >= 1; ws[0:2] at 4x4): its ToRGB shares
    its w with the next block's first layer, so num_ws = 2 log2(R) - 2 (18 at 1024).
    """

    resolution: int
    channels: int
    channel_base: int
    channel_max: int
    num_bf16_res: int = 0
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ws: Array, keys: Array | None, noise_mode: str) -> Array:
        log_res = int(math.log2(self.resolution))
        x = img = None
        for b, log_r in enumerate(range(2, log_res + 1)):
            res = 2**log_r
            dtype = jnp.bfloat16 if log_res - log_r < self.num_bf16_res else self.dtype
            start = max(2 * b - 1, 0)
            x, img = SynthesisBlock(channels_at(res, self.channel_base, self.channel_max), res, self.channels,
                                    first_layer=start, conv_clamp=self.conv_clamp, dtype=dtype, name=f"b{res}")(
                x, img, ws[:, start:start + 3], keys, noise_mode)
        return img


def _noise_mode(keys: Array | None, noise_mode: str | None) -> str:
    mode = noise_mode or ("random" if keys is not None else "const")
    if mode not in ("random", "const", "none"):
        raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {mode!r}")
    if mode == "random" and keys is None:
        raise ValueError("noise_mode 'random' needs per-example keys [B]")
    return mode


@register("stylegan2_g")
class StyleGAN2Generator(nn.Module):
    """StyleGAN2's generator (config F at the defaults): z [B, latent_dim] -> images [B, R, R, C] around [-1, 1].

    Fields: `latent_dim` (z, 512) and `w_dim` (512); `mapping_layers` (8; 2 in NVIDIA's cifar and
    auto configs) at `mapping_lr_mul` 0.01; `w_avg_beta` 0.995; feature maps per resolution
    min(channel_base // res, channel_max) (32768 and 512 as NVIDIA; paper256 uses 16384);
    `num_bf16_res` top resolutions in bf16; `conv_clamp` (NVIDIA 256; 0 = off). Outputs are not
    squashed (no tanh): quantisation clips them to [-1, 1], as NVIDIA's.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 512
    w_dim: int = 512
    num_classes: int = 0
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    w_avg_beta: float = 0.995
    channel_base: int = 32768
    channel_max: int = 512
    num_bf16_res: int = 0
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    per_example_keys = True  # the GAN family passes `keys` for noise and style mixing

    @property
    def num_ws(self) -> int:
        """How many ws the synthesis network takes: two per resolution above 4, one at 4, one for the last ToRGB."""
        return 2 * int(math.log2(self.image_shape[0])) - 2

    def example_inputs(self) -> tuple[Array, ...]:
        """A batch-1 zero latent (and class 0 when conditional) for `init`."""
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        return (z, jnp.zeros((1,), jnp.int32)) if self.num_classes else (z,)

    def setup(self) -> None:
        res, channels = _check_resolution("stylegan2_g", self.image_shape)
        for field in ("latent_dim", "w_dim", "mapping_layers", "channel_base", "channel_max"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"stylegan2_g.{field} must be a positive int, got {value!r}")
        if not 0 <= self.num_bf16_res <= int(math.log2(res)) - 1:
            raise ValueError(f"stylegan2_g.num_bf16_res = {self.num_bf16_res}: use 0 .. {int(math.log2(res)) - 1} "
                             f"(the number of resolutions 4 .. {res})")
        self.mapping = MappingNetwork(self.latent_dim, self.w_dim, self.num_classes, self.mapping_layers,
                                      self.mapping_lr_mul, self.w_avg_beta)
        self.synthesis = SynthesisNetwork(res, channels, self.channel_base, self.channel_max, self.num_bf16_res,
                                          self.conv_clamp, self.dtype)

    def map_latents(self, z: Array, labels: Array | None = None, *, psi: float = 1.0, cutoff: int | None = None,
                    update_w_avg: bool = False) -> Array:
        """z [B, latent_dim] -> ws [B, num_ws, w_dim], truncated toward `w_avg` by psi when psi != 1."""
        onehot = _labels_onehot("stylegan2_g", self.num_classes, labels, z.shape[0])
        w = self.mapping(z, onehot, update_w_avg)
        ws = repeat(w, "b d -> b l d", l=self.num_ws)
        return ws if psi == 1.0 else self.mapping.truncate(ws, psi, cutoff)

    def synthesize(self, ws: Array, keys: Array | None = None, noise_mode: str | None = None) -> Array:
        """ws [B, num_ws, w_dim] -> images; noise from `keys` [B] ("random") or the stored buffers ("const")."""
        return self.synthesis(ws, keys, _noise_mode(keys, noise_mode))

    def __call__(self, z: Array, labels: Array | None = None, *, train: bool = False, keys: Array | None = None,
                 mixing_prob: float = 0.0, psi: float = 1.0, cutoff: int | None = None,
                 noise_mode: str | None = None) -> Array:
        """Images for z; `train` updates `w_avg`; `keys` drive noise and (with mixing_prob > 0) style mixing."""
        ws = self.map_latents(z, labels, psi=psi, cutoff=cutoff, update_w_avg=train)
        if mixing_prob > 0.0:
            if keys is None:
                raise ValueError("style mixing needs per-example keys [B]")
            ws = self.mix(ws, labels, keys, mixing_prob)
        return self.synthesize(ws, keys, noise_mode)

    def mix(self, ws: Array, labels: Array | None, keys: Array, mixing_prob: float) -> Array:
        """Per example, with probability `mixing_prob`, ws from a cutoff in [1, num_ws) onward come from a second z."""
        mix_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, _MIX), 3))(keys)
        z2 = jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,)))(mix_keys[:, 0])
        cut = jax.vmap(lambda k: jax.random.randint(k, (), 1, self.num_ws))(mix_keys[:, 1])
        mixed = jax.vmap(lambda k: jax.random.uniform(k) < mixing_prob)(mix_keys[:, 2])
        cut = jnp.where(mixed, cut, self.num_ws)
        ws2 = self.map_latents(z2, labels)
        layer = jnp.arange(self.num_ws)[None, :, None]
        return jnp.where(layer >= cut[:, None, None], ws2, ws)


def _minibatch_std(x: Array, group: int, num_channels: int) -> Array:
    """x [B, H, W, C] with `num_channels` more channels: the feature stddev over each group of consecutive examples."""
    b, h, w, c = x.shape
    g = min(group, b)
    if b % g:
        raise ValueError(f"minibatch stddev needs the batch ({b}) to be a multiple of mbstd_group ({g}); "
                         "change the batch size or gan.discriminator.mbstd_group")
    y = rearrange(_wide(x), "(n g) h w (f c) -> n g h w f c", g=g, f=num_channels)
    y = jnp.sqrt(jnp.var(y, axis=1) + 1e-8)
    y = reduce(y, "n h w f c -> n f", "mean")
    y = repeat(y, "n f -> (n g) h w f", g=g, h=h, w=w)
    return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class DConv(nn.Module):
    """Equalised-lr conv of the discriminator: k x k, optionally FIR-downsampling by 2, bias, activation, gain."""

    features: int
    kernel: int
    down: bool = False
    use_bias: bool = True
    activation: str = "lrelu"
    gain: float = 1.0
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1] * self.kernel * self.kernel
        weight = self.param("weight", nn.initializers.normal(1.0), (self.kernel, self.kernel, x.shape[-1],
                                                                    self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,)) if self.use_bias else None
        w = (weight / math.sqrt(fan_in)).astype(self.dtype)
        x = x.astype(self.dtype)
        fir = resample.fir_filter()
        if self.down and self.kernel == 1:
            x = layers.strided_conv(resample.downsample2d(x, fir), w, 1, "VALID")
        elif self.down:
            p = self.kernel // 2 + 1
            x = layers.strided_conv(resample.upfirdn2d(x, fir, pad=(p, p, p, p)), w, 2, "VALID")
        else:
            p = self.kernel // 2
            x = layers.strided_conv(x, w, 1, ((p, p), (p, p)))
        return _bias_act(x, bias, self.activation, self.gain, self.conv_clamp * self.gain)


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual D: (fromRGB,) conv3x3, downsampling conv3x3 + 1x1 skip, gain sqrt(1/2)."""

    features: int
    out_features: int
    from_rgb: bool
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(conv_clamp=self.conv_clamp, dtype=self.dtype)
        if self.from_rgb:
            x = DConv(self.features, 1, name="fromrgb", **kw)(x)
        y = DConv(self.out_features, 1, down=True, use_bias=False, activation="linear", gain=_SKIP_GAIN,
                  dtype=self.dtype, name="skip")(x)
        x = DConv(self.features, 3, name="conv0", **kw)(x)
        x = DConv(self.out_features, 3, down=True, gain=_SKIP_GAIN, name="conv1", **kw)(x)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch stddev, conv3x3, FC, output FC (projected onto `cmap` when conditional)."""

    features: int
    mbstd_group: int
    mbstd_channels: int
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cmap: Array | None) -> Array:
        x = _wide(x)
        if self.mbstd_group > 0:
            x = _minibatch_std(x, self.mbstd_group, self.mbstd_channels)
        x = DConv(self.features, 3, conv_clamp=self.conv_clamp, dtype=jnp.promote_types(self.dtype, jnp.float32),
                  name="conv")(x)
        x = FullyConnected(self.features, activation="lrelu", name="fc")(rearrange(x, "b h w c -> b (h w c)"))
        if cmap is None:
            return FullyConnected(1, name="out")(x)[:, 0]
        x = FullyConnected(cmap.shape[-1], name="out")(x)
        return jnp.sum(x * cmap, axis=-1) / math.sqrt(cmap.shape[-1])


@register("stylegan2_d")
class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: images [B, R, R, C] in [-1, 1] -> logits [B], float32.

    Blocks `b{R}` .. `b8` (a 1x1 fromRGB in the first), each conv3x3, FIR-downsampling conv3x3 and
    a bias-free 1x1 FIR-downsampling skip, summed with gain sqrt(1/2); then `b4`: the minibatch
    stddev (`mbstd_group` consecutive examples, `mbstd_channels`), conv3x3, FC and the output FC,
    a projection onto the mapped label embedding (`mapping`) when conditional, as StyleGAN2-ADA.
    """

    image_shape: tuple[int, int, int]
    num_classes: int = 0
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group: int = 4
    mbstd_channels: int = 1
    mapping_layers: int = 8
    num_bf16_res: int = 0
    conv_clamp: float = 0.0
    dtype: Dtype = jnp.float32

    def example_inputs(self) -> tuple[Array, ...]:
        """A zero image batch of one stddev group (and class 0 when conditional) for `init`."""
        x = jnp.zeros((max(1, self.mbstd_group),) + tuple(self.image_shape), jnp.float32)
        return (x, jnp.zeros((x.shape[0],), jnp.int32)) if self.num_classes else (x,)

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, train: bool = False) -> Array:
        """Logits [B] for images [B, R, R, C]; `train` is accepted for the family's interface and changes nothing."""
        res, _ = _check_resolution("stylegan2_d", self.image_shape)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"stylegan2_d was built for images [B, {', '.join(map(str, self.image_shape))}], "
                             f"got {x.shape}")
        onehot = _labels_onehot("stylegan2_d", self.num_classes, labels, x.shape[0])
        log_res = int(math.log2(res))
        for log_r in range(log_res, 2, -1):
            r = 2**log_r
            dtype = jnp.bfloat16 if log_res - log_r < self.num_bf16_res else self.dtype
            x = DiscriminatorBlock(self._channels(r), self._channels(r // 2), from_rgb=r == res,
                                   conv_clamp=self.conv_clamp, dtype=dtype, name=f"b{r}")(x)
        cmap = None
        if self.num_classes:
            cmap = MappingNetwork(0, self._channels(4), self.num_classes, self.mapping_layers, w_avg_beta=None,
                                  name="mapping")(None, onehot)
        return DiscriminatorEpilogue(self._channels(4), self.mbstd_group, self.mbstd_channels, self.conv_clamp,
                                     self.dtype, name="b4")(x, cmap)

    def _channels(self, res: int) -> int:
        return channels_at(res, self.channel_base, self.channel_max)
