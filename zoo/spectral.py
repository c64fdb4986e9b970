"""Spectral features of images for the frequency-domain deepfake detectors: Durall's and Frank's.

Generators upsample, and upsampling leaves periodic traces that are faint in pixels and plain in a
spectrum. Two published baselines turn an image into a fixed feature vector that a linear
classifier separates (`zoo.detectors` wraps each in a module with a logistic-regression head):

- `durall_features` (Durall et al. 2019, "Unmasking DeepFakes with simple Features", arXiv
  1911.00686; cc-hpc-itwm/DeepFakeDetection): grayscale -> 2D FFT -> fftshift -> 20 log(|F| + eps)
  -> azimuthal average over integer radii around the DC term, a 1D profile from low to high
  frequency.
- `frank_features` (Frank et al. 2020, "Leveraging Frequency Analysis for Deep Fake Image
  Recognition", ICML; RUB-SysSec/GANDCTAnalysis): grayscale (or each channel) -> 2D orthonormal
  type-II DCT -> log(|D| + eps), flattened.

Images are float [B, H, W, C] in [0, 1] with C = 3 (RGB) or 1 (grey); the features are float32
whatever the input dtype, as FFTs and logs of tiny magnitudes need it. The features depend on the
image size, so a classifier trained at one size must see that size: Durall et al. warn not to
resize images (resampling filters the very frequencies they measure).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from zoo.errors import DataError

Array = jax.Array

__all__ = [
    "LUMA_601", "azimuthal_average", "dct2", "dct_matrix", "durall_features", "durall_length", "frank_features",
    "grayscale", "log_magnitude_spectrum", "radial_bins",
]

#: ITU-R BT.601 luma weights for R, G, B (what OpenCV's and PIL's grey conversions use).
LUMA_601 = (0.299, 0.587, 0.114)
DURALL_EPS = 1e-8  # Durall et al.'s epsilon (their code adds it to the shifted spectrum before |.|)
FRANK_EPS = 1e-12  # GANDCTAnalysis's log_scale epsilon


def _check_images(x: Array, what: str) -> None:
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{what} takes images [B, H, W, C] with C = 3 (RGB) or 1 (grey), got shape {x.shape}; "
                        "add a batch axis or convert the images to RGB")


def grayscale(x: Array) -> Array:
    """Images [B, H, W, 3 or 1] -> grey [B, H, W] float32: BT.601 luma for RGB, the single channel for grey."""
    _check_images(x, "grayscale")
    x = x.astype(jnp.float32)
    if x.shape[-1] == 1:
        return x[..., 0]
    return jnp.einsum("bhwc,c->bhw", x, jnp.asarray(LUMA_601, jnp.float32))


def log_magnitude_spectrum(gray: Array, eps: float = DURALL_EPS) -> Array:
    """Grey images [B, H, W] -> 20 ln(|F| + eps) of the centred 2D DFT [B, H, W] (DC at (H // 2, W // 2))."""
    spectrum = jnp.fft.fftshift(jnp.fft.fft2(gray.astype(jnp.float32)), axes=(-2, -1))
    return 20.0 * jnp.log(jnp.abs(spectrum) + eps)


def durall_length(height: int, width: int) -> int:
    """Length of Durall's profile at H x W: floor(hypot(H // 2, W // 2)) + 1 (floor(sqrt(2) * (S // 2)) + 1 if square).

    Radii are measured from the fftshifted DC term at (H // 2, W // 2), whose farthest pixel is the
    corner (0, 0); every integer radius up to that one holds at least one pixel.
    """
    return int(np.floor(np.hypot(height // 2, width // 2))) + 1


@functools.cache
def radial_bins(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin of each pixel [H * W] int32, pixels per bin [R]): bin = floor(distance to (H // 2, W // 2)).

    Durall et al.'s code centres at ((H - 1) / 2, (W - 1) / 2), half a pixel off the DC term for even
    sizes; here the centre is the DC term itself, so bin 0 is exactly the image mean's coefficient.
    """
    rows, cols = np.indices((height, width))
    radius = np.floor(np.hypot(rows - height // 2, cols - width // 2)).astype(np.int32).ravel()
    counts = np.bincount(radius)
    assert len(counts) == durall_length(height, width) and counts.min() > 0
    return radius, counts


def azimuthal_average(spectrum: Array) -> Array:
    """Maps [B, H, W] -> mean over each integer-radius ring around (H // 2, W // 2): [B, R], R = `durall_length`."""
    b, h, w = spectrum.shape
    bins, counts = radial_bins(h, w)
    flat = rearrange(spectrum, "b h w -> (h w) b")
    sums = jax.ops.segment_sum(flat, jnp.asarray(bins), num_segments=len(counts), indices_are_sorted=False)
    return rearrange(sums / jnp.asarray(counts, spectrum.dtype)[:, None], "r b -> b r")


def durall_features(x: Array, eps: float = DURALL_EPS) -> Array:
    """Images [B, H, W, C] -> Durall's azimuthally averaged log spectrum [B, durall_length(H, W)], float32.

    Differences from Durall et al.'s code: no interpolation of the profile to a fixed 300 points and
    no division by its first value (the detector standardises each feature over the training set
    instead, which removes both the scale and the 20 ln 255 offset of their 0-255 images); the
    centre is the DC pixel (see `radial_bins`); eps is added to |F| rather than to F.
    """
    _check_images(x, "durall_features")
    return azimuthal_average(log_magnitude_spectrum(grayscale(x), eps))


@functools.cache
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal type-II DCT matrix [n, n] (float64): D @ v is scipy.fft.dct(v, norm="ortho")."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat


def dct2(x: Array) -> Array:
    """Orthonormal 2D type-II DCT over the two last axes of [..., H, W] (two matrix products), float32."""
    h, w = x.shape[-2:]
    rows = jnp.asarray(dct_matrix(h), jnp.float32)
    cols = jnp.asarray(dct_matrix(w), jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    return jnp.einsum("kh,...hw,lw->...kl", rows, x.astype(jnp.float32), cols, precision=hi)


def frank_features(x: Array, per_channel: bool = False, eps: float = FRANK_EPS) -> Array:
    """Images [B, H, W, C] -> ln(|DCT-II| + eps) flattened: [B, H * W] (grey) or [B, H * W * C] (`per_channel`).

    Frank et al.'s code handles both grey and colour inputs; grey is the default here (3x fewer
    features). With `per_channel` each channel gets its own 2D DCT, features ordered (h, w, c).
    """
    _check_images(x, "frank_features")
    if per_channel:
        coeffs = rearrange(dct2(rearrange(x.astype(jnp.float32), "b h w c -> b c h w")), "b c h w -> b (h w c)")
    else:
        coeffs = rearrange(dct2(grayscale(x)), "b h w -> b (h w)")
    return jnp.log(jnp.abs(coeffs) + eps)
