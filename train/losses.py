"""Image losses and similarity measures shared by training and evaluation (NHWC, values in [0, 1]).

SSIM follows Wang et al. 2004 as TensorFlow and DeepFaceLab compute it: a normalised Gaussian
window (sigma 1.5) applied per channel with VALID padding, k1 = 0.01, k2 = 0.03, the map averaged
over space and channels. DSSIM = (1 - SSIM) / 2, DeepFaceLab's structural loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of `size` taps centred on the middle one."""
    if size < 1:
        raise ValueError(f"filter size {size} must be >= 1")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _separable_filter(x: jax.Array, kernel: np.ndarray) -> jax.Array:
    """VALID 2-D filtering of each channel of [B, H, W, C] with the outer product of a 1-D kernel.

    Written as weighted sums of shifted slices, not as a depthwise convolution: XLA:CPU runs a
    depthwise convolution at 0.1-0.2 GFLOP/s (the SSIM filters were 40% of a DF-64 step's
    convolution time), while a few shifted slices fuse into one element-wise loop, forward and
    backward, on every backend.
    """

    def along(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis] - len(kernel) + 1
        return sum(float(w) * jax.lax.slice_in_dim(x, i, i + n, axis=axis) for i, w in enumerate(kernel))

    return along(along(x, 1), 2)


def ssim(
    x: jax.Array, y: jax.Array, *, filter_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
    max_val: float = 1.0,
) -> jax.Array:
    """Per-example SSIM [B] of two [B, H, W, C] batches, averaged over the VALID map and channels."""
    return jnp.mean(ssim_map(x, y, filter_size=filter_size, sigma=sigma, k1=k1, k2=k2, max_val=max_val), axis=(1, 2, 3))


def ssim_map(
    x: jax.Array, y: jax.Array, *, filter_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
    max_val: float = 1.0,
) -> jax.Array:
    """The local SSIM [B, H-f+1, W-f+1, C] of each window position (VALID) and channel."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [B, H, W, C] batches of one shape, got {x.shape} and {y.shape}")
    if filter_size > min(x.shape[1:3]):
        raise ValueError(f"filter_size {filter_size} exceeds the image size {x.shape[1:3]}; use a smaller window")
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    kernel = gaussian_kernel(filter_size, sigma)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    mu_x, mu_y, xx, yy, xy = jnp.split(_separable_filter(stacked, kernel), 5, axis=-1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance * structure


def masked_ssim(x: jax.Array, y: jax.Array, weights: jax.Array, *, filter_size: int = 11) -> jax.Array:
    """Per-example SSIM [B] averaged over window centres weighted by `weights` [B, H, W, 1] (e.g. a face mask)."""
    r = (filter_size - 1) // 2
    centre = weights[:, r:weights.shape[1] - (filter_size - 1 - r), r:weights.shape[2] - (filter_size - 1 - r)]
    local = jnp.mean(ssim_map(x, y, filter_size=filter_size), axis=-1, keepdims=True)
    return jnp.sum(local * centre, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(centre, axis=(1, 2, 3)), 1e-6)


def masked_psnr(x: jax.Array, y: jax.Array, weights: jax.Array, max_val: float = 1.0) -> jax.Array:
    """Per-example PSNR [B] of the pixels inside `weights` [B, H, W, 1], each weighted by it."""
    se = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=-1, keepdims=True)
    mse = jnp.sum(se * weights, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(weights, axis=(1, 2, 3)), 1e-6)
    return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse, 1e-10))


def dssim(x: jax.Array, y: jax.Array, *, filter_size: int = 11, sigma: float = 1.5) -> jax.Array:
    """Per-example structural dissimilarity (1 - SSIM) / 2 in [0, 1]: DeepFaceLab's main face loss."""
    return (1.0 - ssim(x, y, filter_size=filter_size, sigma=sigma)) / 2.0


def psnr(x: jax.Array, y: jax.Array, max_val: float = 1.0) -> jax.Array:
    """Per-example peak signal-to-noise ratio [B] in dB."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse, 1e-10))


def blur(x: jax.Array, radius: int) -> jax.Array:
    """Gaussian blur of [B, H, W, C] with a (2*radius+1)-tap window, sigma = radius / 2, edges replicated."""
    if radius < 1:
        return x
    size = 2 * radius + 1
    padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    return _separable_filter(padded, gaussian_kernel(size, radius / 2.0))


def soften_mask(mask: jax.Array, resolution: int) -> jax.Array:
    """DeepFaceLab's training mask: blurred with radius max(1, res // 32), clipped to [0, 0.5], doubled.

    The result is 1 well inside the face and falls smoothly to 0 across its border, so the masked
    loss still sees a thin band of background and the seam is learned, not cut.
    """
    return jnp.clip(blur(mask, max(1, resolution // 32)), 0.0, 0.5) * 2.0
