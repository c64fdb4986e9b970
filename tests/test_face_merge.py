"""Merging swapped faces into frames (data.faces.merge): exact background, mask units, colour matching.

The references are independent of the module: a face's region in the frame is the hull polygon mapped
by the inverse alignment computed here with np.linalg.inv and rasterised with cv2.fillPoly; mask edges
are measured against the documented kernel sizes; colour statistics against the transfers' formulas.
"""
import chex
import cv2
import numpy as np
import pytest

from data import augment
from data.faces import merge
from zoo.errors import ConfigError

S = 64


class Face:
    """A face as the merge needs it, built from a matrix and a crop-space hull polygon."""

    def __init__(self, frame: np.ndarray, matrix: np.ndarray, polygon: np.ndarray, size: int = S):
        self.matrix = matrix
        self.image = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        self.mask = np.zeros((size, size, 1), np.uint8)
        cv2.fillPoly(self.mask, [np.round(polygon * 16).astype(np.int32)], 255, shift=4)
        self.polygon = polygon


def similarity(centre, scale: float, angle: float, size: int = S) -> np.ndarray:
    """Frame -> crop: rotate by `angle`, scale by `scale` (crop px per frame px), `centre` to the crop's centre."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0]])
    matrix[:, 2] = (size - 1) / 2 - matrix[:, :2] @ np.asarray(centre, float)
    return matrix


def smooth_frame(rng, height=240, width=320) -> np.ndarray:
    """A frame with structure at every scale but no saturated pixels: noise blurred, then scaled into 30..220."""
    noise = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    image = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (image - image.min()) / (image.max() - image.min())
    return np.rint(30 + 190 * image).astype(np.uint8)


def face_polygon(size: int = S) -> np.ndarray:
    """An irregular convex face outline in crop pixels, touching nothing."""
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([size / 2 + 0.30 * size * np.cos(t), size / 2 + 0.36 * size * np.sin(t) + 2], axis=1)


def polygon_in_frame(face: Face, shape) -> np.ndarray:
    """The hull polygon mapped into the frame by the inverse alignment (np.linalg.inv), rasterised: bool [H, W]."""
    forward = np.vstack([face.matrix, [0, 0, 1]])
    points = np.c_[face.polygon, np.ones(len(face.polygon))] @ np.linalg.inv(forward).T
    region = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(region, [np.round(points[:, :2] * 16).astype(np.int32)], 1, shift=4)
    return region.astype(bool)


def grown(region: np.ndarray, pixels: float) -> np.ndarray:
    """`region` dilated (pixels > 0) or eroded (pixels < 0) by a disk of that radius in frame pixels."""
    radius = int(np.ceil(abs(pixels)))
    if radius == 0:
        return region
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    op = cv2.dilate if pixels > 0 else cv2.erode
    return op(region.astype(np.uint8), disk).astype(bool)


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    frame = smooth_frame(rng)
    face = Face(frame, similarity((150, 110), 0.45, 0.3), face_polygon())
    swapped = rng.random((1, S, S, 3)).astype(np.float32)
    return frame, face, swapped


@pytest.mark.parametrize("blend", merge.BLEND_MODES)
@pytest.mark.parametrize("erode, blur", [(0, 0), (24, 40), (-40, 16)])
def test_pixels_outside_the_dilated_mask_are_the_input_bytes(scene, blend, erode, blur):
    frame, face, swapped = scene
    options = merge.MergeOptions(mask="hull", erode=erode, blur=blur, color="none", blend=blend)
    merged, mask = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    chex.assert_shape(mask, frame.shape[:2])
    assert merged.dtype == np.uint8 and merged.shape == frame.shape
    # Documented reach of the mask beyond the hull: a dilation moves the edge -erode/2 sub-res px, the blur
    # fades over blur/2 more; one unit is 1 / (4 s) frame px. Slack: 3 crop px (1 / s frame px each) for the
    # hull's rasterisation in the crop (fillPoly draws the outline; measured 1.9 px with upsampling, 2.6 with
    # a dilation) and 2 frame px for the warp's bilinear sampling and the reference's own rasterisation.
    unit = 1 / (merge.MASK_SUBRES * merge.crop_scale(face.matrix))
    hull = polygon_in_frame(face, frame.shape)
    slack = 3 * merge.MASK_SUBRES * unit + 2
    outside = ~grown(hull, (max(-erode, 0) / 2 + blur / 2) * unit + slack)
    np.testing.assert_array_equal(merged[outside], frame[outside])
    np.testing.assert_array_equal(merged[mask == 0], frame[mask == 0])
    assert (mask[outside] == 0).all()
    # ...and the face did go in: well inside the hull (past erosion and fade) nearly every pixel changed.
    core = grown(hull, -((max(erode, 0) / 2 + blur / 2) * unit + slack))
    assert core.sum() > 500
    assert (merged[core] != frame[core]).any(axis=-1).mean() > 0.95


def test_a_frame_without_faces_comes_back_unchanged(scene):
    frame, _, _ = scene
    merged, mask = merge.merge_frame(frame, [], np.zeros((0, S, S, 3)), np.zeros((0, S, S, 1)), merge.MergeOptions())
    np.testing.assert_array_equal(merged, frame)
    assert not mask.any()


def test_merging_the_destination_face_back_reproduces_the_frame(scene):
    """An identity swap, at a crop as fine as the frame: only bilinear resampling error remains."""
    frame, _, _ = scene
    face = Face(frame, similarity((150, 110), 1.0, 0.3), face_polygon())
    swapped = face.image[None].astype(np.float32) / 255
    options = merge.MergeOptions(mask="hull", blur=16, color="none")
    merged, mask = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    inside = mask > 0.5
    assert inside.sum() > 1000
    error = merged[inside].astype(float) - frame[inside]
    psnr = 10 * np.log10(255**2 / np.mean(error**2))
    assert psnr > 35, psnr


def test_two_faces_are_both_merged_and_the_mask_is_their_union(scene):
    frame, face, swapped = scene
    other = Face(frame, similarity((260, 170), 0.8, -0.2), face_polygon())
    options = merge.MergeOptions(mask="hull", color="none")
    both, mask = merge.merge_frame(frame, [face, other], np.concatenate([swapped, swapped]),
                                   np.ones((2, S, S, 1), np.float32), options)
    _, first = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    _, second = merge.merge_frame(frame, [other], swapped, np.ones((1, S, S, 1), np.float32), options)
    np.testing.assert_array_equal(mask, np.maximum(first, second))
    for region in (first > 0.99, second > 0.99):
        assert (both[region] != frame[region]).any(axis=-1).mean() > 0.95


def test_mask_modes_pick_the_predicted_mask_the_hull_or_their_product():
    rng = np.random.default_rng(1)
    predicted = rng.random((S, S, 1)).astype(np.float32)
    hull = (rng.random((S, S, 1)) > 0.5).astype(np.uint8) * 255
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "predicted"), predicted[..., 0])
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "hull"), hull[..., 0] / 255)
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "intersect"), predicted[..., 0] * (hull[..., 0] > 0))


def _radius(mask: np.ndarray) -> float:
    """Radius of a disk from the area where the mask is at least 0.5."""
    return float(np.sqrt((mask >= 0.5).sum() / np.pi))


@pytest.mark.parametrize("erode", [8, 40, -24])
def test_erode_moves_the_edge_by_half_its_kernel_at_four_times_the_crop(erode):
    disk = np.zeros((S, S), np.float32)
    cv2.circle(disk, (S // 2, S // 2), 18, 1.0, -1)
    base = _radius(merge.blend_mask(disk))
    eroded = _radius(merge.blend_mask(disk, erode=erode))
    # An elliptical kernel `erode` px wide: the edge moves erode / 2 (the kernel's radius) at the sub-resolution.
    assert eroded == pytest.approx(base - erode / 2, abs=1.0)


def test_blur_is_a_gaussian_of_the_given_kernel_width():
    half = np.zeros((S, S), np.float32)
    half[:, : S // 2] = 1
    blur = 41
    profile = merge.blend_mask(half, blur=blur)[S * 2, :]
    # OpenCV's sigma for a k-tap kernel, plus the bilinear 4x upsampling's ramp (uniform, width 4: var 4/3).
    sigma = np.hypot(0.3 * ((blur - 1) / 2 - 1) + 0.8, np.sqrt(4 / 3))
    x = np.arange(profile.size)
    ramp = (profile > 1e-4) & (profile < 1 - 1e-4) & (np.abs(x - 2 * S) < 60)  # the falling edge, inverted
    width = np.interp(0.1, profile[ramp][::-1], x[ramp][::-1]) - np.interp(0.9, profile[ramp][::-1], x[ramp][::-1])
    assert width == pytest.approx(2 * 1.2816 * sigma, rel=0.08)
    assert profile[0] < 1e-2, "the fade must end inside the crop, not be cut at its edge"


def test_scale_matrix_keeps_pixel_centres():
    """A crop sampled at 4x through scale_matrix, area-averaged back, equals the plain crop; a naive 4*M does not."""
    frame = smooth_frame(np.random.default_rng(2)).astype(np.float32)
    matrix = similarity((150, 110), 0.9, 0.1)
    plain = cv2.warpAffine(frame, matrix, (S, S), flags=cv2.INTER_LINEAR)

    def error(big_matrix):
        big = cv2.warpAffine(frame, big_matrix, (4 * S, 4 * S), flags=cv2.INTER_LINEAR)
        return np.abs(cv2.resize(big, (S, S), interpolation=cv2.INTER_AREA) - plain)[4:-4, 4:-4].mean()

    assert error(merge.scale_matrix(matrix, 4)) < 0.5 * error(4 * matrix)
    assert merge.crop_scale(matrix) == pytest.approx(0.9)


def _lab_mean(image, region):
    return augment.srgb_to_lab(np.asarray(image, np.float64)[region] / (255 if image.dtype == np.uint8 else 1)).mean(0)


@pytest.fixture
def tinted():
    """A destination crop and a swapped face of the same content with another colour cast."""
    rng = np.random.default_rng(3)
    target = smooth_frame(rng, S, S)
    face = np.clip(target.astype(np.float32) / 255 * np.array([0.7, 0.9, 1.2]) + [0.1, -0.05, 0.0], 0, 1)
    region = np.zeros((S, S), bool)
    region[10:54, 14:50] = True
    return face.astype(np.float32), target, region


def test_rct_sets_the_face_lab_mean_to_the_destination(tinted):
    face, target, region = tinted
    out = merge.match_color(face, target, region, "rct")
    assert np.abs(_lab_mean(face, region) - _lab_mean(target, region)).max() > 5
    np.testing.assert_allclose(_lab_mean(out, region), _lab_mean(target, region), atol=0.5)


def test_lct_sets_the_face_rgb_mean_to_the_destination(tinted):
    face, target, region = tinted
    out = merge.match_color(face, target, region, "lct")
    np.testing.assert_allclose(out[region].mean(0), target[region].mean(0) / 255, atol=2e-3)


def test_sot_moves_the_mean_towards_the_destination_and_none_keeps_the_face(tinted):
    face, target, region = tinted
    before = np.abs(face[region].mean(0) - target[region].mean(0) / 255).sum()
    after = np.abs(merge.match_color(face, target, region, "sot")[region].mean(0) - target[region].mean(0) / 255)
    assert after.sum() < 0.3 * before
    np.testing.assert_array_equal(merge.match_color(face, target, region, "none"), face)


def test_colour_statistics_come_from_inside_the_face_only(tinted):
    """Pixels outside the region (here saturated red) must not pull the match."""
    face, target, region = tinted
    target = target.copy()
    target[~region] = (255, 0, 0)
    out = merge.match_color(face, target, region, "lct")
    np.testing.assert_allclose(out[region].mean(0), target[region].mean(0) / 255, atol=2e-3)


@pytest.mark.parametrize("field, value", [("mask", "xseg"), ("color", "idt"), ("blend", "poisson"),
                                          ("erode", 401), ("blur", -1)])
def test_bad_options_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        merge.MergeOptions(**{field: value})
