"""Face alignment: Umeyama against a closed-form least-squares solve, the template, warps and masks against
independent geometry (blob centroids, a scipy hull filled by scikit-image), on constructed and real GRID landmarks."""
import json

import chex
import numpy as np
import pytest
import scipy.spatial
from skimage.draw import polygon as fill_polygon

from data.faces import align, masks, template

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is part of the faces extra: pip install -e '.[faces]'")


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """A similarity is linear in (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty. Solve it directly."""
    n = len(src)
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], axis=1)
    rows[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], axis=1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


# ---------------------------------------------------------------- Umeyama


@pytest.mark.parametrize("angle,scale", [(0.0, 1.0), (0.3, 2.5), (-2.9, 0.2), (np.pi, 7.0)])
def test_umeyama_recovers_a_known_similarity_exactly(angle, scale):
    rng = np.random.default_rng(0)
    src = rng.uniform(-50, 200, size=(68, 2))
    truth = _similarity(angle, scale, (13.5, -40.25))
    dst = align.transform_points(src, truth)
    np.testing.assert_allclose(align.umeyama(src, dst), truth, atol=1e-9)


def test_umeyama_is_the_least_squares_similarity_on_noisy_points():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(31, 2))
    dst = align.transform_points(src, _similarity(0.7, 1.3, (5, 9))) + rng.normal(0, 2.0, size=(31, 2))
    np.testing.assert_allclose(align.umeyama(src, dst), _least_squares_similarity(src, dst), atol=1e-9)


def test_umeyama_never_reflects():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, size=(20, 2))
    mirrored = src * np.array([-1.0, 1.0])
    m = align.umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        align.umeyama(np.ones((5, 2)), src[:5])
    with pytest.raises(ValueError, match="matching"):
        align.umeyama(src, src[:5])


def test_invert_and_transform_points_against_homogeneous_matrices():
    m = _similarity(0.4, 1.7, (3.0, -8.0))
    full = np.vstack([m, [0, 0, 1]])
    np.testing.assert_allclose(np.vstack([align.invert(m), [0, 0, 1]]), np.linalg.inv(full), atol=1e-12)
    p = np.array([[1.0, 2.0], [-5.0, 7.5]])
    np.testing.assert_allclose(align.transform_points(p, m), (full @ np.c_[p, np.ones(2)].T).T[:, :2], atol=1e-12)


# ---------------------------------------------------------------- the template


@pytest.mark.parametrize("face_type", align.FACE_TYPES)
@pytest.mark.parametrize("size", [64, 256, 1000])
def test_template_maps_to_itself(face_type, size):
    chex.assert_shape(align.template(face_type), (68, 2))
    m = align.alignment_matrix(align.template(face_type) * size, face_type, size)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_committed_template_is_an_upright_symmetric_unit_face():
    shape = template.load()
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    np.testing.assert_allclose(lo + hi, 0, atol=1e-7)
    assert max(hi - lo) == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose((shape * [-1, 1])[template.MIRROR_68], shape, atol=1e-7)
    left, right = shape[36:42].mean(axis=0), shape[42:48].mean(axis=0)
    assert left[1] == pytest.approx(right[1], abs=1e-7) and left[0] < right[0]
    # top to bottom: brows, eyes, nose tip, mouth, chin
    assert shape[19, 1] < left[1] < shape[30, 1] < shape[51, 1] < shape[57, 1] < shape[8, 1]
    record = json.loads(template.TEMPLATE_FILE.read_text())
    assert record["faces"] > 400 and "grid" in record["built_from"] and "olivetti" in record["built_from"]


@pytest.mark.parametrize("face_type", align.FACE_TYPES)
def test_every_landmark_of_the_template_lies_inside_the_crop(face_type):
    t = align.template(face_type)
    assert t.min() > 0.05 and t.max() < 0.95
    # larger face types show the same face smaller
    width = t[16, 0] - t[0, 0]
    assert {"full_face": 0.8, "whole_face": 0.625, "head": 1 / 2.2}[face_type] == pytest.approx(width, abs=1e-6)


def test_procrustes_mean_recovers_a_shape_seen_through_random_similarities():
    rng = np.random.default_rng(3)
    base = template.load() + rng.normal(0, 0.01, size=(68, 2))
    shapes = np.stack([align.transform_points(base, _similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 3),
                                                                rng.uniform(-100, 100, 2))) for _ in range(12)])
    mean = template.procrustes_mean(shapes)
    _, _, disparity = scipy.spatial.procrustes(base, mean)  # scipy's own pairwise Procrustes
    assert disparity < 1e-12
    sizes = shapes.std(axis=1, keepdims=True).mean(axis=2, keepdims=True)  # each shape's own spread
    noisy = shapes + rng.normal(0, 0.02, size=shapes.shape) * sizes
    _, _, noisy_disparity = scipy.spatial.procrustes(base, template.procrustes_mean(noisy))
    single = np.mean([scipy.spatial.procrustes(base, s)[2] for s in noisy])
    assert noisy_disparity < single / 5  # averaging 12 aligned shapes beats any one of them


def test_canonical_makes_a_tilted_shape_upright_symmetric_and_unit_sized():
    shape = align.transform_points(template.load(), _similarity(0.5, 40.0, (100.0, 60.0)))
    np.testing.assert_allclose(template.canonical(shape), template.load(), atol=1e-7)
    upside_down = align.transform_points(template.load(), _similarity(np.pi - 0.1, 3.0, (0.0, 0.0)))
    np.testing.assert_allclose(template.canonical(upside_down), template.load(), atol=1e-7)


@pytest.mark.slow  # about 30 s: dlib on 150 GRID frames and 400 Olivetti faces
def test_template_file_is_rebuilt_exactly_from_its_recorded_inputs(shared_data, tmp_path):
    record = template.build(shared_data, tmp_path / "t.json", every=3)
    np.testing.assert_allclose(record["mean_shape"], template.load(), atol=1e-7)


# ---------------------------------------------------------------- warps: pixels agree with transform_points


def _blobs(points: np.ndarray, shape: tuple[int, int], sigma: float = 1.2) -> np.ndarray:
    """An image with a Gaussian blob centred (sub-pixel) on each point, for locating points after a warp."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    image = np.zeros(shape)
    for x, y in points:
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.clip(image * 250, 0, 255)


def _centroid(image: np.ndarray, near: np.ndarray, radius: int = 4) -> np.ndarray:
    x0, y0 = np.round(near).astype(int)
    patch = image[y0 - radius: y0 + radius + 1, x0 - radius: x0 + radius + 1].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius: y0 + radius + 1, x0 - radius: x0 + radius + 1]
    return np.array([(xx * patch).sum(), (yy * patch).sum()]) / patch.sum()


def test_alignment_round_trip_through_pixels_within_half_a_pixel():
    """Landmark blobs drawn in a frame, warped into the crop, found there and mapped back: within 0.5 px."""
    rng = np.random.default_rng(4)
    size = 256
    truth = _similarity(0.25, 180.0, (150.0, 110.0))  # a tilted face about 180 px wide in a 400 x 320 frame
    landmarks = align.transform_points(template.load(), truth) + rng.normal(0, 1.0, (68, 2))
    points = landmarks[[36, 39, 42, 45, 30, 48, 54, 8]]  # well-separated ones: eye corners, nose, mouth, chin
    grey = _blobs(points, (320, 400))
    frame = np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
    m = align.alignment_matrix(landmarks, "whole_face", size)
    crop = align.warp_face(frame, m, size)
    predicted = align.transform_points(points, m)
    found = np.stack([_centroid(crop[..., 0], p) for p in predicted])
    assert np.abs(found - predicted).max() < 0.1  # measured 0.02; a half-pixel convention slip shows as 0.5
    back = align.transform_points(found, align.invert(m))
    assert np.linalg.norm(back - points, axis=1).max() < 0.5
    np.testing.assert_allclose(align.transform_points(predicted, align.invert(m)), points, atol=1e-9)


def test_warp_face_checks_its_inputs():
    with pytest.raises(ValueError, match="uint8"):
        align.warp_face(np.zeros((10, 10, 3), np.float32), np.eye(2, 3), 8)
    with pytest.raises(ValueError, match="face_type"):
        align.template("half_face")
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        align.alignment_matrix(np.zeros((5, 2)), "full_face", 64)


# ---------------------------------------------------------------- masks


def _hull_reference(points: np.ndarray, size: int) -> np.ndarray:
    """scipy's convex hull filled by scikit-image: an independent implementation of the hull mask."""
    hull = points[scipy.spatial.ConvexHull(points).vertices]
    out = np.zeros((size, size), bool)
    rr, cc = fill_polygon(hull[:, 1], hull[:, 0], (size, size))
    out[rr, cc] = True
    return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    shrunk = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return grown & ~shrunk


@pytest.mark.parametrize("size", [64, 256])
def test_full_face_hull_mask_matches_an_independent_polygon_fill(size):
    rng = np.random.default_rng(5)
    points = align.template("full_face") * size + rng.normal(0, size / 100, (68, 2))
    mask = masks.hull_mask(points, size, "full_face")
    chex.assert_shape(mask, (size, size, 1))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    reference = _hull_reference(points, size)
    differ = (mask[..., 0] > 0) != reference
    assert not np.any(differ & ~_boundary(reference)), "masks differ away from the hull's edge"
    assert differ.sum() < 0.05 * reference.sum()


@pytest.mark.parametrize("face_type", ["whole_face", "head"])
def test_forehead_extends_the_hull_above_the_brows(face_type):
    size = 256
    points = align.template(face_type) * size
    mask = masks.hull_mask(points, size, face_type)[..., 0] > 0
    plain = _hull_reference(points, size)
    brow_to_chin = points[8, 1] - points[17:27, 1].mean()
    column = mask[:, int(round(points[27, 0]))]
    top = np.argmax(column)
    lift = points[17:27, 1].min() - top
    assert 0.35 * brow_to_chin < lift < 0.5 * brow_to_chin
    assert top > 0, "the forehead must stay inside the crop"
    assert np.all(mask[plain]), "the extended mask must contain the plain hull"


def test_eyes_mouth_mask_covers_eyes_and_mouth_and_nothing_else():
    size = 256
    points = align.template("whole_face") * size
    em = masks.eyes_mouth_mask(points, size)[..., 0] > 0
    chex.assert_shape(masks.eyes_mouth_mask(points, size), (size, size, 1))
    at = lambda k: em[int(round(points[k, 1])), int(round(points[k, 0]))]
    assert all(at(k) for k in range(36, 68)), "every eye and mouth landmark is inside"
    assert not any(at(k) for k in [8, 30, 33, 0, 16, 19, 24]), "chin, nose, jaw and brows are outside"
    assert np.all(masks.hull_mask(points, size, "full_face")[..., 0][em] == 255), "em_mask <= the face hull"
    eye_width = np.linalg.norm(points[39] - points[36])
    above_eye = int(round(points[37:39, 1].min() - 0.15 * eye_width))
    assert em[above_eye, int(round(points[37:39, 0].mean()))], "the upper lid is inside"


def test_masks_reject_bad_landmarks():
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        masks.hull_mask(np.zeros((67, 2)), 64, "full_face")
    with pytest.raises(ValueError, match="NaN"):
        masks.eyes_mouth_mask(np.full((68, 2), np.nan), 64)


# ---------------------------------------------------------------- real faces


def test_alignment_of_real_grid_faces_puts_them_on_the_template(shared_data):
    import imageio.v2 as iio

    from data.faces.dlib_models import FaceAnalyzer

    analyzer = FaceAnalyzer()
    reader = iio.get_reader(shared_data / "grid" / "lbax4n.mpg", format="FFMPEG")
    for k in (0, 40):
        frame = np.ascontiguousarray(reader.get_data(k))
        landmarks = analyzer.landmarks(frame, analyzer.largest_face(frame))
        for face_type in align.FACE_TYPES:
            m = align.alignment_matrix(landmarks, face_type, 256)
            aligned = align.transform_points(landmarks, m)
            t = align.template(face_type) * 256
            residual = np.linalg.norm(aligned[align.ALIGN_POINTS] - t[align.ALIGN_POINTS], axis=1)
            assert residual.mean() < 0.03 * 256, (face_type, residual.mean())
            assert aligned.min() > 0 and aligned.max() < 256
            assert abs(np.degrees(np.arctan2(*(aligned[45] - aligned[36])[::-1]))) < 5  # eyes level
    reader.close()
