"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020).

Pure, jit-able, differentiable augmentations for NHWC images in [-1, 1]; a GAN applies the same
policy to real and fake images inside its compiled D and G steps so D never sees un-augmented data
and G's gradients flow back through the augmentation. Behaviour follows the official
DiffAugment-pytorch (mit-han-lab/data-efficient-gans, BSD-2), reimplemented:

- color: brightness x + U(-0.5, 0.5); saturation (x - mean_C) * U(0, 2) + mean_C;
  contrast (x - mean_CHW) * U(0.5, 1.5) + mean_CHW.
- translation: integer shifts dy in [-s_h, s_h], dx in [-s_w, s_w] (both ends included),
  s = int(size * 1/8 + 0.5); out[i, j] = x[i + dy, j + dx], zero where that falls outside.
- cutout: a (c_h, c_w) rectangle, c = int(size * 1/2 + 0.5), rows [o_h - c_h // 2, o_h - c_h // 2 + c_h)
  with o_h drawn from [0, H - c_h % 2] (likewise columns), clipped to the image and set to zero.

Randomness: each op gets its own key (`op_keys`), and example i uses `fold_in(op_key, i)`, so an
example's augmentation depends only on (key, op, i), not on the batch size or the other ops in the
policy. Ops always run once each, in the paper's order color -> translation -> cutout, whatever order
(or repetition) the policy lists them in.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from einops import rearrange

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(spec: str) -> tuple[str, ...]:
    """Comma-separated op names -> validated tuple ("" = no augmentation), so bad configs fail early."""
    ops = tuple(op.strip() for op in spec.split(",") if op.strip())
    for op in ops:
        if op not in POLICIES:
            raise ValueError(f"unknown DiffAugment op {op!r}; valid ops are {', '.join(POLICIES)}")
    return ops


def op_keys(key: jax.Array) -> dict[str, jax.Array]:
    """One independent key per op, so adding or dropping an op leaves the others' draws unchanged."""
    return dict(zip(POLICIES, jax.random.split(key, len(POLICIES))))


def _example_keys(key: jax.Array, n: int) -> jax.Array:
    """Key for example i = fold_in(key, i): independent of the batch size."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


def _per_example(x: jax.Array, v: jax.Array) -> jax.Array:
    """A per-example scalar [N] as [N, 1, 1, 1] in x's dtype, to broadcast over an NHWC batch."""
    return rearrange(v.astype(x.dtype), "n -> n 1 1 1")


def shift_range(size: int, ratio: float = TRANSLATION_RATIO) -> int:
    """Largest translation in pixels along an axis of `size`, as the official code rounds it."""
    return int(size * ratio + 0.5)


def cutout_size(size: int, ratio: float = CUTOUT_RATIO) -> int:
    """Cutout side in pixels along an axis of `size`, as the official code rounds it."""
    return int(size * ratio + 0.5)


def sample_color(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example (brightness offset in [-0.5, 0.5), saturation gain in [0, 2), contrast gain in [0.5, 1.5))."""
    def one(k: jax.Array) -> jax.Array:
        return jax.random.uniform(k, (3,))
    u = jax.vmap(one)(_example_keys(key, n))
    return u[:, 0] - 0.5, u[:, 1] * 2.0, u[:, 2] + 0.5


def sample_translation(key: jax.Array, n: int, height: int, width: int,
                       ratio: float = TRANSLATION_RATIO) -> tuple[jax.Array, jax.Array]:
    """Per-example integer shifts (dy, dx), uniform on [-s, s] with both ends included."""
    lim = jnp.array([shift_range(height, ratio), shift_range(width, ratio)])

    def one(k: jax.Array) -> jax.Array:
        return jax.random.randint(k, (2,), -lim, lim + 1)
    d = jax.vmap(one)(_example_keys(key, n))
    return d[:, 0], d[:, 1]


def sample_cutout(key: jax.Array, n: int, height: int, width: int,
                  ratio: float = CUTOUT_RATIO) -> tuple[jax.Array, jax.Array]:
    """Per-example top-left corner (top, left) of the cutout; it may start above/left of the image."""
    size = jnp.array([cutout_size(height, ratio), cutout_size(width, ratio)])
    hi = jnp.array([height, width]) + 1 - size % 2

    def one(k: jax.Array) -> jax.Array:
        return jax.random.randint(k, (2,), 0, hi) - size // 2
    o = jax.vmap(one)(_example_keys(key, n))
    return o[:, 0], o[:, 1]


def color(x: jax.Array, key: jax.Array) -> jax.Array:
    """Random brightness, then saturation, then contrast, each a per-example affine map of x."""
    b, s, c = (_per_example(x, v) for v in sample_color(key, x.shape[0]))
    x = x + b
    m = jnp.mean(x, axis=3, keepdims=True)
    x = (x - m) * s + m
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * c + m


def translation(x: jax.Array, key: jax.Array, ratio: float = TRANSLATION_RATIO) -> jax.Array:
    """Per-example integer shift with zero fill: out[i, j] = x[i + dy, j + dx] (a gather, so jit/grad work)."""
    n, h, w, _ = x.shape
    dy, dx = sample_translation(key, n, h, w, ratio)
    sh, sw = shift_range(h, ratio), shift_range(w, ratio)
    padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    def one(img: jax.Array, oy: jax.Array, ox: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (sh + oy, sw + ox, 0), (h, w, img.shape[-1]))
    return jax.vmap(one)(padded, dy, dx)


def cutout(x: jax.Array, key: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """Zero a per-example rectangle (a multiplicative mask, so its gradient is zero there and one elsewhere)."""
    n, h, w, _ = x.shape
    top, left = sample_cutout(key, n, h, w, ratio)
    rows, cols = jnp.arange(h), jnp.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + cutout_size(h, ratio))
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + cutout_size(w, ratio))
    hole = rearrange(in_rows, "n h -> n h 1 1") & rearrange(in_cols, "n w -> n 1 w 1")
    return x * (~hole).astype(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: jax.Array, key: jax.Array, policy: Sequence[str]) -> jax.Array:
    """Apply the policy's ops to an NHWC batch in the paper's order; differentiable in x, jit-able (policy static)."""
    ops = parse_policy(",".join(policy))
    keys = op_keys(key)
    for op in POLICIES:
        if op in ops:
            x = _OPS[op](x, keys[op])
    return x
