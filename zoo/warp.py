"""Sampling and warps for reenactment: PyTorch's `grid_sample` in JAX, coordinate grids, keypoint Gaussians, thin-plate splines.

The motion models (FOMM, Siarohin et al. 2019; TPSMM, Zhao & Zhang 2022; `zoo.reenact`) move
pixels by sampling an image at coordinates a network predicts. This module holds that
arithmetic, with no parameters, written from the papers and PyTorch's documentation:

- Coordinates are normalised pairs (x, y) in [-1, 1], x across the width and y down the height,
  last axis of size 2, as PyTorch's `grid_sample` takes them. `make_coordinate_grid(h, w)` puts
  -1 and 1 on the centres of the corner pixels (FOMM's grid), so it is the identity grid of
  `grid_sample(..., align_corners=True)`; the reenactment models sample with align_corners=True
  throughout (TPSMM passes it explicitly; FOMM was written for PyTorch 1.0, whose only behaviour
  that was).
- Images and maps are NHWC; `kp2gaussian` returns its K maps channels-last, [B, h, w, K].
- `grid_sample` is bilinear only (the mode both models use).
- `tps_solve` / `tps_warp`: TPSMM's closed-form thin-plate spline (kernel U(r^2) = r^2 log r^2,
  system regularised by +0.01 I); `random_tps*`: FOMM's random transform for the equivariance
  loss, with Jacobians by `jax.jacfwd`.
- `antialias_downsample`: FOMM's Gaussian blur then stride (its `AntiAliasInterpolation2d`).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zoo.errors import ConfigError, DataError

Array = jax.Array

__all__ = ["PADDINGS", "TPS", "RandomTPS", "affine_warp", "antialias_downsample", "gaussian_taps", "grid_sample",
           "kp2gaussian", "make_coordinate_grid", "random_tps", "random_tps_frame", "random_tps_jacobian",
           "random_tps_warp", "resize_bilinear", "tps_identity", "tps_kernel", "tps_solve", "tps_warp"]

PADDINGS = ("zeros", "border", "reflection")
_TPS_EPS = 1e-9  # TPSMM's guard in r^2 log(r^2 + eps): U(0) = 0
_RANDOM_TPS_EPS = 1e-6  # FOMM's guard in its random transform's log(r + eps)


def make_coordinate_grid(h: int, w: int, dtype: jnp.dtype = jnp.float32) -> Array:
    """[h, w, 2] (x, y) coordinates of pixel centres, from -1 (first row/column) to 1 (last): FOMM's grid.

    It is the identity grid of `grid_sample(..., align_corners=True)` and the grid on which
    keypoints are expected coordinates. Each side needs at least 2 pixels (the ends are -1 and 1).
    """
    if min(h, w) < 2:
        raise ConfigError(f"make_coordinate_grid needs at least 2x2 pixels, got {h}x{w}: a map this small has no "
                          "-1 and 1 ends; use a larger image or fewer down-sampling blocks")
    x = jnp.linspace(-1.0, 1.0, w, dtype=dtype)
    y = jnp.linspace(-1.0, 1.0, h, dtype=dtype)
    return jnp.stack(jnp.meshgrid(x, y, indexing="xy"), axis=-1)


def _pixel_coordinate(coord: Array, size: int, align_corners: bool) -> Array:
    """Normalised coordinate -> pixel index units (0 = centre of the first pixel), as PyTorch unnormalises."""
    if align_corners:
        return (coord + 1.0) * 0.5 * (size - 1)
    return ((coord + 1.0) * size - 1.0) * 0.5


def _reflect(coord: Array, twice_low: int, twice_high: int) -> Array:
    """Reflect into [twice_low / 2, twice_high / 2] as often as needed (PyTorch's reflect_coordinates)."""
    if twice_low == twice_high:
        return jnp.zeros_like(coord)
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    c = jnp.abs(coord - low)
    extra = jnp.fmod(c, span)
    flips = jnp.floor(c / span)
    return jnp.where(jnp.fmod(flips, 2) == 0, extra + low, span - extra + low)


def _source_coordinate(coord: Array, size: int, padding: str, align_corners: bool) -> Array:
    """Pixel coordinate to interpolate at, after the padding mode's clip or reflection."""
    c = _pixel_coordinate(coord, size, align_corners)
    if padding == "border":
        return jnp.clip(c, 0, size - 1)
    if padding == "reflection":
        c = _reflect(c, 0, 2 * (size - 1)) if align_corners else _reflect(c, -1, 2 * size - 1)
        return jnp.clip(c, 0, size - 1)
    return c


def grid_sample(image: Array, grid: Array, padding: str = "zeros", *, align_corners: bool) -> Array:
    """Bilinear samples of image [B, H, W, C] at grid [B, h, w, 2] -> [B, h, w, C]: PyTorch's `F.grid_sample`.

    grid holds normalised (x, y) in [-1, 1] (x indexes the width W). Where they land, as PyTorch
    documents, with pixel index i in 0 .. W-1 and its centre at i:
    - align_corners=True: -1 and 1 are the centres of the corner pixels (pixel 0 and pixel W-1);
      x -> (x + 1) / 2 * (W - 1).
    - align_corners=False: -1 and 1 are the outer edges of the corner pixels (centre of pixel 0
      minus half a pixel, centre of W-1 plus half); x -> ((x + 1) * W - 1) / 2, so the centre of
      pixel i is x = (2 i + 1) / W - 1.
    Outside the image, `padding`:
    - "zeros": each of the four neighbours outside the image contributes 0 (so values fade to 0
      over the last half pixel beyond a border centre);
    - "border": the coordinate is clipped to [0, W-1], i.e. the edge pixels extend outwards;
    - "reflection": the coordinate is reflected about the borders (about the corner pixels'
      centres when align_corners, else about their outer edges, at -0.5 and W-0.5) until it is
      inside, then clipped to [0, W-1].
    The output has image's dtype; the coordinates are computed in float32. The grid's spatial
    layout is free (h*w points), so K warps of one image are one call with grid [B, K*h, w, 2].
    """
    if padding not in PADDINGS:
        raise ConfigError(f"grid_sample padding {padding!r} is not one of {', '.join(PADDINGS)}")
    if image.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != image.shape[0]:
        raise DataError(f"grid_sample takes image [B, H, W, C] and grid [B, h, w, 2] with one B, got {image.shape} "
                        f"and {grid.shape}")
    b, h_in, w_in, c = image.shape
    grid = grid.astype(jnp.float32)
    x = _source_coordinate(grid[..., 0], w_in, padding, align_corners)
    y = _source_coordinate(grid[..., 1], h_in, padding, align_corners)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    wx1, wy1 = x - x0, y - y0
    flat = image.reshape(b, h_in * w_in, c)
    out = jnp.zeros((*grid.shape[:3], c), jnp.float32)
    for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
        for dx, wx in ((0, 1.0 - wx1), (1, wx1)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi <= w_in - 1) & (yi >= 0) & (yi <= h_in - 1)
            index = (jnp.clip(yi, 0, h_in - 1) * w_in + jnp.clip(xi, 0, w_in - 1)).astype(jnp.int32)
            values = jnp.take_along_axis(flat, index.reshape(b, -1, 1), axis=1).reshape(out.shape)
            out = out + jnp.where(inside, wx * wy, 0.0)[..., None] * values.astype(jnp.float32)
    return out.astype(image.dtype)


def resize_bilinear(x: Array, size: Sequence[int], *, align_corners: bool) -> Array:
    """[B, H, W, C] -> [B, h, w, C] bilinear, as PyTorch's `F.interpolate(mode="bilinear", align_corners=...)`.

    No anti-aliasing (use `antialias_downsample` to shrink images). The same size returns x.
    """
    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(x.shape[1:3]):
        return x
    if align_corners:
        grid = make_coordinate_grid(h, w)
    else:
        gx = (2.0 * jnp.arange(w) + 1.0) / w - 1.0
        gy = (2.0 * jnp.arange(h) + 1.0) / h - 1.0
        grid = jnp.stack(jnp.meshgrid(gx, gy, indexing="xy"), axis=-1)
    grid = jnp.broadcast_to(grid, (x.shape[0], h, w, 2))
    return grid_sample(x, grid, "border", align_corners=align_corners)


def kp2gaussian(kp: Array, shape: Sequence[int], variance: float) -> Array:
    """kp [B, K, 2] -> [B, h, w, K] maps exp(-|z - kp|^2 / (2 variance)) on `make_coordinate_grid(h, w)` (FOMM)."""
    grid = make_coordinate_grid(int(shape[0]), int(shape[1]))
    diff = grid[None, :, :, None, :] - kp.astype(jnp.float32)[:, None, None, :, :]
    return jnp.exp(-0.5 * jnp.sum(diff**2, axis=-1) / variance)


def gaussian_taps(scale: float) -> tuple[np.ndarray, int]:
    """FOMM's anti-aliasing kernel for `scale`: normalised 1-D Gaussian taps and the stride 1/scale.

    sigma = (1/scale - 1) / 2 and 2 round(4 sigma) + 1 taps (13 at 0.25), centred.
    """
    stride = _inverse_scale(scale)
    sigma = (stride - 1) / 2
    size = 2 * round(sigma * 4) + 1
    mean = (size - 1) / 2
    taps = np.exp(-((np.arange(size) - mean) ** 2) / (2 * sigma**2))
    return taps / taps.sum(), stride


def _inverse_scale(scale: float) -> int:
    """1/scale as an int, or a ConfigError (FOMM strides by int(1/scale); other scales would be silently wrong)."""
    if not 0 < scale < 1:
        raise ConfigError(f"down-sampling scale {scale} must be in (0, 1); 1 means no down-sampling")
    stride = round(1 / scale)
    if abs(stride * scale - 1) > 1e-6:
        raise ConfigError(f"down-sampling scale {scale} must be 1/n for an integer n (0.5, 0.25, 0.125, ...)")
    return stride


def _downsample_matrix(n: int, taps: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """[ceil(n / stride), n] matrix: blur with `taps` (zero or circular padding) then keep every stride-th sample."""
    half = (len(taps) - 1) // 2
    rows = -(-n // stride)
    m = np.zeros((rows, n), np.float64)
    for o in range(rows):
        for t, tap in enumerate(taps):
            i = o * stride - half + t
            if padding == "circular":
                m[o, i % n] += tap
            elif 0 <= i < n:
                m[o, i] += tap
    return m


def antialias_downsample(image: Array, scale: float, padding: str = "zeros") -> Array:
    """[B, H, W, C] -> [B, ceil(H scale), ceil(W scale), C]: Gaussian blur then every (1/scale)-th pixel (FOMM).

    FOMM's `AntiAliasInterpolation2d`: the blur pads with zeros (`padding="circular"` wraps
    around instead, for tests of translation equivariance) and the first kept pixel is pixel 0.
    Computed as two small matrix products (blur and stride in one), which keeps its gradient
    plain. scale 1 returns the image.
    """
    if scale == 1:
        return image
    if padding not in ("zeros", "circular"):
        raise ConfigError(f"antialias_downsample padding {padding!r} must be 'zeros' or 'circular'")
    taps, stride = gaussian_taps(scale)
    mh = jnp.asarray(_downsample_matrix(image.shape[1], taps, stride, padding), jnp.float32)
    mw = jnp.asarray(_downsample_matrix(image.shape[2], taps, stride, padding), jnp.float32)
    out = jnp.einsum("oh,bhwc,pw->bopc", mh, image.astype(jnp.float32), mw, precision=jax.lax.Precision.HIGHEST)
    return out.astype(image.dtype)


def affine_warp(points: Array, matrix: Array) -> Array:
    """points [B, ..., 2] mapped by per-sample affine matrices [B, 2, 3] or homogeneous [B, 3, 3] (last row 0 0 1)."""
    m = matrix[:, :2, :].astype(jnp.float32)
    flat = points.reshape(points.shape[0], -1, 2).astype(jnp.float32)
    out = jnp.einsum("bij,bnj->bni", m[:, :, :2], flat) + m[:, None, :, 2]
    return out.reshape(points.shape)


# ---------------------------------------------------------------------------------------------------
# Thin-plate splines (TPSMM's closed form).


class TPS(NamedTuple):
    """A thin-plate spline f(z) = [z, 1] @ affine + sum_i U(|z - control_i|^2) weights_i, batched over leading axes.

    control [..., N, 2], weights [..., N, 2], affine [..., 3, 2] (rows multiply x, y and 1).
    """

    control: Array
    weights: Array
    affine: Array


def tps_kernel(r2: Array) -> Array:
    """U(r^2) = r^2 log(r^2) with U(0) = 0 (TPSMM's r^2 log(r^2 + 1e-9)): the TPS radial basis in squared distances."""
    return r2 * jnp.log(r2 + _TPS_EPS)


def _squared_distances(a: Array, b: Array) -> Array:
    """|a_i - b_j|^2 for a [..., P, 2], b [..., N, 2] -> [..., P, N] (leading axes broadcast)."""
    return jnp.sum((a[..., :, None, :] - b[..., None, :, :]) ** 2, axis=-1)


def tps_solve(control: Array, targets: Array, regularization: float = 0.01) -> TPS:
    """The TPS taking control [..., N, 2] to targets [..., N, 2]: solve [[K, P], [P^T, 0]] + reg I against [targets; 0].

    K_ij = U(|c_i - c_j|^2), P = [c, 1]. TPSMM adds 0.01 I to the whole (N+3)-square system, the
    affine block's zeros included; that makes the solve well posed for any control points, at the
    price that the spline only nearly interpolates: f(c_i) = targets_i - reg weights_i, and the
    affine part shrinks (control == targets gives not quite the identity; `tps_identity` is it).
    `regularization=0` gives the exact interpolating spline (needs 3 non-collinear points).
    In TPSMM, control are the driving frame's keypoints and targets the source frame's, so the
    spline maps driving coordinates to the source coordinates to sample.
    """
    if control.shape != targets.shape or control.shape[-1] != 2:
        raise DataError(f"tps_solve takes control and targets of one shape [..., N, 2], got {control.shape} and "
                        f"{targets.shape}")
    control = control.astype(jnp.float32)
    n = control.shape[-2]
    lead = control.shape[:-2]
    kernel = tps_kernel(_squared_distances(control, control))
    p = jnp.concatenate([control, jnp.ones((*lead, n, 1), jnp.float32)], axis=-1)
    top = jnp.concatenate([kernel, p], axis=-1)
    bottom = jnp.concatenate([jnp.swapaxes(p, -1, -2), jnp.zeros((*lead, 3, 3), jnp.float32)], axis=-1)
    system = jnp.concatenate([top, bottom], axis=-2) + regularization * jnp.eye(n + 3, dtype=jnp.float32)
    rhs = jnp.concatenate([targets.astype(jnp.float32), jnp.zeros((*lead, 3, 2), jnp.float32)], axis=-2)
    solution = jnp.linalg.solve(system, rhs)
    return TPS(control, solution[..., :n, :], solution[..., n:, :])


def tps_identity(control: Array) -> TPS:
    """The identity spline on control points [..., N, 2]: no kernel weights, affine part [[1, 0], [0, 1], [0, 0]]."""
    lead = control.shape[:-2]
    affine = jnp.broadcast_to(jnp.eye(3, 2, dtype=jnp.float32), (*lead, 3, 2))
    return TPS(control.astype(jnp.float32), jnp.zeros(control.shape, jnp.float32), affine)


def tps_warp(points: Array, params: TPS) -> Array:
    """Map points [..., P, 2] by the spline(s) `params` -> [..., P, 2], leading axes broadcast (e.g. [P, 2] to [B, K, P, 2])."""
    points = points.astype(jnp.float32)
    homogeneous = jnp.concatenate([points, jnp.ones((*points.shape[:-1], 1), jnp.float32)], axis=-1)
    radial = tps_kernel(_squared_distances(points, params.control))
    return homogeneous @ params.affine + radial @ params.weights


# ---------------------------------------------------------------------------------------------------
# FOMM's random transform for the equivariance loss.


class RandomTPS(NamedTuple):
    """A random warp: affine theta [B, 2, 3] plus a radial term on control points [P, 2] with weights [B, P]."""

    theta: Array
    control_points: Array
    control_params: Array


def random_tps(key: Array, batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005,
               points: int = 5) -> RandomTPS:
    """FOMM's random transform: theta = [I | 0] + N(0, sigma_affine), radial weights N(0, sigma_tps) on a points^2 grid."""
    k_affine, k_tps = jax.random.split(key)
    theta = jnp.eye(2, 3, dtype=jnp.float32) + sigma_affine * jax.random.normal(k_affine, (batch, 2, 3))
    control = make_coordinate_grid(points, points).reshape(-1, 2)
    params = sigma_tps * jax.random.normal(k_tps, (batch, points * points))
    return RandomTPS(theta, control, params)


def random_tps_warp(t: RandomTPS, coords: Array) -> Array:
    """coords [B, N, 2] -> [B, N, 2] under FOMM's random transform.

    As FOMM's `Transform.warp_coordinates`: affine part theta [z; 1], plus one scalar
    sum_p w_p d_p^2 log(d_p + 1e-6) added to both x and y, where d_p is the L1 distance
    |dx| + |dy| to control point p. (Not a true TPS; it is the published augmentation, kept.)
    """
    coords = coords.astype(jnp.float32)
    out = jnp.einsum("bij,bnj->bni", t.theta[:, :, :2], coords) + t.theta[:, None, :, 2]
    d = jnp.sum(jnp.abs(coords[:, :, None, :] - t.control_points[None, None, :, :]), axis=-1)
    radial = jnp.sum(d**2 * jnp.log(d + _RANDOM_TPS_EPS) * t.control_params[:, None, :], axis=-1)
    return out + radial[..., None]


def random_tps_jacobian(t: RandomTPS, coords: Array) -> Array:
    """d warp / d z at coords [B, N, 2] -> [B, N, 2, 2] (row i: output coordinate i), by `jax.jacfwd` per point."""

    def one(theta: Array, params: Array, z: Array) -> Array:
        single = RandomTPS(theta[None], t.control_points, params[None])
        return jax.jacfwd(lambda p: random_tps_warp(single, p[None, None])[0, 0])(z)

    per_sample = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per_sample)(t.theta, t.control_params, coords.astype(jnp.float32))


def random_tps_frame(t: RandomTPS, frame: Array) -> Array:
    """frame [B, H, W, C] resampled at the warped identity grid, reflection padding (FOMM's `transform_frame`)."""
    b, h, w, _ = frame.shape
    grid = jnp.broadcast_to(make_coordinate_grid(h, w).reshape(1, h * w, 2), (b, h * w, 2))
    warped = random_tps_warp(t, grid).reshape(b, h, w, 2)
    return grid_sample(frame, warped, "reflection", align_corners=True)
