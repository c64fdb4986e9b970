"""FOMM's multi-scale patch discriminator (Siarohin et al. 2019, the vox-adv configuration): LSGAN with feature matching.

One `PatchDiscriminator` per scale of an anti-aliased image pyramid (`zoo.warp.antialias_downsample`),
each seeing the image and, with keypoints given, their Gaussian heatmaps (variance `kp_variance`,
`zoo.warp.kp2gaussian`) as extra channels, as FOMM conditions its discriminator on the driving frame's
keypoints. A block is a 4x4 convolution without padding, instance norm (affine; not on the first
block), LeakyReLU 0.2 and a 2x2 average pool (not after the last block); a 1x1 convolution gives the
patch prediction map. Every block's output is returned too, for the feature-matching loss.
Convolutions are spectrally normalised with `spectral_norm` (state in the "spectral" collection,
`zoo.gan.SNConv`; apply with `mutable=["spectral"]` and `train=True` to run the power iteration).

Written from the paper and the published configuration (vox-adv-256.yaml: scales [1], block_expansion
32, max_features 512, 4 blocks, spectral norm); no code copied. Differences: NHWC; flax's default
initialisers; unregistered (it is trained by the reenactment family beside a registered `fomm`/`tpsmm`,
never exported alone).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo import layers, warp
from zoo.errors import ConfigError, DataError
from zoo.gan import SNConv

Array = jax.Array
Dtype = Any

__all__ = ["MultiScaleDiscriminator", "PatchDiscriminator"]



class PatchDiscriminator(nn.Module):
    """`num_blocks` valid 4x4 conv blocks of widths min(max_features, block_expansion 2^(i+1)), then a 1x1 conv to 1."""

    block_expansion: int = 32
    num_blocks: int = 4
    max_features: int = 512
    spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _conv(self, x: Array, features: int, kernel: int, name: str, train: bool) -> Array:
        kw = dict(padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        if self.spectral_norm:
            return SNConv(features, (kernel, kernel), **kw)(x, update_stats=train)
        return layers.Conv(features, (kernel, kernel), **kw)(x)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> tuple[list[Array], Array]:
        """[B, H, W, C] -> (each block's output, prediction map [B, h, w, 1] in float32)."""
        side = min(x.shape[1:3])
        for i in range(self.num_blocks):
            side = side - 3
            if i != self.num_blocks - 1:
                side //= 2
        if side < 1:
            raise DataError(f"a {self.num_blocks}-block patch discriminator needs larger inputs than {x.shape[1:3]} "
                            "(each block loses 3 px to its 4x4 valid conv and halves the rest); use fewer "
                            "reenact.d_num_blocks or coarser reenact.d_scales")
        features = []
        h = x.astype(self.dtype)
        for i in range(self.num_blocks):
            h = self._conv(h, min(self.max_features, self.block_expansion * 2 ** (i + 1)), 4, f"down{i}", train)
            if i != 0:
                h = nn.InstanceNorm(epsilon=layers.TORCH_NORM_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm{i}")(h)
            h = nn.leaky_relu(h, 0.2)
            if i != self.num_blocks - 1:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
            features.append(h)
        prediction = self._conv(h, 1, 1, "out", train)
        return features, prediction.astype(jnp.float32)


class MultiScaleDiscriminator(nn.Module):
    """One `PatchDiscriminator` per scale of `scales` (1 = the image itself), keypoint heatmaps optional."""

    scales: Sequence[float] = (1.0,)
    block_expansion: int = 32
    num_blocks: int = 4
    max_features: int = 512
    spectral_norm: bool = True
    kp_variance: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image: Array, kp: Array | None = None, train: bool = False
                 ) -> list[tuple[list[Array], Array]]:
        """image [B, H, W, C] in [0, 1], kp [B, N, 2] or None -> per scale (block outputs, prediction map)."""
        if not self.scales:
            raise ConfigError("MultiScaleDiscriminator needs at least one scale; FOMM uses (1,)")
        out = []
        for i, scale in enumerate(self.scales):
            x = image if scale == 1 else warp.antialias_downsample(image, scale)
            if kp is not None:
                heat = warp.kp2gaussian(jax.lax.stop_gradient(kp), x.shape[1:3], self.kp_variance)
                x = jnp.concatenate([x.astype(jnp.float32), heat], axis=-1)
            d = PatchDiscriminator(self.block_expansion, self.num_blocks, self.max_features, self.spectral_norm,
                                   self.dtype, self.param_dtype, name=f"scale{i}")
            out.append(d(x, train))
        return out
