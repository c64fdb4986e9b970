"""Degradations for detectors (data.degrade): blur against scipy, resize against jax.image, JPEG against PIL, H.264."""
import grain
import jax
import numpy as np
import pytest
import scipy.ndimage

from data import degrade
from zoo.errors import ConfigError, DataError


def _smooth(height=64, width=64, channels=3, dtype=np.float32):
    """A smooth colour pattern with some texture: what codecs are tuned for, so quality settings separate."""
    y, x = np.mgrid[:height, :width] / 64.0
    planes = [0.5 + 0.35 * np.sin(7 * x + 2 * k) * np.cos(5 * y - k) + 0.1 * np.sin(40 * x * y + k)
              for k in range(channels)]
    return np.clip(np.stack(planes, axis=-1), 0, 1).astype(dtype)


def _psnr(a, b):
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def _ffmpeg():
    """The ffmpeg binary the zoo uses, or a skip saying why H.264 cannot be tested."""
    from data.faces import video_out

    try:
        return video_out.ffmpeg_exe()
    except ImportError as e:
        pytest.skip(f"no ffmpeg for the H.264 round trip: {e}")


# ----------------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("shape", [(32, 24, 3), (5, 7, 1)])  # (5, 7): the 4-sigma kernel is wider than the image
@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0, 3.0])
def test_blur_matches_scipy_gaussian_filter_reflect(shape, sigma):
    image = np.random.default_rng(0).random(shape)
    reference = np.stack([scipy.ndimage.gaussian_filter(image[..., c], sigma, mode="reflect", truncate=4.0)
                          for c in range(shape[-1])], axis=-1)
    np.testing.assert_allclose(degrade.gaussian_blur(image, sigma), reference, atol=1e-12)


def test_blur_on_uint8_rounds_the_float_result_and_sigma_zero_is_identity():
    image = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    out = degrade.gaussian_blur(image, 1.5)
    reference = scipy.ndimage.gaussian_filter(image.astype(np.float64), (1.5, 1.5, 0), mode="reflect", truncate=4.0)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.rint(reference)).max() <= 1
    np.testing.assert_array_equal(degrade.gaussian_blur(image, 0.0), image)


# ----------------------------------------------------------------------------------------------- JPEG


def test_jpeg_quality_orders_psnr_and_100_is_near_identity():
    image = _smooth()
    psnr = {q: _psnr(degrade.jpeg(image, q), image) for q in (100, 90, 50, 30)}
    assert psnr[100] > 40  # RMS error under 2.6/255: only 8-bit and DCT rounding and 4:2:0 chroma are lost
    assert psnr[100] > psnr[90] > psnr[50] > psnr[30] + 1.0
    assert degrade.jpeg(image, 30).dtype == np.float32


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_equals_a_pil_round_trip_with_pil_defaults(channels):
    import io

    from PIL import Image

    image = (_smooth(40, 56, channels) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if channels == 1 else image).save(buffer, format="JPEG", quality=50)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    out = degrade.jpeg(image, 50)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected.reshape(image.shape))


def test_jpeg_refuses_alpha_and_bad_quality():
    with pytest.raises(DataError, match="4 channels"):
        degrade.jpeg(np.zeros((8, 8, 4), np.uint8), 50)
    with pytest.raises(ConfigError, match="1..100"):
        degrade.jpeg(np.zeros((8, 8, 3), np.uint8), 0)


# --------------------------------------------------------------------------------------------- resize


def test_resize_factor_one_is_identity():
    image = _smooth(33, 47)
    np.testing.assert_array_equal(degrade.resize_down_up(image, 1.0), image)
    as_bytes = (image * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(degrade.resize_down_up(as_bytes, 1.0), as_bytes)


@pytest.mark.parametrize("factor", [0.5, 0.25])
def test_resize_matches_jax_antialiased_linear(factor):
    image = _smooth()
    small = jax.image.resize(image, (round(64 * factor), round(64 * factor), 3), "linear", antialias=True)
    expected = np.asarray(jax.image.resize(small, image.shape, "linear", antialias=True))
    out = degrade.resize_down_up(image, factor)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert _psnr(out, image) < 40  # it did lose detail


# ---------------------------------------------------------------------------------------------- H.264


def test_h264_keeps_odd_shapes_and_orders_psnr_by_crf():
    _ffmpeg()
    clip = np.stack([np.roll(_smooth(63, 61), 2 * t, axis=1) for t in range(5)])
    out = {crf: degrade.h264(clip, crf) for crf in (23, 40)}
    for decoded in out.values():
        assert decoded.shape == clip.shape and decoded.dtype == clip.dtype
    assert _psnr(out[23], clip) > _psnr(out[40], clip) + 2.0
    assert _psnr(out[23], clip) > 30


def test_h264_grey_uint8_round_trip():
    _ffmpeg()
    clip = (_smooth(32, 32, 1)[None].repeat(3, axis=0) * 255).round().astype(np.uint8)
    out = degrade.h264(clip, 23)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert _psnr(out, clip) > 30


# ---------------------------------------------------------------------------------------------- sweep


def test_every_sweep_row_keeps_shape_and_dtype_and_changes_the_images():
    _ffmpeg()
    batch = np.stack([_smooth(32, 32), _smooth(32, 32)[::-1]])
    for name in degrade.ROBUSTNESS_SWEEP:
        out = degrade.apply_sweep(name, batch)
        assert out.shape == batch.shape and out.dtype == batch.dtype, name
        assert not np.array_equal(out, batch), name
    np.testing.assert_array_equal(degrade.apply_sweep("jpeg50", batch)[1], degrade.jpeg(batch[1], 50))


def test_h264_sweep_codes_each_image_alone_unless_clips_are_given():
    _ffmpeg()
    batch = np.stack([np.roll(_smooth(32, 32), 3 * t, axis=0) for t in range(3)])
    alone = degrade.apply_sweep("h264_crf40", batch)
    np.testing.assert_array_equal(alone[2], degrade.h264(batch[2:3], 40)[0])
    clips = np.array([5, 9, 5])
    grouped = degrade.apply_sweep("h264_crf40", batch, clips=clips)
    np.testing.assert_array_equal(grouped[[0, 2]], degrade.h264(batch[[0, 2]], 40))
    np.testing.assert_array_equal(grouped[1], alone[1])


def test_unknown_sweep_row_names_the_choices():
    with pytest.raises(ConfigError, match="jpeg90, jpeg50"):
        degrade.apply_sweep("jpeg10", np.zeros((1, 8, 8, 3), np.uint8))


# ------------------------------------------------------------------------------------------- training


def test_detector_augment_is_deterministic_per_seed_and_varies_across_seeds():
    image = _smooth()
    augment = degrade.DetectorAugment(p_crop=0.5)
    first = [augment(image, np.random.default_rng(seed)) for seed in range(8)]
    again = [augment(image, np.random.default_rng(seed)) for seed in range(8)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.shape == image.shape and a.dtype == image.dtype
    distinct = {a.tobytes() for a in first}
    assert len(distinct) >= 6  # two seeds may both draw no operation but the flip


def test_detector_augment_applies_exactly_the_chosen_operations():
    image = (_smooth() * 255).round().astype(np.uint8)
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    none = degrade.DetectorAugment(p_blur=0, p_jpeg=0, p_flip=0)
    np.testing.assert_array_equal(none(image, rng()), image)
    flip = degrade.DetectorAugment(p_blur=0, p_jpeg=0, p_flip=1)
    np.testing.assert_array_equal(flip(image, rng()), image[:, ::-1])
    blur_jpeg = degrade.DetectorAugment(p_blur=1, blur_sigma=(2.0, 2.0), p_jpeg=1, jpeg_quality=(40, 40), p_flip=0)
    np.testing.assert_array_equal(blur_jpeg(image, rng()), degrade.jpeg(degrade.gaussian_blur(image, 2.0), 40))


def test_detector_augment_draws_the_same_numbers_whatever_the_probabilities():
    image = _smooth(16, 16)
    after = []
    for augment in (degrade.DetectorAugment(p_blur=0, p_jpeg=0, p_flip=0), degrade.DetectorAugment(p_blur=1, p_jpeg=1,
                                                                                                    p_crop=1, p_flip=1)):
        rng = np.random.default_rng(3)
        augment(image, rng)
        after.append(rng.random())
    assert after[0] == after[1]


def test_detector_augment_jpeg_quality_range_includes_both_ends():
    image = (_smooth(32, 32) * 255).round().astype(np.uint8)
    by_quality = {degrade.jpeg(image, q).tobytes(): q for q in range(28, 35)}
    assert len(by_quality) == 7  # each quality decodes differently, so the output names it
    augment = degrade.DetectorAugment(p_blur=0, p_jpeg=1, jpeg_quality=(30, 32), p_flip=0)
    seen = {by_quality[augment(image, np.random.default_rng(seed)).tobytes()] for seed in range(60)}
    assert seen == {30, 31, 32}
    with pytest.raises(ConfigError, match="p_jpeg"):
        degrade.DetectorAugment(p_jpeg=1.5)


def test_detector_augment_in_a_grain_pipeline_reproduces_by_seed():
    images = [{"image": _smooth(16, 16) * (0.5 + 0.1 * i), "label": i % 2} for i in range(6)]
    augment = degrade.DetectorAugment(p_blur=0.5, p_jpeg=0.5)
    run = lambda seed: list(grain.MapDataset.source(images).seed(seed).random_map(augment))  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["label"] == b["label"]
    assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(first, other))
