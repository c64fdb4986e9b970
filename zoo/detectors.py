"""Deepfake detectors: an Xception-style network, a small ResNet and the two spectral baselines.

Registered models, each one raw logit per image (higher = more likely fake; label 1 = fake):

- `xception_detector` (`XceptionDetector`): Chollet 2017's Xception, the FaceForensics++ detector
  (Rössler et al. 2019), with a width multiplier and a middle-flow depth so that it runs on CPU.
- `resnet_detector` (`ResNetDetector`): a ResNet of basic blocks (He et al. 2016), by default
  ResNet-18 at a quarter of its width (Wang et al. 2020 use ResNet-50).
- `spectrum_durall_detector` (`DurallDetector`): Durall et al. 2019's azimuthally averaged log
  spectrum with a logistic-regression head.
- `spectrum_frank_detector` (`FrankDetector`): Frank et al. 2020's log-DCT with a logistic-regression head.

One interface: `__call__(x, train=False) -> logits [B]` (float32, no sigmoid) on images
x [B, H, W, C] in [0, 1], C = 3 or 1.

Variable collections besides "params":

- "batch_stats" (`BATCH_STATS`, the CNNs): batch-norm running statistics, as in `zoo.gan`.
  `train=True` normalises with the batch's statistics (over the global batch under pmap too:
  `zoo.layers.bound_data_axis`) and needs `mutable=["batch_stats"]`; `train=False` uses the running ones.
- "stats" (`STATS`, the spectral models): the per-feature mean and std over the training set that
  standardise the features before the head. They are fitted, not learnt by gradient
  (`train.spectral_head.fit_feature_stats`, or `fit_spectral_head` for stats and head at once in
  seconds); `init` sets mean 0 and std 1. The head ("head": one Dense to one logit) is an
  ordinary param, so a trainer can also fit it with Adam.

Both collections are what an export keeps beside the params (`train.families.base.Export.collections`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange, reduce
from flax.linen.dtypes import promote_dtype

from zoo import layers, resnet, spectral
from zoo.errors import ConfigError, DataError
from zoo.registry import register

Array = jax.Array
Dtype = Any

__all__ = [
    "BATCH_STATS", "STATS", "DepthwiseConv", "DurallDetector", "FrankDetector", "ResNetDetector", "SeparableConv",
    "XceptionDetector", "depthwise_conv", "xception_widths",
]

BATCH_STATS = "batch_stats"
STATS = "stats"

_XCEPTION_BASE = 32  # the published first conv's width: `width` scales every width by width / 32
_XCEPTION_WIDTHS = (32, 64, 128, 256, 728, 1024, 1536, 2048)


def _check_images(model: str, x: Array) -> None:
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{model} takes images [B, H, W, C] in [0, 1] with C = 3 or 1, got shape {x.shape}; "
                        "add a batch axis or convert the images to RGB")


def _check_at_least(model: str, low: int, **fields: int) -> None:
    for key, value in fields.items():
        if value < low:
            raise ConfigError(f"{model} field {key} = {value} must be an integer >= {low}; set model.{key}")


def _resize(x: Array, size: int) -> Array:
    """Square-resize [B, H, W, C] to `size` (bilinear, antialiased when shrinking) unless it is already that size."""
    if size == 0 or x.shape[1:3] == (size, size):
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), method="bilinear")


def _to_signed(x: Array, dtype: Dtype) -> Array:
    """[0, 1] -> [-1, 1]: FF++'s input normalisation (mean = std = 0.5 per channel)."""
    return (2.0 * x.astype(jnp.float32) - 1.0).astype(dtype)


def _logits(h: Array, dtype: Dtype, param_dtype: Dtype) -> Array:
    out = layers.Dense(1, dtype=dtype, param_dtype=param_dtype, name="head")(h)
    return rearrange(out, "b 1 -> b").astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------
# Xception


def xception_widths(width: int) -> tuple[int, ...]:
    """Xception's eight widths (stem 32, 64; entry 128, 256, 728; exit 1024, 1536, 2048) scaled by width / 32.

    The middle flow's 728 (not a multiple of 32) rounds to the nearest integer: 364 at width 16.
    """
    return tuple(max(1, round(w * width / _XCEPTION_BASE)) for w in _XCEPTION_WIDTHS)


def depthwise_conv(x: Array, kernel: Array) -> Array:
    """Per-channel conv, "SAME" padding, stride 1: x [B, H, W, C] and kernel [kh, kw, 1, C] -> [B, H, W, C].

    On XLA:CPU (`zoo.layers.fast_forms_enabled`) it is the sum of kh * kw shifted copies of the
    padded input times one kernel tap each, whose gradients are slices, pads and products: a
    3x3 depthwise conv's input-and-kernel gradient ran 10-30x faster than the grouped conv's
    (5.6 against 65 ms at 32 x 29 x 29 x 16, 2.3 against 62 ms at 32 x 2 x 2 x 768), and the
    default Xception's Adam step (batch 32, 64 px, 10.8 GFLOP) went from 2.1 s to 0.8 s on this
    project's loaded 2-core CPU. Elsewhere it is the grouped conv (`lax.conv_general_dilated`
    with feature_group_count = C), the vendor kernel.
    """
    kh, kw = kernel.shape[:2]
    if not layers.fast_forms_enabled():
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=x.shape[-1])
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    taps = [padded[:, i:i + h, j:j + w, :] * kernel[i, j, 0] for i in range(kh) for j in range(kw)]
    return functools.reduce(jnp.add, taps)


class DepthwiseConv(nn.Module):
    """A k x k per-channel conv without bias ("SAME", stride 1): params {"kernel": [k, k, 1, C]}, as flax's
    `nn.Conv(C, (k, k), feature_group_count=C)` lays them out and initialises them (lecun normal, fan-in k * k)."""

    kernel_size: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, self.kernel_size, 1, x.shape[-1])
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, self.param_dtype)
        x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
        return depthwise_conv(x, kernel)


class SeparableConv(nn.Module):
    """Depthwise-separable conv (Xception's SeparableConv2D): a per-channel k x k conv, then a 1x1 conv; no biases.

    Params: "depthwise" {"kernel": [k, k, 1, C_in]} (`DepthwiseConv`) and "pointwise" {"kernel":
    [1, 1, C_in, features]}; "SAME" padding, stride 1.
    """

    features: int
    kernel_size: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = DepthwiseConv(self.kernel_size, name="depthwise", **kw)(x)
        return layers.Conv(self.features, (1, 1), use_bias=False, name="pointwise", **kw)(h)


class _XceptionBlock(nn.Module):
    """One residual block: (ReLU, separable conv, BN) per width, then either 3x3/2 max pool plus a 1x1/2 conv+BN
    shortcut (`downsample`) or an identity shortcut. The entry flow's first block skips the leading ReLU,
    as its input has just been through one."""

    widths: Sequence[int]
    downsample: bool
    relu_first: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x
        for i, width in enumerate(self.widths):
            if i > 0 or self.relu_first:
                h = nn.relu(h)
            h = SeparableConv(width, name=f"sep{i}", **kw)(h)
            h = layers.batch_norm(train, f"sep{i}_bn", **kw)(h)
        if not self.downsample:
            return h + x
        h = nn.max_pool(h, (3, 3), strides=(2, 2), padding="SAME")
        skip = layers.Conv(self.widths[-1], (1, 1), strides=(2, 2), use_bias=False, name="shortcut", **kw)(x)
        return h + layers.batch_norm(train, "shortcut_bn", **kw)(skip)


@register("xception_detector")
class XceptionDetector(nn.Module):
    """Xception (Chollet 2017, arXiv 1610.02357) with one logit: the FaceForensics++ detector (Rössler et al. 2019).

    Entry flow: 3x3/2 conv and 3x3 conv ("VALID", as Keras), then three downsampling residual
    blocks of two separable convs each with a 1x1/2 conv shortcut; middle flow: `middle_blocks`
    identity-shortcut blocks of three separable convs; exit flow: one downsampling block (widths
    728 -> 1024), separable convs 1536 and 2048 each with BN and ReLU, global average pool, one
    logit. Every conv is bias-free and followed by batch norm; widths are `xception_widths(width)`.

    Images [B, H, W, C] in [0, 1] are resized to `input_size` (bilinear, `jax.image.resize`) when
    they differ and mapped to [-1, 1] (FF++'s mean = std = 0.5).

    `XceptionDetector(input_size=299, width=32, middle_blocks=8)` is the published network: its
    trainable params are Keras's 22,855,952 less the 1000-way ImageNet head (2048 * 1000 + 1000) plus
    this one-logit head (2048 + 1) = 20,809,001; with the 54,528 batch-norm running statistics
    ("batch_stats", which Keras counts among its 22.9M "parameters") 20,863,529.

    Differences: narrow CPU defaults (width 16: widths 16 ... 1024 with a 364-wide middle flow;
    2 middle blocks instead of 8; 64 px instead of 299: 2,811,469 params, Xception's design at 13.5%
    of its size); a single logit instead of FF++'s two-way softmax; BN momentum 0.9 and eps 1e-5
    (PyTorch's defaults, as in the Cadene port FF++ used) rather than Keras's 0.99 and 1e-3;
    flax's default (lecun normal) initialisers; no ImageNet pretraining. The shortcut branch takes
    the block's input before its leading ReLU, as Keras's does.
    """

    input_size: int = 64
    width: int = 16
    middle_blocks: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Images [B, H, W, C] in [0, 1] -> logits [B], float32; `train` picks batch vs running BN statistics."""
        _check_images("xception_detector", x)
        _check_at_least("xception_detector", 1, width=self.width)
        _check_at_least("xception_detector", 0, middle_blocks=self.middle_blocks)
        if self.input_size < 7:
            raise ConfigError(f"xception_detector input_size = {self.input_size}: its two stem convs need at least "
                              "7 px; set model.input_size (64 is the default, 299 the paper's)")
        stem1, stem2, entry1, entry2, middle, exit1, exit2, exit3 = xception_widths(self.width)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _to_signed(_resize(x, self.input_size), self.dtype)
        h = layers.Conv(stem1, (3, 3), strides=(2, 2), padding="VALID", use_bias=False, name="stem1", **kw)(h)
        h = nn.relu(layers.batch_norm(train, "stem1_bn", **kw)(h))
        h = layers.Conv(stem2, (3, 3), padding="VALID", use_bias=False, name="stem2", **kw)(h)
        h = nn.relu(layers.batch_norm(train, "stem2_bn", **kw)(h))
        h = _XceptionBlock((entry1, entry1), True, relu_first=False, name="entry1", **kw)(h, train)
        h = _XceptionBlock((entry2, entry2), True, name="entry2", **kw)(h, train)
        h = _XceptionBlock((middle, middle), True, name="entry3", **kw)(h, train)
        for i in range(self.middle_blocks):
            h = _XceptionBlock((middle,) * 3, False, name=f"middle{i}", **kw)(h, train)
        h = _XceptionBlock((middle, exit1), True, name="exit", **kw)(h, train)
        for i, width in enumerate((exit2, exit3)):
            h = SeparableConv(width, name=f"exit_sep{i}", **kw)(h)
            h = nn.relu(layers.batch_norm(train, f"exit_sep{i}_bn", **kw)(h))
        return _logits(reduce(h, "b h w c -> b c", "mean"), **kw)


# ---------------------------------------------------------------------------------------------------
# ResNet


@register("resnet_detector")
class ResNetDetector(nn.Module):
    """A ResNet of basic blocks (He et al. 2016, arXiv 1512.03385) with one logit, as Wang et al. 2020's detector.

    Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool; then one stage per entry of `stages` (that many
    basic blocks) of width `widths[i]`, each stage after the first starting with stride 2 and a
    1x1/2 conv + BN shortcut (torchvision's option B); global average pool; one logit. Images in
    [0, 1] go to [-1, 1]; with `input_size` > 0 they are first resized to it (0: used as they come).

    `ResNetDetector(stages=(2, 2, 2, 2), widths=(64, 128, 256, 512))` is ResNet-18: its params are
    torchvision's 11,689,512 less the 1000-way head (512 * 1000 + 1000) plus this head (512 + 1) =
    11,177,025. The default is that network at a quarter of the width (16 ... 128 channels).

    Differences: Wang et al. train ResNet-50 (bottleneck blocks) from ImageNet weights, normalised
    with ImageNet's mean and std; this is trained from scratch with FF++'s [-1, 1] input; flax's
    default (lecun normal) initialisers.
    """

    stages: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (16, 32, 64, 128)
    input_size: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Images [B, H, W, C] in [0, 1] -> logits [B], float32; `train` picks batch vs running BN statistics."""
        _check_images("resnet_detector", x)
        if len(self.stages) != len(self.widths) or not self.stages:
            raise ConfigError(f"resnet_detector has stages {list(self.stages)} and widths {list(self.widths)}: give "
                              "one width per stage (model.stages and model.widths, equally long, non-empty)")
        _check_at_least("resnet_detector", 1, **{f"stages[{i}]": n for i, n in enumerate(self.stages)},
                        **{f"widths[{i}]": n for i, n in enumerate(self.widths)})
        if self.input_size < 0:
            raise ConfigError(f"resnet_detector input_size = {self.input_size}: set model.input_size to a size in "
                              "pixels, or 0 to use the images as they come")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = resnet.trunk(_to_signed(_resize(x, self.input_size), self.dtype), self.stages, self.widths, train, **kw)
        return _logits(reduce(h, "b h w c -> b c", "mean"), **kw)


# ---------------------------------------------------------------------------------------------------
# Spectral baselines


class _SpectralDetector(nn.Module):
    """Features of a fixed spectral transform, standardised by the "stats" collection, then one Dense to one logit."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    registered_name = "spectral detector"

    def features(self, x: Array) -> Array:
        """Images [B, H, W, C] -> the model's features [B, D], float32 (no variables: call it unbound too)."""
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Images [B, H, W, C] in [0, 1] -> logits [B], float32; `train` changes nothing (no batch statistics)."""
        del train
        feats = self.features(x)
        dim = feats.shape[-1]
        mean = self.variable(STATS, "mean", jnp.zeros, (dim,), jnp.float32).value
        std = self.variable(STATS, "std", jnp.ones, (dim,), jnp.float32).value
        if mean.shape != (dim,):
            raise DataError(f"{self.registered_name} was fitted on images giving {mean.shape[0]} features; images "
                            f"of shape {x.shape[1:]} give {dim}. Feed images of the training size (spectra depend on "
                            "it: crop rather than resize, as Durall et al. advise)")
        z = (feats - mean) / std
        head = layers.Dense(1, kernel_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="head")
        return rearrange(head(z), "b 1 -> b").astype(jnp.float32)


@register("spectrum_durall_detector")
class DurallDetector(_SpectralDetector):
    """Durall et al. 2019 (arXiv 1911.00686): the azimuthal average of the log spectrum and logistic regression.

    Features: `zoo.spectral.durall_features`, a profile of floor(sqrt(2) * (S // 2)) + 1 values at
    S x S (46 at 64 px, 211 at 299 px). They are standardised with the training set's mean and std
    instead of Durall's interpolation to 300 points and division by the first value (see
    `durall_features`); the head is an L2-regularised logistic regression (their LR; they also ran a
    linear SVM). Images are used at their own size: the feature count fixes the size the model takes.
    """

    registered_name = "spectrum_durall_detector"

    def features(self, x: Array) -> Array:
        return spectral.durall_features(x)


@register("spectrum_frank_detector")
class FrankDetector(_SpectralDetector):
    """Frank et al. 2020 (ICML, GANDCTAnalysis): the log-magnitude 2D DCT-II and logistic regression.

    Features: `zoo.spectral.frank_features`, ln(|DCT| + 1e-12) of the grey image (H * W values) or,
    with `per_channel`, of each channel (H * W * C), standardised per coefficient with the training
    set's mean and std as in their code. Their paper also trains CNNs on these inputs; this is their
    logistic-regression baseline (L2 penalty; they ran L1 too). They used 128 px crops; any size
    works here, fixed by the feature count.
    """

    registered_name = "spectrum_frank_detector"

    per_channel: bool = False

    def features(self, x: Array) -> Array:
        return spectral.frank_features(x, per_channel=self.per_channel)
