"""Image losses against independent references: scikit-image's SSIM, scipy's Gaussian filter, the PSNR formula."""
import chex
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from train import losses


def _pair(seed=0, shape=(3, 40, 36, 3)):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape).astype(np.float32)
    x = ndimage.gaussian_filter(x, sigma=(0, 2, 2, 0))  # image-like: correlated neighbours
    y = np.clip(x + rng.normal(scale=0.05, size=shape), 0, 1).astype(np.float32)
    return x, y


def test_ssim_matches_scikit_image_gaussian_ssim():
    x, y = _pair()
    ours = np.asarray(losses.ssim(jnp.asarray(x), jnp.asarray(y), filter_size=11))
    chex.assert_shape(ours, (3,))
    reference = [
        structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                              channel_axis=-1)
        for a, b in zip(x, y)
    ]
    np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=2e-5)
    assert 0.3 < ours.min() and ours.max() < 0.99


def test_ssim_of_identical_images_is_one_and_dssim_zero():
    x, _ = _pair(1)
    np.testing.assert_allclose(losses.ssim(x, x), 1.0, atol=1e-5)
    np.testing.assert_allclose(losses.dssim(x, x), 0.0, atol=1e-5)


def test_dssim_is_half_of_one_minus_ssim_and_grows_with_noise():
    x, y = _pair(2)
    for size in (5, 11):
        np.testing.assert_allclose(losses.dssim(x, y, filter_size=size), (1 - losses.ssim(x, y, filter_size=size)) / 2,
                                   rtol=1e-6)
    noisier = np.clip(y + np.random.default_rng(3).normal(scale=0.1, size=y.shape), 0, 1).astype(np.float32)
    assert np.all(losses.dssim(x, noisier) > losses.dssim(x, y))


def test_ssim_rejects_a_window_larger_than_the_image():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="filter_size 11 exceeds"):
        losses.ssim(x, x)


def test_psnr_is_the_textbook_formula():
    x, y = _pair(4)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    np.testing.assert_allclose(losses.psnr(x, y), 10 * np.log10(1 / mse), rtol=1e-5)


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_blur_matches_scipy_gaussian_filter_with_replicated_edges(radius):
    x = np.random.default_rng(5).uniform(size=(2, 20, 24, 1)).astype(np.float32)
    ours = np.asarray(losses.blur(jnp.asarray(x), radius))
    reference = ndimage.gaussian_filter(x, sigma=(0, radius / 2, radius / 2, 0), truncate=2.0, mode="nearest")
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_soften_mask_keeps_the_inside_and_fades_across_the_border():
    mask = np.zeros((1, 64, 64, 1), np.float32)
    mask[:, 16:48, 16:48] = 1.0
    soft = np.asarray(losses.soften_mask(jnp.asarray(mask), 64))
    assert soft.min() >= 0 and soft.max() <= 1
    assert np.all(soft[:, 20:44, 20:44] == 1.0)
    assert np.all(soft[:, :12] == 0.0)
    assert 0 < soft[0, 32, 15, 0] < 1 and soft[0, 32, 16, 0] == 1.0


def test_masked_metrics_equal_the_plain_ones_under_a_full_mask_and_ignore_what_is_outside():
    x, y = _pair(6)
    full = np.ones(x.shape[:-1] + (1,), np.float32)
    np.testing.assert_allclose(losses.masked_psnr(x, y, full), losses.psnr(x, y), rtol=1e-5)
    np.testing.assert_allclose(losses.masked_ssim(x, y, full), losses.ssim(x, y), rtol=1e-5)
    half = full.copy()
    half[:, :, 18:] = 0.0
    spoiled = y.copy()
    spoiled[:, :, 18 + 5:] = 0.0  # beyond every window centred in the left half
    np.testing.assert_allclose(losses.masked_ssim(x, spoiled, half), losses.masked_ssim(x, y, half), rtol=1e-6)
    np.testing.assert_allclose(losses.masked_psnr(x, spoiled, half), losses.masked_psnr(x, y, half), rtol=1e-6)
    left = x[:, :, :18], y[:, :, :18]
    np.testing.assert_allclose(losses.masked_psnr(x, y, half), losses.psnr(*left), rtol=1e-5)
