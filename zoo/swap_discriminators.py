"""Discriminators of DeepFaceLab's SAEHD: the U-Net patch GAN discriminator and the "true face" code discriminator.

Clean-room reimplementations from the published behaviour of DFL's `UNetPatchDiscriminator` and
`CodeDiscriminator` (iperov/DeepFaceLab `core/leras/models/`; see
docs/references/faceswap-and-deepfacelab.md section 1.2, "GAN" and "True face"). DFL is GPL-3.0
and no code was copied. Tensors are NHWC; both discriminators return raw logits (no sigmoid), cast
to float32 so the BCE losses run in full precision whatever the compute dtype.

- `UNetPatchDiscriminator` (SAEHD's `gan_power` D, after the U-Net GAN discriminator of Schönfeld et
  al. 2020, arXiv 2002.12655): a 3x3 conv stack chosen by `patch_archi` so that its receptive field
  is closest to `patch_size`, with two heads: a "center" logit map on the bottleneck (one logit per
  patch) and a per-pixel logit map at input resolution from a transposed-conv decoder with encoder
  skips. `__call__(x) -> (center_logits [B, h, w, 1], pixel_logits [B, H, W, 1])`.
- `CodeDiscriminator` (SAEHD's `true_face_power` D, df only): stride-2 convs on the inter code map
  [B, h, w, C] then a 1x1 conv: `__call__(code) -> logits [B, h', w', 1]`.

Differences from DFL:
- `patch_archi` is our own exhaustive search over 1..max_layers 3x3 convs with every stride-1/2
  pattern (6 layers by default, so the receptive field is at most 127; DFL's search space and tie
  rules may differ, so a patch_size can map to a different stack than in DFL). Ties in |rf - patch_size| go to fewer layers, then to more
  stride-2 layers (the last conv's stride never changes the receptive field, so striding it halves
  the bottleneck for free), then to the smaller receptive field, then to the pattern that strides
  earlier.
- U-Net decoder levels whose encoder conv has stride 1 use an ordinary 3x3 conv instead of a stride-1
  transposed conv (the same function class); the input 1x1 conv is linear (no activation).
- CodeDiscriminator halves the map until its side is at most 2 (at least once), widths
  base_dims * min(2^i, 8); no normalisation layers.
- Initialisers are flax's defaults (lecun normal), not DFL's.
"""
from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo import layers

Array = jax.Array
Dtype = Any
Archi = list[tuple[int, int]]

__all__ = ["CodeDiscriminator", "UNetPatchDiscriminator", "patch_archi", "receptive_field"]

_KERNEL = 3
_LEAK_UNET = 0.2
_LEAK_CODE = 0.1


def receptive_field(archi: Archi) -> int:
    """Side of the input patch one output of a (kernel, stride) conv stack sees: rf += (k-1)*jump; jump *= s."""
    rf, jump = 1, 1
    for kernel, stride in archi:
        rf += (kernel - 1) * jump
        jump *= stride
    return rf


def patch_archi(patch_size: int, max_layers: int = 6) -> Archi:
    """3x3 conv stack [(kernel, stride), ...] of 1..max_layers layers, strides 1 or 2, with the receptive field closest to patch_size.

    Ties in |rf - patch_size| go to fewer layers, then more stride-2 layers, then the smaller rf, then
    the pattern that strides earlier (the first in enumeration order, 2 before 1).
    """
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if not isinstance(max_layers, int) or max_layers < 1:
        raise ValueError(f"max_layers must be a positive int, got {max_layers!r}")
    best = None
    for n in range(1, max_layers + 1):
        for strides in itertools.product((2, 1), repeat=n):
            archi = [(_KERNEL, s) for s in strides]
            rf = receptive_field(archi)
            key = (abs(rf - patch_size), n, -strides.count(2), rf)
            if best is None or key < best[0]:
                best = (key, archi)
    return best[1]


def _check_positive(module: nn.Module, fields: tuple[str, ...]) -> None:
    """Raise a ValueError naming the first of `fields` that is not a positive int."""
    for field in fields:
        value = getattr(module, field)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a positive int, got {value!r}")


class UNetPatchDiscriminator(nn.Module):
    """SAEHD's GAN D: a U-Net of 3x3 convs whose bottleneck logits each judge one ~patch_size patch and whose decoder judges every pixel.

    Encoder: a linear 1x1 conv to base_dims, then the `patch_archi(patch_size)` convs, conv i
    emitting min(base_dims * 2^(i+1), max_dims) channels, each followed by LeakyReLU(0.2).
    center head: 1x1 conv to 1 logit on the bottleneck. Decoder, for i from the last conv down: the
    mirror of conv i (a transposed conv of the same kernel and stride where it strided, else a 3x3
    conv) back to conv i's input width, LeakyReLU(0.2), concatenated with conv i's input (the skip);
    then a 1x1 conv to 1 logit per pixel. Input sides must be divisible by 2^(number of stride-2 convs).
    """

    patch_size: int
    base_dims: int = 16
    max_dims: int = 512
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def archi(self) -> Archi:
        """The encoder's (kernel, stride) convs, from `patch_archi(patch_size)`."""
        return patch_archi(self.patch_size)

    def downscale(self) -> int:
        """Total stride of the encoder: input sides must be multiples of it; the center map is side / it."""
        return 2 ** sum(s == 2 for _, s in self.archi())

    def _validate(self, x: Array) -> None:
        """Raise a ValueError naming the bad field or input size, before any shape error can hide it."""
        _check_positive(self, ("patch_size", "base_dims", "max_dims"))
        if x.ndim != 4:
            raise ValueError(f"input must be NHWC [B, H, W, C], got shape {x.shape}")
        step = self.downscale()
        h, w = x.shape[1:3]
        if h % step or w % step:
            raise ValueError(
                f"input size {h}x{w} is not supported for patch_size {self.patch_size}: the encoder has "
                f"{step.bit_length() - 1} stride-2 convs, so H and W must be multiples of {step}; "
                f"resize or crop the input to a multiple of {step}, or pick another patch_size"
            )

    def _width(self, level: int) -> int:
        """Channels at U-Net level `level`: 0 is the input 1x1 conv, level i+1 the output of conv i."""
        return min(self.base_dims * 2**level, self.max_dims)

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        """Images [B, H, W, C] in [0, 1] to (center_logits [B, H/d, W/d, 1], pixel_logits [B, H, W, 1]), d = downscale()."""
        self._validate(x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        archi = self.archi()
        h = layers.Conv(self._width(0), (1, 1), name="in_conv", **kw)(x)
        skips = []
        for i, (k, s) in enumerate(archi):
            skips.append(h)
            h = nn.leaky_relu(layers.Conv(self._width(i + 1), (k, k), strides=(s, s), name=f"down_{i}", **kw)(h),
                              _LEAK_UNET)
        center = layers.Conv(1, (1, 1), name="center_out", **kw)(h)
        for i in reversed(range(len(archi))):
            k, s = archi[i]
            if s == 1:
                up = layers.Conv(self._width(i), (k, k), name=f"up_{i}", **kw)
            else:
                up = layers.ConvTranspose(self._width(i), (k, k), strides=(s, s), name=f"up_{i}", **kw)
            h = jnp.concatenate([nn.leaky_relu(up(h), _LEAK_UNET), skips[i]], axis=-1)
        pixel = layers.Conv(1, (1, 1), name="pixel_out", **kw)(h)
        return center.astype(jnp.float32), pixel.astype(jnp.float32)


class CodeDiscriminator(nn.Module):
    """SAEHD's "true face" D: tells src inter codes from dst ones, so G can pull src codes towards dst's distribution.

    conv 4x4 stride 2 to base_dims, then 3x3 stride-2 convs of width base_dims * min(2^i, 8) while the
    map's larger side exceeds 2, each followed by LeakyReLU(0.1); then a 1x1 conv to 1 logit per
    position. A 4x4 code (res 64) gets one conv and an 8x8 code (res 128) two, both ending at 2x2.
    """

    base_dims: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @staticmethod
    def num_downscales(side: int) -> int:
        """Stride-2 convs for a code map of larger side `side`: halve (rounding up) until it is <= 2, at least once."""
        n = 1
        side = -(-side // 2)
        while side > 2:
            side = -(-side // 2)
            n += 1
        return n

    @nn.compact
    def __call__(self, code: Array) -> Array:
        """Code maps [B, h, w, C] to logits [B, h', w', 1], each side halved (rounding up) num_downscales times."""
        _check_positive(self, ("base_dims",))
        if code.ndim != 4:
            raise ValueError(f"code must be an NHWC map [B, h, w, C], got shape {code.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = code
        for i in range(self.num_downscales(max(code.shape[1:3]))):
            k = 4 if i == 0 else 3
            conv = layers.Conv(self.base_dims * min(2**i, 8), (k, k), strides=(2, 2), name=f"conv_{i}", **kw)
            h = nn.leaky_relu(conv(h), _LEAK_CODE)
        return layers.Conv(1, (1, 1), name="out", **kw)(h).astype(jnp.float32)
