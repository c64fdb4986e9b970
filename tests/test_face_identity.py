"""Face-swap identity and expression metrics: hand-computed numpy cases, then dlib on real GRID frames."""
import sys

import numpy as np
import pytest

from data.faces import dlib_models
from train.metrics import face_identity as fi

GRID_VIDEOS = ("bbaf2n.mpg", "lbax4n.mpg", "lrwp9a.mpg")
FRAMES = (0, 25, 50, 74)
SAME_PERSON_L2 = 0.6


def _face(rng: np.random.Generator, inter_ocular: float = 10.0) -> np.ndarray:
    """Random 68 points whose outer eye corners sit inter_ocular apart on a horizontal line."""
    points = rng.uniform(0, 100, size=(68, 2))
    points[36], points[45] = (20.0, 40.0), (20.0 + inter_ocular, 40.0)
    return points


# ---------------------------------------------------------------- embedding distances


def test_cosine_orthogonal_identical_opposite():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 2.0]])
    b = np.array([[0.0, 5.0], [6.0, 8.0], [-2.0, -4.0]])
    np.testing.assert_allclose(fi.cosine_similarity(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def test_cosine_broadcasts_a_single_reference_and_rejects_zero():
    rows = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(fi.cosine_similarity(rows, [1.0, 1.0]), [2**-0.5, 2**-0.5])
    with pytest.raises(ValueError, match="zero vector"):
        fi.cosine_similarity(rows, [0.0, 0.0])


def test_l2_rowwise():
    np.testing.assert_allclose(fi.l2_distance([[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]]), [5.0, 0.0])


def test_identity_scores_hand_computed():
    target, source = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    swaps = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.6, 0.8]])
    s = fi.identity_scores(swaps, target, source)
    np.testing.assert_allclose(s["target_cosine"], (1 + 0 + 1 + 0.6) / 4)
    np.testing.assert_allclose(s["source_cosine"], (0 + 1 + 0 + 0.8) / 4)
    np.testing.assert_allclose(s["target_l2"], (0 + 2**0.5 + 1 + 0.8**0.5) / 4)
    np.testing.assert_allclose(s["source_l2"], (2**0.5 + 0 + 5**0.5 + 0.4**0.5) / 4)
    assert s["closer_to_target"] == 0.5
    per_swap = fi.identity_scores(swaps, np.tile(target, (4, 1)), np.tile(source, (4, 1)))
    assert per_swap == pytest.approx(s)
    with pytest.raises(ValueError, match="target_ref"):
        fi.identity_scores(swaps, np.zeros((3, 2)), source)


def test_retrieval_obvious_clusters_and_swapped_labels():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 10
    gallery = np.repeat(centres, 4, axis=0) + rng.normal(0, 0.1, (12, 8))
    gallery_labels = np.repeat(["ann", "bob", "cat"], 4)
    queries = np.repeat(centres, 2, axis=0) + rng.normal(0, 0.1, (6, 8))
    query_labels = np.repeat(["ann", "bob", "cat"], 2)
    assert fi.retrieval_accuracy(queries, query_labels, gallery, gallery_labels) == 1.0
    shifted = np.roll(query_labels, 2)
    assert fi.retrieval_accuracy(queries, shifted, gallery, gallery_labels) == 0.0
    assert fi.retrieval_accuracy(queries[:4], [0, 0, 1, 2], gallery, np.repeat([0, 1, 2], 4)) == 0.75


def test_retrieval_uses_centroids_not_nearest_neighbour():
    gallery = np.array([[0.0], [10.0], [4.0]])
    labels = np.array([0, 0, 1])
    # 5.5 lies nearest to the gallery point 4 (label 1) but nearest to label 0's centroid 5.
    assert fi.retrieval_accuracy([[5.5], [3.0]], [0, 1], gallery, labels) == 1.0
    assert fi.retrieval_accuracy([[5.5]], [1], gallery, labels) == 0.0
    with pytest.raises(ValueError, match=r"\[7\] have no gallery"):
        fi.retrieval_accuracy([[0.0]], [7], gallery, labels)


# ---------------------------------------------------------------- expression error


def test_expression_error_zero_for_identical_and_translation_invariant():
    rng = np.random.default_rng(1)
    src = np.stack([_face(rng) for _ in range(3)])
    np.testing.assert_array_equal(fi.expression_error(src, src), np.zeros(3))
    moved = src + np.array([7.0, -3.0])
    np.testing.assert_allclose(fi.expression_error(src, moved), 0.0, atol=1e-12)
    np.testing.assert_allclose(fi.expression_error(src, moved, center=False), 7.6157731 / 10.0, rtol=1e-6)


def test_expression_error_hand_built_case():
    src = _face(np.random.default_rng(2), inter_ocular=10.0)
    swap = src.copy()
    swap[60] += (3.0, 4.0)
    # The moved point keeps 31/32 of its 5 px offset, the other 31 points shift by 5/32 each.
    expected_centred = (5 * 31 / 32 + 31 * 5 / 32) / 32 / 10
    np.testing.assert_allclose(fi.expression_error(src, swap), [expected_centred], rtol=1e-12)
    np.testing.assert_allclose(fi.expression_error(src, swap, center=False), [5 / 32 / 10], rtol=1e-12)
    swap[10] += 50.0
    np.testing.assert_allclose(fi.expression_error(src, swap), [expected_centred], rtol=1e-12)


def test_expression_error_scales_inversely_with_inter_ocular_distance():
    rng = np.random.default_rng(3)
    src = _face(rng)
    swap = src + rng.normal(0, 1.0, src.shape)
    base = fi.expression_error(src, swap)
    np.testing.assert_allclose(fi.expression_error(src * 2, swap * 2), base, rtol=1e-12)
    big = src * 2
    np.testing.assert_allclose(fi.expression_error(big, big + (swap - src)), base / 2, rtol=1e-12)


def test_expression_error_rejects_bad_shapes():
    with pytest.raises(ValueError, match="68-point"):
        fi.expression_error(np.zeros((2, 5, 2)), np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        fi.expression_error(np.zeros((2, 68, 2)), np.zeros((1, 68, 2)))
    with pytest.raises(ValueError, match="coincident outer eye corners"):
        fi.expression_error(np.zeros((68, 2)), np.zeros((68, 2)))


# ---------------------------------------------------------------- dlib models


def test_missing_dlib_names_the_install_command(monkeypatch):
    dlib_models.load_models.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)
    try:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[faces\]'"):
            dlib_models.FaceAnalyzer()
    finally:
        dlib_models.load_models.cache_clear()


@pytest.fixture(scope="module")
def grid(shared_data, analyzer) -> dict[str, dict[str, np.ndarray]]:
    """Per GRID speaker: a few decoded frames (in memory only), their largest face box, landmarks and embedding."""
    import imageio.v3 as iio

    paths = [shared_data / "grid" / name for name in GRID_VIDEOS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"GRID videos not found: {', '.join(missing)}")
    out = {}
    for path in paths:
        frames = np.stack([np.ascontiguousarray(iio.imread(path, index=i)) for i in FRAMES])
        boxes = []
        for i, frame in zip(FRAMES, frames):
            box = analyzer.largest_face(frame)
            assert box is not None, f"no face found in {path.name} frame {i}"
            boxes.append(box)
        boxes = np.stack(boxes)
        out[path.stem] = {
            "frames": frames,
            "boxes": boxes,
            "landmarks": np.stack([analyzer.landmarks(f, b) for f, b in zip(frames, boxes)]),
            "embeddings": analyzer.embeddings(list(frames), list(boxes)),
        }
    return out


def test_one_face_per_frame_with_sane_boxes(grid, analyzer):
    for speaker, d in grid.items():
        frame = d["frames"][0]
        assert len(analyzer.detect(frame)) == 1, speaker
        assert d["frames"].shape[1:] == (288, 360, 3)
        left, top, right, bottom = d["boxes"].T
        assert np.all(right - left > 50) and np.all(bottom - top > 50), speaker


def test_embeddings_separate_speakers_at_dlibs_threshold(grid):
    names = list(grid)
    for name in names:
        emb = grid[name]["embeddings"]
        assert emb.shape == (len(FRAMES), 128) and emb.dtype == np.float32
        same = fi.l2_distance(emb[:, None], emb[None])
        assert same.max() < SAME_PERSON_L2, (name, same.max())
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cross = fi.l2_distance(grid[a]["embeddings"][:, None], grid[b]["embeddings"][None])
            assert cross.min() > SAME_PERSON_L2, (a, b, cross.min())


def test_retrieval_of_held_out_frames_is_perfect(grid):
    names = list(grid)
    gallery = np.concatenate([grid[n]["embeddings"][:2] for n in names])
    queries = np.concatenate([grid[n]["embeddings"][2:] for n in names])
    gallery_labels = np.repeat(names, 2)
    query_labels = np.repeat(names, len(FRAMES) - 2)
    assert fi.retrieval_accuracy(queries, query_labels, gallery, gallery_labels) == 1.0


def test_identity_scores_prefer_own_speaker(grid):
    a, b = list(grid)[:2]
    swaps = grid[a]["embeddings"][2:]
    s = fi.identity_scores(swaps, grid[a]["embeddings"][:2].mean(0), grid[b]["embeddings"][:2].mean(0))
    assert s["closer_to_target"] == 1.0
    assert s["target_l2"] < SAME_PERSON_L2 < s["source_l2"]
    assert s["target_cosine"] > s["source_cosine"]


def test_landmarks_inside_box_and_eyes_above_mouth(grid):
    for speaker, d in grid.items():
        marks, boxes = d["landmarks"], d["boxes"]
        assert marks.shape == (len(FRAMES), 68, 2) and marks.dtype == np.float32
        size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        margin = 0.3 * size  # HOG boxes stop near the mouth; an open jaw's chin falls ~20% of the box below
        assert np.all(marks >= boxes[:, None, :2] - margin), speaker
        assert np.all(marks <= boxes[:, None, 2:] + margin), speaker
        eyes_y = marks[:, fi.EYES, 1].mean(axis=1)
        mouth_y = marks[:, fi.MOUTH, 1].mean(axis=1)
        assert np.all(eyes_y + 0.15 * size[:, 0, 1] < mouth_y), speaker
        assert np.all(marks[:, 36, 0] < marks[:, 45, 0]), speaker


def test_expression_error_on_real_frames(grid):
    for speaker, d in grid.items():
        marks = d["landmarks"]
        np.testing.assert_array_equal(fi.expression_error(marks, marks), np.zeros(len(FRAMES)))
        err = fi.expression_error(marks[:-1], marks[1:])
        assert np.all(err > 0) and np.all(err < 0.5), (speaker, err)


def test_whole_image_box_on_a_tight_crop_matches_the_detected_box(grid, analyzer):
    """box=None on a crop to the detected box gives nearly the same points and identity (0.3-1.5 px, L2 0.11-0.17)."""
    d = grid[GRID_VIDEOS[0].removesuffix(".mpg")]
    frame, (left, top, right, bottom) = d["frames"][0], d["boxes"][0]
    crop = np.ascontiguousarray(frame[top : bottom + 1, left : right + 1])
    shifted = analyzer.landmarks(crop) + np.array([left, top], dtype=np.float32)
    assert np.abs(shifted - d["landmarks"][0]).mean() < 3.0
    assert fi.l2_distance(analyzer.embedding(crop), d["embeddings"][0]) < 0.3


def test_inputs_are_validated(analyzer):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        analyzer.detect(image.astype(np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        analyzer.landmarks(image[..., 0])
    with pytest.raises(ValueError, match="ascontiguousarray"):
        analyzer.embedding(image[:, ::-1])
    with pytest.raises(ValueError, match="left < right"):
        analyzer.landmarks(image, (10, 10, 5, 20))
    with pytest.raises(ValueError, match=r"images\[1\]"):
        analyzer.embeddings([image, image.astype(np.int16)])
    assert analyzer.detect(image).shape == (0, 4)
    assert analyzer.largest_face(image) is None
