"""Merge-quality metrics against independent computations: formulas on constructed clips, dlib on real GRID frames."""
import chex
import numpy as np
import pytest
from swap_stubs import IdentitySwap, WhiteSwap, export_stub

from train.metrics import merge as mm
from zoo.errors import ConfigError, DataError

DEST, OTHER = "bbaf2n.mpg", "lbax4n.mpg"
REFERENCE_FRAMES, HELD_OUT_FRAMES = (0, 12, 24), (50, 62, 74)
SAME_PERSON_L2 = 0.6


def _brute_force_outside(masks: np.ndarray, dilate: int) -> np.ndarray:
    """Pixels whose distance to every mask pixel of their frame exceeds dilate, by explicit pairwise distances."""
    t, h, w = masks.shape
    yy, xx = np.mgrid[:h, :w]
    out = np.ones(masks.shape, bool)
    for i in range(t):
        ys, xs = np.nonzero(masks[i])
        if len(ys):
            d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
            out[i] = d2.min(axis=-1) > dilate**2
    return out


def _random_masks(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """A blob per frame (a random rectangle plus scattered pixels), uint8 0/255, one frame left empty."""
    masks = np.zeros((t, h, w), np.uint8)
    for i in range(t - 1):
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        masks[i, top : top + rng.integers(2, h // 2), left : left + rng.integers(2, w // 2)] = 255
        masks[i][rng.random((h, w)) < 0.01] = 255
    return masks


# ---------------------------------------------------------------- background


def test_outside_mask_matches_pairwise_distances():
    rng = np.random.default_rng(0)
    masks = _random_masks(rng, 4, 20, 28)
    for dilate in (0, 1, 3, 7):
        np.testing.assert_array_equal(mm.outside_mask(masks, dilate), _brute_force_outside(masks > 0, dilate))
    np.testing.assert_array_equal(mm.outside_mask(masks[..., None] / 255.0, 2), _brute_force_outside(masks > 0, 2))
    assert mm.outside_mask(masks, 3)[-1].all()  # an empty mask leaves the whole frame as background


def test_background_psnr_of_a_known_perturbation_is_the_formula():
    rng = np.random.default_rng(1)
    dest = rng.integers(0, 200, (3, 24, 32, 3), dtype=np.uint8)
    masks = _random_masks(rng, 3, 24, 32)
    dilate = 3
    outside = _brute_force_outside(masks > 0, dilate)
    merged = dest.copy()
    near = ~outside
    merged[near] = rng.integers(0, 256, (near.sum(), 3), dtype=np.uint8)  # anything inside mask and margin is free
    chosen = rng.choice(np.flatnonzero(outside), size=17, replace=False)
    flat = merged.reshape(-1, 3)
    flat[chosen, 1] += 7
    got = mm.background_psnr(dest, merged, masks, dilate)
    mse = 17 * 7**2 / (outside.sum() * 3)
    assert got["background_psnr"] == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-12)
    assert got["background_max_abs"] == 7
    assert got["background_fraction"] == pytest.approx(outside.mean())


def test_background_psnr_exact_is_inf_and_fully_masked_is_nan():
    rng = np.random.default_rng(2)
    dest = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 6:9, 6:9] = 1
    merged = dest.copy()
    merged[:, 5:10, 5:10] = 0  # within sqrt(2) px of the mask
    assert mm.background_psnr(dest, merged, masks, dilate=2)["background_psnr"] == np.inf
    assert mm.background_psnr(dest, merged, masks, dilate=1)["background_psnr"] < 60
    assert np.isnan(mm.background_psnr(dest, merged, masks, dilate=30)["background_psnr"])


# ---------------------------------------------------------------- temporal stability


def test_static_clip_has_zero_change():
    frame = np.random.default_rng(3).integers(0, 256, (1, 12, 14, 3), dtype=np.uint8)
    clip = np.repeat(frame, 4, axis=0)
    masks = np.ones((4, 12, 14), np.uint8)
    got = mm.temporal_stability(clip, clip, masks)
    assert got["temporal_change_merged"] == 0 and got["temporal_change_dest"] == 0
    assert got["temporal_change_diff"] == 0 and np.isnan(got["temporal_change_ratio"])


def test_change_inside_the_region_only_ramps_give_ratio_and_difference():
    rng = np.random.default_rng(4)
    t, h, w = 5, 20, 24
    masks = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        masks[i, 4 + i : 10 + i, 5:15] = 255
    region = masks.any(axis=0)
    base = rng.integers(0, 100, (h, w, 3)).astype(np.uint8)
    steps = np.arange(t)[:, None, None, None]
    dest, merged = (base + steps).astype(np.uint8), (base + 3 * steps).astype(np.uint8)
    for clip in (dest, merged):
        clip[:, ~region] = rng.integers(0, 256, (t, (~region).sum(), 3))  # flicker outside every mask is ignored
    got = mm.temporal_stability(dest, merged, masks)
    assert got == pytest.approx({"temporal_change_merged": 3.0, "temporal_change_dest": 1.0,
                                 "temporal_change_ratio": 3.0, "temporal_change_diff": 2.0})


def test_frame_change_matches_a_loop_over_frame_pairs():
    rng = np.random.default_rng(5)
    clip = rng.integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)
    masks = _random_masks(rng, 4, 10, 12)
    total, count = 0.0, 0
    for a, b, ma, mb in zip(clip[:-1], clip[1:], masks[:-1], masks[1:]):
        for y, x in zip(*np.nonzero((ma > 0) | (mb > 0))):
            total += sum(abs(int(b[y, x, c]) - int(a[y, x, c])) for c in range(3))
            count += 3
    assert mm.frame_change(clip, masks) == pytest.approx(total / count, rel=1e-12)
    assert np.isnan(mm.frame_change(clip, np.zeros((4, 10, 12))))


# ---------------------------------------------------------------- landmarks and identity (numbers)


def test_landmark_error_of_a_known_displacement():
    rng = np.random.default_rng(6)
    dest = rng.uniform(0, 100, (3, 68, 2))
    dest[:, 36], dest[:, 45] = (10.0, 50.0), (60.0, 50.0)  # inter-ocular 50 px
    np.testing.assert_allclose(mm.landmark_error(dest, dest + (3.0, 4.0)), [0.1, 0.1, 0.1], rtol=1e-12)
    moved = dest.copy()
    moved[:, 48] += (0.0, 68 * 2.5)  # one point by 170 px: the mean over 68 points is 2.5 px
    np.testing.assert_allclose(mm.landmark_error(dest, moved), [0.05] * 3, rtol=1e-12)
    np.testing.assert_allclose(mm.landmark_error(2 * dest, 2 * moved), [0.05] * 3, rtol=1e-12)
    with pytest.raises(DataError, match="coincident"):
        mm.landmark_error(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))


def test_identity_metrics_hand_computed():
    src, tgt = np.array([0.0, 0.0]), np.array([4.0, 0.0])
    emb = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    got = mm.identity_metrics(emb, src, tgt)
    assert got["id_l2_source"] == pytest.approx((1 + 3 + 2 + 3) / 4)
    assert got["id_l2_target"] == pytest.approx((3 + 1 + 2 + 5) / 4)
    assert got["id_retrieval"] == 0.5  # the tie at x = 2 is not retrieved
    assert all(np.isnan(v) for v in mm.identity_metrics(np.zeros((0, 2)), src, tgt).values())


def test_bad_inputs_are_data_errors():
    clip = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="differ from dest_frames"):
        mm.background_psnr(clip, clip[:2], np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match="one mask per frame"):
        mm.background_psnr(clip, clip, np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="uint8 RGB clip"):
        mm.temporal_stability(clip.astype(np.float32), clip, np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match="at least 2 frames"):
        mm.frame_change(clip[:1], np.zeros((1, 8, 8)))
    with pytest.raises(DataError, match="dilate"):
        mm.outside_mask(np.zeros((3, 8, 8)), -1)
    with pytest.raises(DataError, match="target_centroid"):
        mm.identity_metrics(np.zeros((2, 4)), np.zeros(4), np.zeros(3))


# ---------------------------------------------------------------- dlib on real GRID frames


@pytest.fixture(scope="module")
def grid(shared_data) -> dict[str, np.ndarray]:
    """Two GRID speakers' videos decoded in memory (never written anywhere)."""
    import imageio.v3 as iio

    paths = {name: shared_data / "grid" / name for name in (DEST, OTHER)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.skip(f"GRID videos not found: {', '.join(missing)}")
    return {name: np.ascontiguousarray(iio.imread(path)) for name, path in paths.items()}


@pytest.fixture(scope="module")
def centroids(grid, analyzer) -> dict[str, np.ndarray]:
    """Each speaker's identity centroid from reference frames disjoint from the held-out ones."""
    return {name: mm.identity_centroid(frames[list(REFERENCE_FRAMES)], analyzer) for name, frames in grid.items()}


def _face_masks(frames: np.ndarray, analyzer) -> np.ndarray:
    """A blend mask per frame: the detected face box, as a merge would replace about that region."""
    masks = np.zeros(frames.shape[:3], np.uint8)
    for mask, frame in zip(masks, frames):
        left, top, right, bottom = analyzer.largest_face(frame)
        mask[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = 255
    return masks


def test_copy_of_the_destination_keeps_the_target_identity(grid, centroids, analyzer):
    dest = grid[DEST][list(HELD_OUT_FRAMES)]
    masks = _face_masks(dest, analyzer)
    got = mm.merge_metrics(dest, dest.copy(), masks, centroids[OTHER], centroids[DEST], analyzer)
    expected_l2 = {}
    for name in (DEST, OTHER):
        direct = [analyzer.embedding(f, analyzer.largest_face(f)) for f in dest]  # dlib called directly
        expected_l2[name] = np.mean(np.linalg.norm(np.asarray(direct, np.float64) - centroids[name], axis=1))
    assert got["id_l2_target"] == pytest.approx(expected_l2[DEST], rel=1e-6)
    assert got["id_l2_source"] == pytest.approx(expected_l2[OTHER], rel=1e-6)
    assert got["id_l2_target"] < SAME_PERSON_L2 < got["id_l2_source"]
    assert got["id_retrieval"] == 0.0
    assert got["detection_rate"] == 1.0 and got["dest_detection_rate"] == 1.0 and got["identity_frames"] == 3
    assert got["landmark_error"] == 0.0 and got["background_psnr"] == np.inf
    assert got["temporal_change_ratio"] == 1.0 and got["temporal_change_diff"] == 0.0
    assert all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in got.items())


def test_another_speakers_face_is_retrieved_as_the_source(grid, centroids, analyzer):
    dest, other = grid[DEST][list(HELD_OUT_FRAMES)], grid[OTHER][list(HELD_OUT_FRAMES)]
    masks = np.full(dest.shape[:3], 255, np.uint8)
    got = mm.merge_metrics(dest, other, masks, centroids[OTHER], centroids[DEST], analyzer)
    assert got["id_retrieval"] == 1.0
    assert got["id_l2_source"] < SAME_PERSON_L2 < got["id_l2_target"]
    assert np.isnan(got["background_psnr"]) and got["background_fraction"] == 0.0


@pytest.mark.parametrize("k", [2, 8])
def test_landmark_error_of_a_frame_shifted_by_k_pixels(grid, centroids, analyzer, k):
    dest = grid[DEST][list(HELD_OUT_FRAMES)]
    shifted = np.concatenate([np.repeat(dest[:, :, :1], k, axis=2), dest[:, :, :-k]], axis=2)
    chex.assert_equal_shape([dest, shifted])
    iod = mm.inter_ocular(np.stack([analyzer.landmarks(f, analyzer.largest_face(f)) for f in dest]))
    masks = _face_masks(dest, analyzer)
    got = mm.merge_metrics(dest, shifted, masks, centroids[OTHER], centroids[DEST], analyzer)
    # dlib places integer points, so each rounds on its own: measured within 0.2 px of k on average here.
    assert got["landmark_error"] == pytest.approx(np.mean(k / iod), abs=np.mean(0.5 / iod))
    assert got["detection_rate"] == 1.0 and got["id_retrieval"] == 0.0
    assert got["background_psnr"] < 40  # the shift moved background edges outside the mask too


def test_reference_frames_without_a_face_are_refused(analyzer):
    with pytest.raises(DataError, match="no face found"):
        mm.identity_centroid(np.zeros((2, 64, 64, 3), np.uint8), analyzer)



# ---------------------------------------------------------------- the benchmark, with a stand-in merge


def test_frame_ranges_and_merge_options_parse():
    from benchmarks import merge_quality as bench

    assert bench.parse_range("50:75") == slice(50, 75) and bench.parse_range(":10") == slice(None, 10)
    assert bench.parse_range(None) == slice(None)
    for bad in ("50", "a:b", "-1:5", "1:2:3"):
        with pytest.raises(ConfigError, match="frame range"):
            bench.parse_range(bad)
    assert bench.parse_options(["color=rct", "erode=20"]) == {"color": "rct", "erode": 20}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        bench.parse_options(["erode"])


def _run_benchmark(monkeypatch, tmp_path, argv, merge=None) -> dict:
    """benchmarks.merge_quality's main() on argv (`merge` standing in for train.merge if given); its JSON read back."""
    import json
    import sys

    from benchmarks import merge_quality as bench

    if merge is not None:
        monkeypatch.setattr(bench, "merge_clip", merge)
    out = tmp_path / "result.json"
    monkeypatch.setattr(sys, "argv", ["merge_quality", *argv, "--ref-count", "3", "--json", str(out)])
    bench.main()
    return json.loads(out.read_text())


def _grid_args(shared_data, dest_frames="72:75") -> list[str]:
    grid_dir = shared_data / "grid"
    if not (grid_dir / DEST).is_file() or not (grid_dir / OTHER).is_file():
        pytest.skip("GRID videos not found")
    return ["--dest", str(grid_dir / DEST), "--dest-frames", dest_frames, "--target-ref", str(grid_dir / DEST),
            "--target-frames", "0:40", "--source-ref", str(grid_dir / OTHER)]


def test_benchmark_scores_a_merge_the_copy_baseline_and_both_encoded(shared_data, analyzer, monkeypatch, tmp_path):
    from benchmarks import merge_quality as bench

    def grey_faces(model, clip, direction, options):
        """A stand-in merge that greys out each face box: a merge that lost the face."""
        masks = _face_masks(clip.frames, analyzer)
        merged = np.where(masks[..., None] > 0, np.uint8(128), clip.frames)
        return bench.Merged(merged, masks.astype(np.float32) / 255, {"stand_in": "grey box", **options})

    argv = ["--export", str(tmp_path / "unused.safetensors"), *_grid_args(shared_data), "--merge-option", "color=rct"]
    result = _run_benchmark(monkeypatch, tmp_path, argv, grey_faces)
    table = result["metrics"]
    assert result["dest"]["frames"] == "72:75" and result["target_ref"]["used"] == 3
    assert result["merge"] == {"stand_in": "grey box", "color": "rct"}
    assert set(table["frames"]) == {"merge", "copy", "merge_encoded", "copy_encoded"}
    assert table["detection_rate"] == {"merge": 0.0, "copy": 1.0, "merge_encoded": 0.0, "copy_encoded": 1.0}
    psnr = table["background_psnr"]
    assert psnr["merge"] == psnr["copy"] == np.inf
    assert 35 < psnr["copy_encoded"] < 70 and abs(psnr["merge_encoded"] - psnr["copy_encoded"]) < 1.0, psnr
    assert table["temporal_change_merged"]["merge"] == 0.0 < table["temporal_change_merged"]["copy"]
    assert table["id_retrieval"]["copy"] == 0.0 and np.isnan(table["id_retrieval"]["merge"])
    with pytest.raises(ConfigError, match="shares 10 frames"):
        _run_benchmark(monkeypatch, tmp_path, [*argv[:5], "30:75", *argv[6:]], grey_faces)


def test_benchmark_merges_through_train_merge(shared_data, analyzer, monkeypatch, tmp_path):
    export = export_stub(monkeypatch, IdentitySwap, "test_merge_metrics_identity", 64, tmp_path / "identity.safetensors")
    argv = ["--export", str(export), *_grid_args(shared_data), "--merge-option", "mask=hull",
            "--merge-option", "color=none", "--no-encode"]
    result = _run_benchmark(monkeypatch, tmp_path, argv)
    table, merge = result["metrics"], result["merge"]
    assert merge["model"] == "test_merge_metrics_identity" and merge["faces"] == 3
    assert merge["options"]["mask"] == "hull" and merge["frames_without_a_face"] == []
    assert set(table["frames"]) == {"merge", "copy"}
    assert table["background_psnr"]["merge"] == np.inf and 0 < table["background_fraction"]["merge"] < 1
    assert table["detection_rate"]["merge"] == 1.0 and table["id_retrieval"]["merge"] == 0.0
    assert table["landmark_error"]["merge"] < 0.05  # only the round trip through a 64 px crop blurs the face
    assert 0.5 < table["temporal_change_ratio"]["merge"] < 1.5


def test_merge_clip_pairs_each_frame_with_its_blend_mask(grid, monkeypatch, tmp_path):
    from benchmarks import merge_quality as bench
    export = export_stub(monkeypatch, WhiteSwap, "test_merge_metrics_white", 64, tmp_path / "white.safetensors")
    numbers = np.array(HELD_OUT_FRAMES)
    clip = bench.Clip(tmp_path / DEST, grid[DEST][numbers], numbers)
    merged = bench.merge_clip({"export": str(export)}, clip, "b2a", {"mask": "hull", "color": "none", "blur": 20})
    chex.assert_shape(merged.masks, clip.frames.shape[:3])
    assert merged.info["faces"] == 3 and merged.masks.dtype == np.float32
    alpha = merged.masks[..., None]
    expected = np.where(alpha > 0, np.rint(clip.frames + alpha * (255.0 - clip.frames)), clip.frames)
    assert np.abs(merged.frames.astype(float) - expected).max() <= 1  # the warped white face is 255 up to float error
    assert all(0.0 < m.mean() < 0.5 for m in merged.masks)
