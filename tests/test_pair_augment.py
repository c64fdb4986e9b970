"""FOMM's pair augmentation: colour ops against per-pixel references, both frames changed alike, resumable draws."""
import colorsys

import numpy as np
import pytest

from data import pair_augment
from train import config as config_lib
from train.families import reenact as family_lib
from zoo.errors import ConfigError


def _frames(seed=0, shape=(2, 6, 5, 3)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_hsv_round_trip_matches_colorsys_per_pixel():
    x = _frames(1, (40, 3))
    x[:4] = [[0.2, 0.2, 0.2], [0, 0, 0], [1, 0, 0], [0.5, 0.5, 0.1]]  # grey, black, a primary, a tie of maxima
    hsv = pair_augment.rgb_to_hsv(x)
    np.testing.assert_allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in x], atol=1e-6)
    np.testing.assert_allclose(pair_augment.hsv_to_rgb(hsv), x, atol=1e-6)


def _reference(pixels, factors, order):
    """torchvision's four ops, one frame at a time, written out per pixel (colorsys for the hue)."""
    out = []
    for frame in pixels:
        x = frame.astype(np.float64)
        for op in order:
            luma = x @ [0.299, 0.587, 0.114]
            if op == 0:
                x = x * factors[0]
            elif op == 1:
                x = factors[1] * x + (1 - factors[1]) * luma.mean()
            elif op == 2:
                x = factors[2] * x + (1 - factors[2]) * luma[..., None]
            else:
                flat = [colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3)]
                x = np.array([colorsys.hsv_to_rgb((h + factors[3]) % 1.0, s, v) for h, s, v in flat]).reshape(x.shape)
            x = np.clip(x, 0, 1)
        out.append(x)
    return np.stack(out)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_jitter_equals_torchvisions_ops_in_the_drawn_order(order):
    pixels, factors = _frames(2), np.array([1.08, 0.93, 1.1, -0.07], np.float32)
    out = pair_augment.jitter(pixels, factors, np.array(order))
    np.testing.assert_allclose(out, _reference(pixels, factors, order), atol=2e-6)


def test_grey_frames_get_brightness_and_contrast_only():
    pixels = _frames(3, (2, 4, 4, 1))
    out = pair_augment.jitter(pixels, np.array([1.1, 0.9, 1.5, 0.3], np.float32), np.arange(4))
    expected = np.clip(np.clip(pixels * 1.1, 0, 1) * 0.9 + 0.1 * np.clip(pixels * 1.1, 0, 1).mean(axis=(1, 2, 3),
                                                                                                   keepdims=True), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _example(seed=0, same=False):
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    driving = source.copy() if same else rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    return {"source_image": source, "driving_image": driving, "video": np.int64(3), "source_frame": np.int64(1),
            "driving_frame": np.int64(4), "label": np.int64(7)}


def test_both_frames_change_alike_and_the_rest_passes_through():
    augment = pair_augment.PairAugment()
    mirrored = 0
    for seed in range(16):
        same = augment.random_map(_example(same=True), np.random.default_rng(seed))
        np.testing.assert_array_equal(same["source_image"], same["driving_image"])  # one draw for both frames
        example = _example(seed)
        out = augment.random_map(example, np.random.default_rng(seed))
        assert {k: out[k] for k in ("video", "source_frame", "driving_frame", "label")} == \
            {k: example[k] for k in ("video", "source_frame", "driving_frame", "label")}
        plain = pair_augment.PairAugment(jitter=()).random_map(example, np.random.default_rng(seed))
        flipped = np.array_equal(plain["source_image"], example["source_image"][:, ::-1])
        assert flipped or np.array_equal(plain["source_image"], example["source_image"])
        assert np.array_equal(plain["driving_image"], example["driving_image"][:, ::-1] if flipped
                              else example["driving_image"])
        mirrored += flipped
    assert 3 <= mirrored <= 13  # p = 0.5 of 16


def test_draws_do_not_depend_on_what_is_switched_on_and_repeat_for_a_seed():
    example = _example(5)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    pair_augment.PairAugment(horizontal_flip=False, jitter=()).random_map(example, rng_a)
    pair_augment.PairAugment().random_map(example, rng_b)
    assert rng_a.random() == rng_b.random()
    first = pair_augment.PairAugment().random_map(example, np.random.default_rng(4))
    again = pair_augment.PairAugment().random_map(example, np.random.default_rng(4))
    np.testing.assert_array_equal(first["driving_image"], again["driving_image"])
    off = pair_augment.PairAugment(horizontal_flip=False, jitter=(0, 0, 0, 0)).random_map(example, rng_a)
    np.testing.assert_array_equal(off["source_image"], example["source_image"])


@pytest.mark.parametrize("jitter", [(0.1, 0.1), (1.0, 0.1, 0.1, 0.1), (0.1, 0.1, 0.1, 0.6), (-0.1, 0, 0, 0)])
def test_bad_jitter_is_named_when_the_family_is_built(jitter):
    config = config_lib.load("configs/reenact_fomm_synthetic.py:smoke")
    config.reenact.jitter = jitter
    with pytest.raises(ConfigError, match=r"reenact.jitter=.*brightness, contrast, saturation, hue"):
        family_lib.make(config, (64, 64, 3))


def test_the_family_augments_unless_both_parts_are_off():
    config = config_lib.load("configs/reenact_fomm_synthetic.py:smoke")
    transform, none = family_lib.train_transforms(config.reenact, None, None)
    assert isinstance(transform, pair_augment.PairAugment) and none is None
    assert transform.jitter == (0.1, 0.1, 0.1, 0.1) and transform.horizontal_flip
    config.reenact.hflip, config.reenact.jitter = False, ()
    assert family_lib.train_transforms(config.reenact, None, None) == (None, None)
