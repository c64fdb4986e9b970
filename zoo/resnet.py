"""ResNet basic blocks and their trunk (He et al. 2016, arXiv 1512.03385) as torchvision builds ResNet-18.

Shared by the ResNet forgery detector (`zoo.detectors`) and TPSMM's keypoint and background networks
(`zoo.reenact`), which both start from torchvision's `resnet18`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo import layers

Array = jax.Array
Dtype = Any


class BasicBlock(nn.Module):
    """3x3 conv, BN, ReLU, 3x3 conv, BN, plus the input (1x1 strided conv + BN where the shape changes), ReLU."""

    features: int
    stride: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        bn = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s = (self.stride, self.stride)
        h = layers.Conv(self.features, (3, 3), strides=s, padding=1, name="conv1", **kw)(x)
        h = nn.relu(layers.batch_norm(train, "bn1", **bn)(h))
        h = layers.Conv(self.features, (3, 3), padding=1, name="conv2", **kw)(h)
        h = layers.batch_norm(train, "bn2", **bn)(h)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = layers.Conv(self.features, (1, 1), strides=s, name="shortcut", **kw)(x)
            x = layers.batch_norm(train, "shortcut_bn", **bn)(x)
        return nn.relu(h + x)


def trunk(x: Array, stages: Sequence[int], widths: Sequence[int], train: bool, *, dtype: Dtype,
          param_dtype: Dtype) -> Array:
    """[B, H, W, C] -> the last stage's map [B, H / 32, W / 32, widths[-1]] (before any pooling).

    Stem: 7x7/2 conv (no bias), BN, ReLU, 3x3/2 max pool; then `stages[i]` basic blocks of width
    `widths[i]`, each stage after the first starting with stride 2 and a 1x1/2 conv + BN shortcut
    (torchvision's option B). Called inside a compact module, its layers (`stem`, `stem_bn`,
    `stage<i>_block<j>`) are that module's own, so the caller's parameter tree holds them directly.
    """
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    h = layers.Conv(widths[0], (7, 7), strides=(2, 2), padding=3, use_bias=False, name="stem", **kw)(x)
    h = nn.relu(layers.batch_norm(train, "stem_bn", **kw)(h))
    h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, (blocks, width) in enumerate(zip(stages, widths)):
        for j in range(blocks):
            h = BasicBlock(width, 2 if i > 0 and j == 0 else 1, name=f"stage{i}_block{j}", **kw)(h, train)
    return h
