"""Per-example augmentation for face-swap training: flips, DeepFaceLab-style random warp, colour transfer.

Everything is pure numpy on one HxWxC image (uint8, or float in [0, 1]) and returns the input's dtype
and range, so it runs in grain workers without touching an accelerator. Randomness only comes from an
explicit `np.random.Generator`, so a pipeline that seeds it per example (grain RandomMap) reproduces
every augmentation exactly.

Behaviour follows the published descriptions of DeepFaceLab and faceswap (both GPL-3.0; no code was
copied, see docs/references/faceswap-and-deepfacelab.md):

* random warp: a coarse `grid x grid` lattice over the image whose interior nodes move by
  N(0, (WARP_JITTER * cell * strength)^2) pixels per axis (DFL uses 0.24 cells), smoothly interpolated
  (natural cubic spline, separable) to a dense field; the network input is warped, the target is not,
  and both get the same random similarity transform (rotation, scale, shift);
* colour transfer: `rct` (Reinhard et al. 2001 in CIE L*a*b*, D65), `lct` (linear, full covariance, in
  RGB) and `sot` (sliced optimal transport, Pitie et al.), each with optional face masks that restrict
  the statistics.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import grain
import numpy as np

from data import base

__all__ = [
    "MASK_FIELDS",
    "WARP_JITTER",
    "WarpParams",
    "apply_warp",
    "augment_pair",
    "color_transfer",
    "displacement_field",
    "expected_node_displacement",
    "from_unit_float",
    "lab_to_srgb",
    "lct",
    "random_flip",
    "random_warp",
    "rct",
    "sot",
    "srgb_to_lab",
    "to_unit_float",
    "warp_params",
]

WARP_JITTER = 0.24
"""Std of each interior warp node's offset per axis, in grid cells, at strength 1 (DeepFaceLab's value)."""

ColorMode = Literal["none", "rct", "lct", "sot"]

MASK_FIELDS = base.MASK_FIELDS
"""Example fields SwapAugment treats as single-channel masks that follow the target image."""


def _check_image(image: np.ndarray, name: str = "image") -> None:
    """Reject anything but an HxWxC uint8 or [0, 1] float array, because every function assumes that layout."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise ValueError(f"{name} must be HxWxC (3 dims), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"{name} has an empty dimension: shape {image.shape}")
    if image.dtype == np.uint8:
        return
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")
    lo, hi = float(image.min()), float(image.max())
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):
        raise ValueError(f"{name} is float but not in [0, 1] (min {lo:.4g}, max {hi:.4g}); scale it to [0, 1]")


def _check_rng(rng: np.random.Generator) -> None:
    """Refuse legacy or missing generators, because reproducibility depends on an explicit Generator."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def to_unit_float(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """The image as float in [0, 1], so colour maths never depends on the storage dtype."""
    if image.dtype == np.uint8:
        return image.astype(dtype) / dtype(255.0)
    return image.astype(dtype, copy=False)


def from_unit_float(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`x` (float, [0, 1]) clipped and cast back to `like`'s dtype, so functions return what they were given."""
    x = np.clip(x, 0.0, 1.0)
    if like.dtype == np.uint8:
        return np.rint(x * 255.0).astype(np.uint8)
    return x.astype(like.dtype, copy=False)


# ----------------------------------------------------------------------------------------------- flip


def random_flip(image: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability `p`, the cheapest pose augmentation (faces are near-symmetric).

    Always draws one uniform from `rng` so later draws do not depend on `p`; returns `image` itself when
    not flipped.
    """
    _check_image(image)
    _check_rng(rng)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability p={p} is not in [0, 1]")
    if rng.random() < p:
        return np.ascontiguousarray(image[:, ::-1])
    return image


# ----------------------------------------------------------------------------------------------- warp


@dataclass(frozen=True)
class WarpParams:
    """One draw of random-warp parameters, so the same warp can be reapplied, inspected or tested."""

    size: tuple[int, int]
    offsets: np.ndarray
    """(grid, grid, 2) node displacements in pixels, (dy, dx); border nodes are zero."""
    angle: float
    """Rotation of the image content, degrees."""
    zoom: float
    """Scale factor of the image content (1 + U(-scale, scale))."""
    shift: tuple[float, float]
    """Translation of the image content in pixels, (dy, dx)."""


def expected_node_displacement(size: int, *, grid: int = 5, strength: float = 1.0) -> float:
    """E|offset| per axis of an interior node, in pixels, so callers and tests can check warp magnitude.

    Offsets are N(0, s^2) with s = WARP_JITTER * strength * (size - 1) / (grid - 1), so E|offset| = s * sqrt(2/pi).
    """
    return WARP_JITTER * strength * (size - 1) / (grid - 1) * float(np.sqrt(2.0 / np.pi))


def warp_params(
    rng: np.random.Generator,
    size: int | tuple[int, int],
    *,
    strength: float = 1.0,
    grid: int = 5,
    rotation: float = 10.0,
    scale: float = 0.05,
    shift: float = 0.05,
) -> WarpParams:
    """Draw a random warp for an image of `size` (int or (H, W)), separate from applying it so it is testable.

    Always consumes the same number of draws from `rng` whatever the strengths, so a zero setting does
    not shift the random stream of later augmentations.
    """
    _check_rng(rng)
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"warp size must be positive, got {(h, w)}")
    if grid < 2:
        raise ValueError(f"warp grid={grid} must be at least 2 control points per side")
    for name, value in (("strength", strength), ("rotation", rotation), ("scale", scale), ("shift", shift)):
        if not value >= 0:
            raise ValueError(f"warp {name}={value} must be non-negative")
    if scale >= 1:
        raise ValueError(f"warp scale={scale} must be < 1 (zoom is 1 +- scale)")
    cell = np.array([(h - 1) / (grid - 1), (w - 1) / (grid - 1)])
    offsets = rng.standard_normal((grid, grid, 2)) * (WARP_JITTER * strength * cell)
    offsets[[0, -1], :, :] = 0.0
    offsets[:, [0, -1], :] = 0.0
    angle = float(rng.uniform(-1.0, 1.0) * rotation)
    zoom = float(1.0 + rng.uniform(-1.0, 1.0) * scale)
    dy, dx = rng.uniform(-1.0, 1.0, size=2) * shift * np.array([h, w])
    return WarpParams(size=(int(h), int(w)), offsets=offsets, angle=angle, zoom=zoom, shift=(float(dy), float(dx)))


@functools.lru_cache(maxsize=64)
def _spline_matrix(n_out: int, grid: int) -> np.ndarray:
    """(n_out, grid) weights of a natural cubic spline through `grid` uniform knots, so upsampling is one matmul."""
    if n_out == 1:
        weights = np.zeros((1, grid))
        weights[0, 0] = 1.0
        weights.setflags(write=False)
        return weights
    step = (n_out - 1) / (grid - 1)
    eye = np.eye(grid)
    second = np.zeros((grid, grid))
    if grid > 2:
        inner = grid - 2
        system = 4.0 * np.eye(inner) + np.eye(inner, k=1) + np.eye(inner, k=-1)
        rhs = (eye[:-2] - 2.0 * eye[1:-1] + eye[2:]) * (6.0 / step**2)
        second[1:-1] = np.linalg.solve(system, rhs)
    x = np.arange(n_out) / step
    seg = np.minimum(np.floor(x).astype(int), grid - 2)
    s = (x - seg)[:, None]
    t = 1.0 - s
    curve = step**2 / 6.0
    weights = t * eye[seg] + s * eye[seg + 1] + (t**3 - t) * curve * second[seg] + (s**3 - s) * curve * second[seg + 1]
    weights.setflags(write=False)
    return weights


def displacement_field(params: WarpParams) -> np.ndarray:
    """Dense (H, W, 2) float32 warp offsets (dy, dx) in pixels, the smooth field the input is sampled with."""
    h, w = params.size
    grid = params.offsets.shape[0]
    rows, cols = _spline_matrix(h, grid), _spline_matrix(w, grid)
    field = rows @ np.moveaxis(params.offsets, -1, 0) @ cols.T
    return np.moveaxis(field, 0, -1).astype(np.float32)


def _affine_coords(params: WarpParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source coordinates of each output pixel under the similarity transform, plus its linear part.

    Output pixel p samples the image at c + M (p - c - t), with c the centre, t the shift and
    M = R(-angle) / zoom; with all parameters zero this is exactly p.
    """
    h, w = params.size
    theta = np.deg2rad(params.angle)
    cos, sin = np.cos(theta) / params.zoom, np.sin(theta) / params.zoom
    linear = np.array([[cos, -sin], [sin, cos]], dtype=np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    py = np.arange(h, dtype=np.float32)[:, None] - np.float32(cy + params.shift[0])
    px = np.arange(w, dtype=np.float32)[None, :] - np.float32(cx + params.shift[1])
    qy = linear[0, 0] * py + linear[0, 1] * px + np.float32(cy)
    qx = linear[1, 0] * py + linear[1, 1] * px + np.float32(cx)
    return qy, qx, linear


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of float `image` at (y, x) with border replicate, like cv2.remap(BORDER_REPLICATE).

    In-place float32 arithmetic on few temporaries: allocation, not arithmetic, dominates at these sizes.
    """
    h, w, c = image.shape
    y = np.clip(y, 0, h - 1).astype(np.float32, copy=False)
    x = np.clip(x, 0, w - 1).astype(np.float32, copy=False)
    y0f, x0f = np.floor(y), np.floor(x)
    fy = np.subtract(y, y0f, out=y)[..., None]
    fx = np.subtract(x, x0f, out=x)[..., None]
    y0, x0 = y0f.astype(np.intp), x0f.astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    y0 *= w
    y1 *= w
    flat = image.reshape(h * w, c)
    top, top_right = flat.take(y0 + x0, axis=0), flat.take(y0 + x1, axis=0)
    bottom, bottom_right = flat.take(y1 + x0, axis=0), flat.take(y1 + x1, axis=0)
    top_right -= top
    top_right *= fx
    top += top_right
    bottom_right -= bottom
    bottom_right *= fx
    bottom += bottom_right
    bottom -= top
    bottom *= fy
    top += bottom
    return top


def _apply_warp(image: np.ndarray, params: WarpParams) -> tuple[np.ndarray, np.ndarray]:
    """apply_warp without input validation, so random_warp checks its image only once."""
    if image.shape[:2] != params.size:
        raise ValueError(f"image is {image.shape[:2]} but the warp parameters were drawn for size {params.size}")
    work = image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=False)
    qy, qx, linear = _affine_coords(params)
    target = _bilinear(work, qy, qx)
    field = displacement_field(params)
    iy = qy + linear[0, 0] * field[..., 0] + linear[0, 1] * field[..., 1]
    ix = qx + linear[1, 0] * field[..., 0] + linear[1, 1] * field[..., 1]
    warped = _bilinear(work, iy, ix)
    if image.dtype == np.uint8:
        return np.rint(warped).astype(np.uint8), np.rint(target).astype(np.uint8)
    return warped.astype(image.dtype, copy=False), target.astype(image.dtype, copy=False)


def apply_warp(image: np.ndarray, params: WarpParams) -> tuple[np.ndarray, np.ndarray]:
    """(warped_input, target) for `params`: both get the similarity transform, only the input the warp field.

    The warp field is applied in the output frame (input pixel p reads the image at A^-1(p + d(p))), which
    has the same distribution as DeepFaceLab's warp-then-affine but needs no resampling of the field.
    """
    _check_image(image)
    return _apply_warp(image, params)


def random_warp(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    strength: float = 1.0,
    grid: int = 5,
    rotation: float = 10.0,
    scale: float = 0.05,
    shift: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """(warped_input, target) as DeepFaceLab trains: the autoencoder must undo a random smooth warp.

    `strength` scales the node jitter, `rotation` is in degrees, `scale` and `shift` are fractions
    (zoom 1 +- scale, translation +- shift of the size). All zero returns the input unchanged.
    """
    _check_image(image)
    params = warp_params(
        rng, image.shape[:2], strength=strength, grid=grid, rotation=rotation, scale=scale, shift=shift
    )
    return _apply_warp(image, params)


# --------------------------------------------------------------------------------------- colour space

_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_SRGB = np.linalg.inv(_SRGB_TO_XYZ)
_WHITE_D65 = _SRGB_TO_XYZ.sum(axis=1)
_LAB_EPS = (6.0 / 29.0) ** 3
_LAB_SLOPE = 3.0 * (6.0 / 29.0) ** 2


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65, L in [0, 100]) of sRGB values in [0, 1] (any shape ending in 3), for perceptual stats.

    Uses the IEC 61966-2-1 sRGB curve and matrix; the white point is the matrix's own white, so
    (1, 1, 1) maps to exactly a = b = 0.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"srgb_to_lab needs 3 channels in the last axis, got shape {rgb.shape}")
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((np.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _SRGB_TO_XYZ.T) / _WHITE_D65
    f = np.where(xyz > _LAB_EPS, np.cbrt(xyz), xyz / _LAB_SLOPE + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (clipped; out-of-gamut colours saturate) of CIE L*a*b* (D65), the inverse of srgb_to_lab."""
    lab = np.asarray(lab, dtype=np.float64)
    if lab.shape[-1] != 3:
        raise ValueError(f"lab_to_srgb needs 3 channels in the last axis, got shape {lab.shape}")
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f**3, (f - 4.0 / 29.0) * _LAB_SLOPE) * _WHITE_D65
    linear = np.clip(xyz @ _XYZ_TO_SRGB.T, 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0.0, 1.0)


# ------------------------------------------------------------------------------------ colour transfer


def _colour_pixels(image: np.ndarray, name: str) -> np.ndarray:
    """(H*W, 3) float64 pixels in [0, 1] of an RGB image, refusing other channel counts by name."""
    _check_image(image, name)
    if image.shape[2] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels for colour transfer, got {image.shape[2]}")
    return to_unit_float(image, np.float64).reshape(-1, 3)


def _flat_mask(mask: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    """An HxW boolean mask of `image` flattened to (H*W,), refusing masks that select under 2 pixels."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean HxW array, got dtype {mask.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{name} has shape {mask.shape} but its image is {image.shape[:2]}")
    count = int(mask.sum())
    if count < 2:
        raise ValueError(f"{name} selects {count} pixels; colour statistics need at least 2")
    return mask.reshape(-1)


def _masked(pixels: np.ndarray, mask: np.ndarray | None, image: np.ndarray, name: str) -> np.ndarray:
    """The pixels selected by an optional HxW boolean mask, so statistics can ignore background."""
    return pixels if mask is None else pixels[_flat_mask(mask, image, name)]


def rct(
    source: np.ndarray,
    target: np.ndarray,
    *,
    source_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """`source` with each CIE L*a*b* channel's mean and std set to `target`'s (Reinhard et al. 2001), then clipped.

    Works in CIE L*a*b* (D65, srgb_to_lab) rather than the paper's l-alpha-beta, the LAB variant DeepFaceLab's
    `rct` uses; the masks (boolean HxW of their own image) restrict the statistics, the map applies to every pixel.
    """
    src = _colour_pixels(source, "source")
    tgt = _colour_pixels(target, "target")
    src_lab, tgt_lab = srgb_to_lab(src), srgb_to_lab(tgt)
    s = _masked(src_lab, source_mask, source, "source_mask")
    t = _masked(tgt_lab, target_mask, target, "target_mask")
    gain = t.std(axis=0) / np.maximum(s.std(axis=0), eps)
    out = (src_lab - s.mean(axis=0)) * gain + t.mean(axis=0)
    return from_unit_float(lab_to_srgb(out).reshape(source.shape), source)


def _psd_power(cov: np.ndarray, power: float) -> np.ndarray:
    """cov**power for a symmetric positive (semi)definite matrix via eigh, for matrix (inverse) square roots."""
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-12)
    return (vectors * values**power) @ vectors.T


def lct(
    source: np.ndarray,
    target: np.ndarray,
    *,
    mode: Literal["pca", "chol", "sym"] = "pca",
    source_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """`source` mapped by x -> A (x - mu_s) + mu_t with A Cov_s A^T = Cov_t in RGB, matching mean and full covariance.

    Unlike rct this also matches cross-channel correlation. `mode` picks A: "pca" (the mode name DeepFaceLab
    defaults to) is Cov_t^1/2 Cov_s^-1/2 from eigendecompositions, "chol" is L_t L_s^-1 from Cholesky factors,
    "sym" is the Monge-Kantorovich map (what DFL calls `mkl`), the one that moves colours least. `eps` is a
    ridge on both covariances so flat (grey) images do not divide by zero.
    """
    src = _colour_pixels(source, "source")
    tgt = _colour_pixels(target, "target")
    s = _masked(src, source_mask, source, "source_mask")
    t = _masked(tgt, target_mask, target, "target_mask")
    mu_s, mu_t = s.mean(axis=0), t.mean(axis=0)
    ridge = eps * np.eye(3)
    cov_s = np.cov(s, rowvar=False, bias=True) + ridge
    cov_t = np.cov(t, rowvar=False, bias=True) + ridge
    if mode == "pca":
        gain = _psd_power(cov_t, 0.5) @ _psd_power(cov_s, -0.5)
    elif mode == "chol":
        gain = np.linalg.cholesky(cov_t) @ np.linalg.inv(np.linalg.cholesky(cov_s))
    elif mode == "sym":
        root_s, inv_root_s = _psd_power(cov_s, 0.5), _psd_power(cov_s, -0.5)
        gain = inv_root_s @ _psd_power(root_s @ cov_t @ root_s, 0.5) @ inv_root_s
    else:
        raise ValueError(f"lct mode={mode!r} is not one of 'pca', 'chol', 'sym'")
    out = (src - mu_s) @ gain.T + mu_t
    return from_unit_float(out.reshape(source.shape), source)


def sot(
    source: np.ndarray,
    target: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    steps: int = 10,
    batch_size: int = 5,
    source_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
) -> np.ndarray:
    """`source` moved towards `target`'s full 3-D colour distribution by sliced optimal transport (Pitie et al.).

    Each step draws `batch_size` random unit directions (from `rng`; None means a fixed seed 0), solves the
    1-D transport between the projected colour distributions by sorting (quantile matching), and moves
    every pixel by the batch mean of those displacements. DFL's defaults are 10 steps, batch 5; its
    bilateral smoothing of the result is not applied. Masks restrict which pixels define both
    distributions; an unmasked source pixel moves as the masked pixel just below it in each projection.
    """
    if rng is None:
        rng = np.random.default_rng(0)
    _check_rng(rng)
    if steps < 0 or batch_size < 1:
        raise ValueError(f"sot needs steps >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    x = _colour_pixels(source, "source")
    tgt = _masked(_colour_pixels(target, "target"), target_mask, target, "target_mask")
    inside = None if source_mask is None else _flat_mask(source_mask, source, "source_mask")
    n_src = x.shape[0] if inside is None else int(inside.sum())
    for _ in range(steps):
        directions = rng.standard_normal((batch_size, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        proj = x @ directions.T
        order = np.argsort(proj, axis=0)
        sorted_proj = np.take_along_axis(proj, order, axis=0)
        matched = _resample_sorted(np.sort(tgt @ directions.T, axis=0), n_src)
        if inside is None:
            step_sorted = matched - sorted_proj
        else:
            in_sorted = inside[order]
            sorted_src = sorted_proj.T[in_sorted.T].reshape(batch_size, n_src).T
            nearest = np.maximum(np.cumsum(in_sorted, axis=0) - 1, 0)
            step_sorted = np.take_along_axis(matched - sorted_src, nearest, axis=0)
        step = np.empty_like(proj)
        np.put_along_axis(step, order, step_sorted, axis=0)
        x = x + step @ directions / batch_size
    return from_unit_float(x.reshape(source.shape), source)


def _resample_sorted(values: np.ndarray, n: int) -> np.ndarray:
    """(n, B) quantiles of sorted (m, B) columns by linear interpolation, to match distributions of unequal size."""
    m = values.shape[0]
    if m == n:
        return values
    pos = np.linspace(0.0, m - 1, n)
    lo = np.minimum(pos.astype(np.intp), m - 1)
    hi = np.minimum(lo + 1, m - 1)
    frac = (pos - lo)[:, None]
    return values[lo] + frac * (values[hi] - values[lo])


_TRANSFERS: dict[str, Callable[..., np.ndarray]] = {"rct": rct, "lct": lct, "sot": sot}


def color_transfer(
    mode: ColorMode,
    source: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator | None = None,
    **kwargs: object,
) -> np.ndarray:
    """Dispatch to rct/lct/sot by name ("none" returns `source`), so configs can pick the method as a string."""
    if mode == "none":
        return source
    if mode not in _TRANSFERS:
        raise ValueError(f"colour transfer mode {mode!r} is not one of 'none', 'rct', 'lct', 'sot'")
    if mode == "sot":
        kwargs = {"rng": rng, **kwargs}
    return _TRANSFERS[mode](source, target, **kwargs)


# ------------------------------------------------------------------------------------------ pipeline


def augment_pair(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    flip: bool = True,
    warp: bool = True,
    color: ColorMode | None = None,
    color_reference: np.ndarray | None = None,
    flip_p: float = 0.5,
    warp_options: Mapping[str, float] | None = None,
    masks: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """{"input": warped, "target": unwarped} float32 [0, 1] for one face-swap training example.

    Order is flip -> colour transfer of `image` towards `color_reference` (method `color`) -> random
    warp with `warp_options` (random_warp's keywords); the reference is needed exactly when `color` is
    a method, so a misconfigured pipeline fails loudly instead of silently skipping recolouring.
    `masks` (HxWxK, e.g. face and eyes/mouth) follow the target's geometry, flip and similarity
    transform but no warp and no colour, and come back as float32 [0, 1] under "masks"; the random
    draws are the same with or without them.
    """
    _check_image(image)
    _check_rng(rng)
    if masks is not None:
        _check_image(masks, "masks")
        if masks.shape[:2] != image.shape[:2]:
            raise ValueError(f"masks are {masks.shape[:2]} but the image is {image.shape[:2]}; they must align")
    mode = "none" if color is None else color
    if mode != "none" and color_reference is None:
        raise ValueError(f"color={mode!r} needs a color_reference image to recolour towards")
    if mode == "none" and color_reference is not None:
        raise ValueError("color_reference was given but color is None/'none'; pass color='rct', 'lct' or 'sot'")
    x = to_unit_float(image)
    channels = x.shape[-1]
    if masks is not None:
        x = np.concatenate([x, to_unit_float(masks)], axis=-1)
    if flip:
        x = random_flip(x, rng, p=flip_p)
    if mode != "none":
        x = np.concatenate([color_transfer(mode, x[..., :channels], color_reference, rng=rng), x[..., channels:]], -1)
    if warp:
        warped, target = random_warp(x, rng, **dict(warp_options or {}))
    else:
        warped, target = x.copy(), x.copy()
    out = {"input": np.ascontiguousarray(warped[..., :channels]), "target": np.ascontiguousarray(target[..., :channels])}
    if masks is not None:
        out["masks"] = np.ascontiguousarray(target[..., channels:])
    return out


class SwapAugment(grain.transforms.RandomMap):
    """Pipeline transform for face-swap training: each example's image -> {"input", "target"}.

    A `grain.transforms.RandomMap`, so grain seeds it per example from the run's seed and the
    example's position. With a colour mode, the reference
    is a random image of `reference` (DFL recolours src faces towards random dst faces). Mask fields
    (`MASK_FIELDS` present in the example) are aligned with "target" and replaced by float32 [0, 1]
    versions; other example fields pass through.
    """

    def __init__(self, *, flip: bool = True, warp: bool = True, color: ColorMode = "none",
                 reference: object | None = None, warp_options: Mapping[str, float] | None = None) -> None:
        if color != "none" and reference is None:
            raise ValueError(f"color={color!r} needs a reference source of faces to recolour towards")
        self.flip, self.warp, self.color = flip, warp, color
        self.reference, self.warp_options = reference, dict(warp_options or {})

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        reference = None
        if self.color != "none":
            reference = self.reference[int(rng.integers(len(self.reference)))]["image"]
        names = [k for k in MASK_FIELDS if k in example]
        masks = np.concatenate([example[k] for k in names], axis=-1) if names else None
        out = augment_pair(example["image"], rng, flip=self.flip, warp=self.warp,
                           color=None if self.color == "none" else self.color, color_reference=reference,
                           warp_options=self.warp_options, masks=masks)
        if names:
            aligned = out.pop("masks")
            out.update({k: aligned[..., i:i + 1] for i, k in enumerate(names)})
        rest = {k: v for k, v in example.items() if k != "image"}
        return {**rest, **out}
