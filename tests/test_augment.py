"""data.augment: flips, DeepFaceLab-style random warp, colour transfer and the face-swap pair builder."""

from __future__ import annotations

import dataclasses

import chex
import numpy as np
import pytest
from sklearn import datasets as sample_images

from data import augment as A


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    """A real photograph (buildings and sky), 128x128 uint8 RGB."""
    return np.ascontiguousarray(sample_images.load_sample_image("china.jpg")[100:356:2, 200:456:2])


@pytest.fixture(scope="module")
def flower() -> np.ndarray:
    """A second real photograph with a different palette, 128x128 uint8 RGB."""
    return np.ascontiguousarray(sample_images.load_sample_image("flower.jpg")[100:356:2, 200:456:2])


def _squeeze_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`image` linearly compressed into [lo, hi], so transferred statistics stay clear of clipping."""
    return (lo + (hi - lo) * image / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def mid_pair(china: np.ndarray, flower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) photographs whose rct/lct results need no clipping."""
    return _squeeze_range(china, 0.25, 0.75), _squeeze_range(flower, 0.3, 0.7)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _example(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """Random test image of `shape` covering the full range of `dtype`."""
    x = _rng(seed).random(shape)
    return np.rint(x * 255).astype(np.uint8) if dtype == np.uint8 else x.astype(dtype)


def _lab_stats(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    lab = A.srgb_to_lab(image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)).reshape(-1, 3)
    if mask is not None:
        lab = lab[mask.reshape(-1)]
    return lab.mean(axis=0), lab.std(axis=0)


def _rgb_stats(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rgb = image.reshape(-1, 3).astype(np.float64)
    if mask is not None:
        rgb = rgb[mask.reshape(-1)]
    return rgb.mean(axis=0), np.cov(rgb, rowvar=False, bias=True)


def _moment_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between per-channel means and stds of two RGB images."""
    a, b = a.reshape(-1, 3).astype(np.float64), b.reshape(-1, 3).astype(np.float64)
    return float(np.linalg.norm(a.mean(0) - b.mean(0)) + np.linalg.norm(a.std(0) - b.std(0)))


NO_AFFINE = dict(rotation=0.0, scale=0.0, shift=0.0)
SHAPES = [(64, 64, 3), (37, 53, 1), (33, 20, 3), (1, 9, 3), (128, 96, 1)]


# --------------------------------------------------------------------------------------------- sRGB/Lab


@pytest.mark.parametrize(
    "rgb, lab",
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
        ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
        ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
        ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0)),
    ],
)
def test_srgb_to_lab_matches_published_d65_values(rgb, lab):
    np.testing.assert_allclose(A.srgb_to_lab(np.array(rgb)), lab, atol=2e-3)


def test_lab_round_trip(china):
    rgb = china.astype(np.float64) / 255.0
    np.testing.assert_allclose(A.lab_to_srgb(A.srgb_to_lab(rgb)), rgb, atol=1e-9)


# ------------------------------------------------------------------------------------------------ flip


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_flip_probability_extremes(dtype):
    image = _example((17, 23, 3), dtype)
    np.testing.assert_array_equal(A.random_flip(image, _rng(), p=0.0), image)
    flipped = A.random_flip(image, _rng(), p=1.0)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    assert flipped.dtype == dtype


def test_flip_rate_follows_p():
    image = _example((4, 5, 1), np.float32)
    rng = _rng(3)
    flips = [not np.array_equal(A.random_flip(image, rng, p=0.3), image) for _ in range(2000)]
    assert 0.26 < np.mean(flips) < 0.34


# ------------------------------------------------------------------------------------------------ warp


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_warp_with_all_strengths_zero_is_identity(shape, dtype):
    image = _example(shape, dtype)
    warped, target = A.random_warp(image, _rng(), strength=0.0, **NO_AFFINE)
    np.testing.assert_array_equal(warped, image)
    np.testing.assert_array_equal(target, image)


def test_warp_identity_on_real_photo(china):
    warped, target = A.random_warp(china, _rng(), strength=0.0, **NO_AFFINE)
    np.testing.assert_array_equal(warped, china)
    np.testing.assert_array_equal(target, china)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_warp_and_flip_preserve_shape_dtype_range(shape, dtype):
    image = _example(shape, dtype)
    warped, target = A.random_warp(image, _rng(), strength=1.0, rotation=30.0, scale=0.2, shift=0.2)
    flipped = A.random_flip(image, _rng(), p=1.0)
    chex.assert_shape([warped, target, flipped], shape)
    chex.assert_type([warped, target, flipped], dtype)
    for out in (warped, target):
        assert out.min() >= 0
        assert out.max() <= (255 if dtype == np.uint8 else 1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_warp_changes_input_and_leaves_target_unwarped(china, dtype):
    image = china if dtype == np.uint8 else china.astype(np.float32) / 255.0
    warped, target = A.random_warp(image, _rng(1), strength=1.0, **NO_AFFINE)
    np.testing.assert_array_equal(target, image)
    scale = 255.0 if dtype == np.uint8 else 1.0
    assert np.abs(warped.astype(np.float64) - image).mean() / scale > 0.01


def test_target_is_exactly_the_affine_only_transform(china):
    params = A.warp_params(_rng(2), china.shape[:2], strength=1.0, rotation=10.0, scale=0.1, shift=0.1)
    warped, target = A.apply_warp(china, params)
    affine_only = dataclasses.replace(params, offsets=np.zeros_like(params.offsets))
    warped_a, target_a = A.apply_warp(china, affine_only)
    np.testing.assert_array_equal(target, target_a)
    np.testing.assert_array_equal(warped_a, target_a)
    assert not np.array_equal(warped, target)
    assert np.abs(target.astype(np.float64) - china).mean() > 5


def test_random_warp_is_apply_warp_of_warp_params(china):
    expected = A.apply_warp(china, A.warp_params(_rng(5), china.shape[:2], strength=0.7, grid=4))
    got = A.random_warp(china, _rng(5), strength=0.7, grid=4)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_warp_is_deterministic_by_seed(china):
    a = A.random_warp(china, _rng(7))
    b = A.random_warp(china, _rng(7))
    c = A.random_warp(china, _rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_warp_params_consume_the_same_draws_whatever_the_strength():
    rng_a, rng_b = _rng(9), _rng(9)
    A.warp_params(rng_a, 64, strength=0.0, **NO_AFFINE)
    A.warp_params(rng_b, 64, strength=2.0, rotation=20.0)
    assert rng_a.random() == rng_b.random()


def test_node_displacement_is_about_a_quarter_cell():
    size, grid = 129, 5
    cell = (size - 1) / (grid - 1)
    offsets = np.stack([A.warp_params(_rng(s), size, grid=grid).offsets for s in range(200)])
    chex.assert_shape(offsets, (200, grid, grid, 2))
    np.testing.assert_array_equal(offsets[:, [0, -1]], 0.0)
    np.testing.assert_array_equal(offsets[:, :, [0, -1]], 0.0)
    interior = np.abs(offsets[:, 1:-1, 1:-1])
    expected = A.expected_node_displacement(size, grid=grid)
    assert expected == pytest.approx(A.WARP_JITTER * cell * np.sqrt(2 / np.pi))
    assert 0.9 * expected < interior.mean() < 1.1 * expected
    rms_cells = np.sqrt((interior**2).mean()) / cell
    assert 0.2 < rms_cells < 0.3
    half = np.abs(A.warp_params(_rng(0), size, grid=grid, strength=0.5).offsets)
    np.testing.assert_allclose(half, 0.5 * np.abs(A.warp_params(_rng(0), size, grid=grid).offsets))


def test_dense_field_interpolates_the_nodes_and_is_zero_at_the_border():
    params = A.warp_params(_rng(4), 129, grid=5)
    field = A.displacement_field(params)
    chex.assert_shape(field, (129, 129, 2))
    np.testing.assert_allclose(field[::32, ::32], params.offsets, atol=1e-4)
    for edge in (field[0], field[-1], field[:, 0], field[:, -1]):
        np.testing.assert_allclose(edge, 0.0, atol=1e-4)
    peak = np.abs(params.offsets).max()
    assert np.abs(field).max() < 1.5 * peak
    assert np.abs(np.diff(field, axis=0)).max() < peak / 8


def test_warped_input_samples_where_the_field_says():
    """On a coordinate-ramp image (bilinear sampling is exact there) the input reads at p + field(p)."""
    size = 97
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float64)
    image = np.stack(np.meshgrid(ramp, ramp, indexing="ij"), axis=-1)
    params = A.warp_params(_rng(6), size, strength=1.0, **NO_AFFINE)
    warped, _ = A.apply_warp(image, params)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1)
    read_at = grid + A.displacement_field(params)
    inside = np.all((read_at >= 0) & (read_at <= size - 1), axis=-1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(warped[inside] * (size - 1), read_at[inside], atol=1e-3)


def test_affine_rotation_scale_and_shift_move_content_as_documented():
    size = 65
    ramp = np.linspace(0.0, 1.0, size)
    image = np.stack(np.meshgrid(ramp, ramp, indexing="ij"), axis=-1)
    params = dataclasses.replace(
        A.warp_params(_rng(), size, strength=0.0, **NO_AFFINE), angle=0.0, zoom=2.0, shift=(4.0, -2.0)
    )
    _, target = A.apply_warp(image, params)
    centre = (size - 1) / 2
    # output pixel p reads the image at c + (p - c - t) / zoom
    py, px = 40, 30
    expected = (centre + (py - centre - 4.0) / 2.0, centre + (px - centre + 2.0) / 2.0)
    np.testing.assert_allclose(target[py, px] * (size - 1), expected, atol=1e-4)


# ------------------------------------------------------------------------------------- colour transfer


@pytest.mark.parametrize("fn", [A.rct, A.lct, A.sot])
@pytest.mark.parametrize("shape", [(33, 47, 3), (128, 128, 3), (1, 5, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_colour_transfer_preserves_shape_dtype_range(fn, shape, dtype, flower):
    source = _example(shape, dtype)
    target = flower if dtype == np.uint8 else flower.astype(np.float32) / 255.0
    out = fn(source, target)
    chex.assert_shape(out, shape)
    chex.assert_type(out, dtype)
    assert out.min() >= 0 and out.max() <= (255 if dtype == np.uint8 else 1.0)


def test_rct_matches_target_lab_mean_and_std(mid_pair):
    source, target = mid_pair
    out = A.rct(source, target)
    assert 0 < out.min() and out.max() < 1, "test images must not clip"
    mean_o, std_o = _lab_stats(out)
    mean_t, std_t = _lab_stats(target)
    mean_s, _ = _lab_stats(source)
    assert np.abs(mean_s - mean_t).max() > 3
    np.testing.assert_allclose(mean_o, mean_t, atol=0.02)
    np.testing.assert_allclose(std_o, std_t, rtol=1e-3, atol=0.02)


@pytest.mark.parametrize("fn", [A.rct, A.lct])
def test_transfer_to_itself_is_identity(fn, china):
    as_float = china.astype(np.float32) / 255.0
    np.testing.assert_allclose(fn(as_float, as_float), as_float, atol=1e-4)
    assert np.abs(fn(china, china).astype(int) - china).max() <= 1


@pytest.mark.parametrize("mode", ["pca", "chol", "sym"])
def test_lct_matches_target_rgb_mean_and_covariance(mid_pair, mode):
    source, target = mid_pair
    out = A.lct(source, target, mode=mode)
    assert 0 < out.min() and out.max() < 1, "test images must not clip"
    mean_o, cov_o = _rgb_stats(out)
    mean_t, cov_t = _rgb_stats(target)
    np.testing.assert_allclose(mean_o, mean_t, atol=1e-5)
    np.testing.assert_allclose(cov_o, cov_t, atol=2e-5)
    corr_o, corr_t = (np.corrcoef(x.reshape(-1, 3), rowvar=False) for x in (out, target))
    np.testing.assert_allclose(corr_o, corr_t, atol=1e-3)


def test_lct_sym_moves_pixels_least(mid_pair):
    source, target = mid_pair
    moves = {m: np.mean((A.lct(source, target, mode=m) - source) ** 2) for m in ("pca", "chol", "sym")}
    assert moves["sym"] <= min(moves.values()) + 1e-9


def test_sot_moves_moments_towards_target(china, flower):
    source, target = china.astype(np.float32) / 255.0, flower.astype(np.float32) / 255.0
    before = _moment_distance(source, target)
    after = _moment_distance(A.sot(source, target, rng=_rng(0)), target)
    assert after < 0.2 * before


def test_sot_is_deterministic_by_seed(china, flower):
    a = A.sot(china, flower, rng=_rng(11))
    np.testing.assert_array_equal(a, A.sot(china, flower, rng=_rng(11)))
    assert not np.array_equal(a, A.sot(china, flower, rng=_rng(12)))
    np.testing.assert_array_equal(A.sot(china, flower), A.sot(china, flower))


def test_sot_with_zero_steps_is_identity(china, flower):
    np.testing.assert_array_equal(A.sot(china, flower, steps=0), china)


def test_sot_handles_target_of_a_different_size(china, flower):
    source = china.astype(np.float32) / 255.0
    small_target = flower[::3, ::2].astype(np.float32) / 255.0
    assert _moment_distance(A.sot(source, small_target), small_target) < 0.2 * _moment_distance(source, small_target)


@pytest.fixture(scope="module")
def masked_pair(mid_pair) -> dict[str, np.ndarray]:
    """Photographs whose left third (outside the masks) is painted an extreme colour."""
    source, target = (x.copy() for x in mid_pair)
    mask = np.ones(source.shape[:2], dtype=bool)
    mask[:, :40] = False
    source[~mask] = (0.0, 1.0, 0.0)
    target[~mask] = (1.0, 0.0, 1.0)
    return dict(source=source, target=target, mask=mask)


def test_rct_masks_restrict_statistics(masked_pair):
    source, target, mask = masked_pair["source"], masked_pair["target"], masked_pair["mask"]
    out = A.rct(source, target, source_mask=mask, target_mask=mask)
    face = out[mask]
    assert 0 < face.min() and face.max() < 1
    np.testing.assert_allclose(_lab_stats(out, mask)[0], _lab_stats(target, mask)[0], atol=0.02)
    np.testing.assert_allclose(_lab_stats(out, mask)[1], _lab_stats(target, mask)[1], atol=0.03)
    np.testing.assert_allclose(out[mask], A.rct(source[mask][None], target[mask][None])[0], atol=1e-5)
    unmasked = A.rct(source, target)
    assert np.abs(_lab_stats(unmasked, mask)[0] - _lab_stats(target, mask)[0]).max() > 5


def test_lct_masks_restrict_statistics(masked_pair):
    source, target, mask = masked_pair["source"], masked_pair["target"], masked_pair["mask"]
    out = A.lct(source, target, source_mask=mask, target_mask=mask)
    mean_o, cov_o = _rgb_stats(out, mask)
    mean_t, cov_t = _rgb_stats(target, mask)
    np.testing.assert_allclose(mean_o, mean_t, atol=1e-5)
    np.testing.assert_allclose(cov_o, cov_t, atol=2e-5)
    np.testing.assert_allclose(out[mask], A.lct(source[mask][None], target[mask][None])[0], atol=1e-5)
    unmasked_mean, _ = _rgb_stats(A.lct(source, target), mask)
    assert np.abs(unmasked_mean - mean_t).max() > 0.05


def test_sot_masks_restrict_statistics(masked_pair):
    source, target, mask = masked_pair["source"], masked_pair["target"], masked_pair["mask"]
    before = _moment_distance(source[mask], target[mask])
    out = A.sot(source, target, source_mask=mask, target_mask=mask)
    assert _moment_distance(out[mask], target[mask]) < 0.2 * before
    unmasked = A.sot(source, target)
    assert _moment_distance(unmasked[mask], target[mask]) > 2 * _moment_distance(out[mask], target[mask])


def test_colour_transfer_dispatch(mid_pair):
    source, target = mid_pair
    np.testing.assert_array_equal(A.color_transfer("rct", source, target), A.rct(source, target))
    np.testing.assert_array_equal(A.color_transfer("sot", source, target, _rng(3)), A.sot(source, target, rng=_rng(3)))
    assert A.color_transfer("none", source, target) is source
    with pytest.raises(ValueError, match="mkl"):
        A.color_transfer("mkl", source, target)


# --------------------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("color", [None, "rct", "lct", "sot"])
def test_augment_pair_outputs(china, flower, color):
    reference = None if color is None else flower
    out = A.augment_pair(china, _rng(0), color=color, color_reference=reference)
    assert set(out) == {"input", "target"}
    chex.assert_shape([out["input"], out["target"]], china.shape)
    chex.assert_type([out["input"], out["target"]], np.float32)
    for x in out.values():
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert not np.array_equal(out["input"], out["target"])
    again = A.augment_pair(china, _rng(0), color=color, color_reference=reference)
    np.testing.assert_array_equal(out["input"], again["input"])


def test_augment_pair_without_augmentation_is_the_scaled_image(china):
    out = A.augment_pair(china, _rng(0), flip=False, warp=False)
    np.testing.assert_array_equal(out["input"], china.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(out["target"], out["input"])
    assert out["target"] is not out["input"]


def test_augment_pair_order_is_flip_colour_warp(china, flower):
    rng_a, rng_b = _rng(4), _rng(4)
    out = A.augment_pair(china, rng_a, color="rct", color_reference=flower, flip_p=1.0, warp_options=dict(strength=0.5))
    x = A.random_flip(china.astype(np.float32) / 255.0, rng_b, p=1.0)
    np.testing.assert_array_equal(x, china[:, ::-1] / np.float32(255.0))
    x = A.rct(x, flower)
    warped, target = A.random_warp(x, rng_b, strength=0.5)
    np.testing.assert_allclose(out["input"], warped, atol=1e-6)
    np.testing.assert_allclose(out["target"], target, atol=1e-6)


# ----------------------------------------------------------------------------------------------- errors


def test_errors_name_the_problem(china):
    with pytest.raises(ValueError, match="HxWxC"):
        A.random_flip(china[..., 0], _rng())
    with pytest.raises(TypeError, match="dtype int16"):
        A.random_warp(china.astype(np.int16), _rng())
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        A.random_warp(china.astype(np.float32), _rng())
    with pytest.raises(TypeError, match="np.random.Generator"):
        A.random_warp(china, np.random.RandomState(0))
    with pytest.raises(ValueError, match="p=1.5"):
        A.random_flip(china, _rng(), p=1.5)
    with pytest.raises(ValueError, match="grid=1"):
        A.random_warp(china, _rng(), grid=1)
    with pytest.raises(ValueError, match="strength=-1"):
        A.random_warp(china, _rng(), strength=-1.0)
    params = A.warp_params(_rng(), 64)
    with pytest.raises(ValueError, match="drawn for size"):
        A.apply_warp(china, params)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        A.rct(china[..., :1], china)
    with pytest.raises(ValueError, match="source_mask has shape"):
        A.lct(china, china, source_mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        A.sot(china, china, target_mask=np.ones(china.shape[:2]))
    with pytest.raises(ValueError, match="selects 0 pixels"):
        A.rct(china, china, target_mask=np.zeros(china.shape[:2], dtype=bool))
    with pytest.raises(ValueError, match="mode='qr'"):
        A.lct(china, china, mode="qr")
    with pytest.raises(ValueError, match="needs a color_reference"):
        A.augment_pair(china, _rng(), color="rct")
    with pytest.raises(ValueError, match="color_reference was given"):
        A.augment_pair(china, _rng(), color_reference=china)


def test_swap_augment_in_the_pair_pipeline_is_seeded_and_shaped():
    from data import pipeline, sources

    a = sources.get_source("synthetic_faces:ids=0;n=16;size=32")
    b = sources.get_source("synthetic_faces:ids=1;n=16;size=32")
    transform = A.SwapAugment(color="rct", reference=b)
    runs = [iter(pipeline.make_pair_dataset(a, b, global_batch_size=4, seed=9, transform=transform)) for _ in range(2)]
    first, second = next(runs[0]), next(runs[1])
    for side in ("a", "b"):
        assert first[side]["input"].shape == (4, 32, 32, 3) and first[side]["input"].dtype == np.float32
        np.testing.assert_array_equal(first[side]["input"], second[side]["input"])
        assert not np.array_equal(first[side]["input"], first[side]["target"])
    with pytest.raises(ValueError, match="needs a reference"):
        A.SwapAugment(color="rct")


def test_masks_follow_the_target_geometry_and_leave_the_draws_unchanged(china, flower):
    """A mask equal to the image's red channel must come out equal to the target's red channel."""
    red = china[..., :1]
    for kwargs in (dict(flip_p=1.0), dict(warp_options=dict(strength=1.0, rotation=10, scale=0.1, shift=0.05)),
                   dict(color="rct", color_reference=flower)):
        plain = A.augment_pair(china, _rng(3), **kwargs)
        out = A.augment_pair(china, _rng(3), masks=red, **kwargs)
        np.testing.assert_array_equal(out["input"], plain["input"])
        np.testing.assert_array_equal(out["target"], plain["target"])
        chex.assert_shape(out["masks"], (128, 128, 1))
        if "color" not in kwargs:
            np.testing.assert_allclose(out["masks"], out["target"][..., :1], atol=1e-6)
    flipped = A.augment_pair(china, _rng(3), flip_p=1.0, warp=False, masks=red)["masks"]
    np.testing.assert_allclose(flipped[..., 0], red[:, ::-1, 0] / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="must align"):
        A.augment_pair(china, _rng(), masks=red[:64])


def test_swap_augment_carries_mask_fields_aligned_with_the_target():
    from data import sources

    source = sources.get_source("synthetic_faces:ids=0;n=4;size=32;masks=1")
    example = source[0]
    out = A.SwapAugment(flip=True, warp=True).random_map(example, _rng(5))
    for name in A.MASK_FIELDS:
        assert out[name].shape == (32, 32, 1) and out[name].dtype == np.float32
        assert 0.0 <= out[name].min() and out[name].max() <= 1.0
    assert out["mask"].sum() > out["em_mask"].sum() > 0
    assert set(out) == set(example) - {"image"} | {"input", "target"}
