"""Resizing to a config's resolution."""
import numpy as np
import pytest

from data.transforms import Resize, center_crop_resize


def test_center_crop_resize_shapes_and_content():
    image = np.zeros((218, 178, 3), np.uint8)
    image[20:198, :, 0] = 255
    out = center_crop_resize(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[..., 0].min() > 240, "the centre crop keeps only the red band"
    grey = center_crop_resize(np.full((30, 40, 1), 7, np.uint8), 16)
    assert grey.shape == (16, 16, 1) and (grey == 7).all()


def test_same_size_square_is_unchanged_and_resize_keeps_other_fields():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop_resize(image, 32), image)
    example = Resize(16)({"image": image, "label": np.int64(3)})
    assert example["image"].shape == (16, 16, 3) and example["label"] == 3
    with pytest.raises(ValueError, match="positive"):
        center_crop_resize(image, 0)


def test_resized_source_view():
    from data.sources import get_source
    from data.transforms import Resized

    view = Resized(get_source("digits", "test"), 16)
    assert len(view) == 297 and view.info.image_shape == (16, 16, 1)
    assert view[5]["image"].shape == (16, 16, 1)
