"""FIR resampling of NHWC images: upsample by zero insertion, pad, filter, downsample (`upfirdn2d`).

StyleGAN2 resamples every feature map and image this way with the separable [1, 3, 3, 1] binomial
filter, so up- and downsampling are low-pass and alias less than nearest or strided sampling.
One function covers both directions, as in the paper's code (whose `upfirdn2d` this follows in
behaviour: zero insertion leaves up - 1 zeros after every sample, the last one included, then the
pads are added (a negative pad crops), the filter is applied as a true convolution (flipped), and
every `down`-th sample is kept). Along one axis that is `scipy.signal.upfirdn(f, x, up, down)` with
pads (len(f) - 1, len(f) - up); the tests check it is.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

__all__ = ["BINOMIAL_4", "downsample2d", "fir_filter", "upfirdn2d", "upsample2d"]

BINOMIAL_4 = (1.0, 3.0, 3.0, 1.0)


def fir_filter(taps: Sequence[float] = BINOMIAL_4) -> np.ndarray:
    """The 2-D separable filter outer(taps, taps) normalised to unit sum (unit DC gain)."""
    f = np.asarray(taps, np.float32)
    if f.ndim != 1 or f.size < 1:
        raise ValueError(f"FIR taps must be a non-empty 1-D sequence, got shape {f.shape}")
    f2 = np.outer(f, f)
    return f2 / f2.sum()


def upfirdn2d(x: Array, f: np.ndarray, *, up: int = 1, down: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> Array:
    """Upsample [B, H, W, C] by `up`, pad (x0, x1, y0, y1), convolve with 2-D `f` times `gain`, keep every `down`-th.

    Output side: (H * up + y0 + y1 - fh) // down + 1 (likewise W). Each channel is filtered on
    its own (a depthwise convolution); the filter is a constant, so gradients flow to `x` only.
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    x0, x1, y0, y1 = pad
    channels = x.shape[-1]
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (y0, y1 + up - 1, up - 1), (x0, x1 + up - 1, up - 1),
                                             (0, 0, 0)])
    kernel = jnp.asarray(np.flip(f, (0, 1)) * gain, x.dtype)
    kernel = jnp.broadcast_to(kernel[:, :, None, None], kernel.shape + (1, channels))
    return lax.conv_general_dilated(x, kernel, (down, down), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=channels)


def upsample2d(x: Array, f: np.ndarray, up: int = 2) -> Array:
    """[B, H, W, C] -> [B, H*up, W*up, C], filtered by `f` with gain up^2 (keeps the mean), centred."""
    fw = f.shape[0]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: Array, f: np.ndarray, down: int = 2) -> Array:
    """[B, H, W, C] -> [B, H/down, W/down, C], low-passed by `f` before decimation, centred."""
    fw = f.shape[0]
    p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
    return upfirdn2d(x, f, down=down, pad=(p0, p1, p0, p1))
