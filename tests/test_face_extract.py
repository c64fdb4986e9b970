"""Face extraction end to end on a GRID video, checked against independent dlib calls and warps; the aligned:
source; and every kind of bad input (no face, truncated video, non-images, small faces, a used output)."""
import json
import pathlib
import subprocess
import sys
import warnings

import chex
import numpy as np
import pytest

from data.faces import align, extract
from data.provenance import EXTRACTED_NOTICE
from data.sources import get_source
from zoo.errors import DataError

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is part of the faces extra: pip install -e '.[faces]'")
iio = pytest.importorskip("imageio.v2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
VIDEO = "bbaf2n.mpg"
SIZE = 128


def _frames(path: pathlib.Path) -> list[np.ndarray]:
    """Every frame of a video, decoded here with imageio alone (not through data.media)."""
    reader = iio.get_reader(path, format="FFMPEG")
    try:
        return [np.ascontiguousarray(f) for f in reader]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def grid_frames(shared_data) -> list[np.ndarray]:
    return _frames(shared_data / "grid" / VIDEO)


FORKS: list[int] = []  # grows by one per fork that runs at-fork hooks, which JAX warns about (tests/test_forks.py)


@pytest.fixture(scope="module")
def extraction(shared_data, tmp_path_factory) -> tuple[pathlib.Path, extract.Summary]:
    """All 75 frames of one GRID video extracted once, by a pool of 2 spawned workers, with JAX running."""
    import os

    import jax

    jax.devices()
    os.register_at_fork(before=lambda: FORKS.append(os.getpid()))
    out = tmp_path_factory.mktemp("extract") / "faces"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = extract.extract(shared_data / "grid" / VIDEO, out, extract.Options(size=SIZE), workers=2,
                                  progress=False)
    assert not [w for w in caught if "os.fork()" in str(w.message)]
    return out, summary


def _leftovers(parent: pathlib.Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- a real video


def test_grid_extraction_finds_a_face_in_at_least_95_percent_of_frames(extraction, grid_frames):
    out, summary = extraction
    records = extract.read_index(out)
    assert summary.frames == len(grid_frames) == 75
    frames_with_face = {r["frame"] for r in records}
    assert len(frames_with_face) >= 0.95 * 75
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    assert summary.faces == len(records) and not summary.unreadable
    assert sorted(f"frame {k}" for k in set(range(75)) - frames_with_face) == sorted(summary.no_face)


def test_the_worker_pool_never_forks_the_jax_process(extraction):
    assert FORKS == [], "a worker was started by fork() with Python in the child"


def test_stored_landmarks_agree_with_an_independent_dlib_call(extraction, grid_frames):
    from data.faces.dlib_models import load_models

    models = load_models()  # the raw dlib objects, not FaceAnalyzer
    records = {r["frame"]: r for r in extract.read_index(extraction[0])}
    for k in range(0, 75, 7):
        frame = grid_frames[k]
        rects = models.detector(frame, 1)
        rect = max(rects, key=lambda r: r.area())
        expected = np.array([(p.x, p.y) for p in models.landmarks68(frame, rect).parts()], np.float64)
        np.testing.assert_allclose(records[k]["landmarks"], expected, atol=1.0)
        assert records[k]["box"] == [rect.left(), rect.top(), rect.right(), rect.bottom()]


def test_faces_are_the_warp_of_the_frame_and_landmarks_follow_the_matrix(extraction, grid_frames):
    out, _ = extraction
    for rec in extract.read_index(out)[::10]:
        m = np.asarray(rec["matrix"])
        chex.assert_shape(m, (2, 3))
        face = iio.imread(out / rec["file"])
        chex.assert_shape(face, (SIZE, SIZE, 3))
        warped = cv2.warpAffine(grid_frames[rec["frame"]], m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        np.testing.assert_array_equal(face, warped)
        landmarks = np.asarray(rec["landmarks"])
        moved = landmarks @ m[:, :2].T + m[:, 2]
        np.testing.assert_allclose(rec["landmarks_aligned"], moved, atol=1e-3)
        np.testing.assert_allclose(m, align.alignment_matrix(landmarks, "whole_face", SIZE), atol=1e-9)


def test_png_metadata_and_index_read_back_the_same(extraction, shared_data):
    out, _ = extraction
    records = extract.read_index(out)
    for rec in records[::15]:
        stored = extract.read_face_png(out / rec["file"])
        assert stored["Description"] == EXTRACTED_NOTICE
        assert {k: stored[k] for k in extract.FIELDS} == rec
    rec = records[0]
    assert rec["source"] == str((shared_data / "grid" / VIDEO).absolute())
    assert rec["file"] == f"bbaf2n_{rec['frame']:06d}_0.png"
    assert rec["face_type"] == "whole_face" and rec["size"] == SIZE and rec["face"] == 0
    summary = json.loads((out / extract.SUMMARY).read_text())
    assert summary["faces"] == len(records) and summary["options"]["size"] == SIZE
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"


def test_masks_are_non_empty_and_inside_the_crop(extraction):
    out, _ = extraction
    for rec in extract.read_index(out)[::10]:
        hull = iio.imread(out / extract.MASKS / rec["file"])
        em = iio.imread(out / extract.MASKS / f"em_{rec['file']}")
        chex.assert_shape([hull, em], (SIZE, SIZE))
        assert set(np.unique(hull)) == {0, 255} and set(np.unique(em)) == {0, 255}
        aligned = np.asarray(rec["landmarks_aligned"])
        points = np.round(aligned).astype(int)
        assert points.min() >= 0 and points.max() < SIZE, "whole_face keeps every landmark inside the crop"
        towards_centre = aligned - 1.5 * (aligned - aligned.mean(0)) / np.linalg.norm(aligned - aligned.mean(0),
                                                                                       axis=1, keepdims=True)
        inner = np.round(towards_centre).astype(int)  # hull vertices lie on the edge: step 1.5 px inward
        assert np.all(hull[inner[:, 1], inner[:, 0]] == 255), "every landmark is inside the hull mask"
        assert 0.2 < (hull > 0).mean() < 0.7
        assert hull[0, 0] == hull[0, -1] == hull[-1, 0] == hull[-1, -1] == 0
        assert 0 < (em > 0).sum() < 0.3 * (hull > 0).sum() and np.all(hull[em > 0] == 255)
        assert np.all(em[points[36:68, 1], points[36:68, 0]] == 255)


# ---------------------------------------------------------------- the aligned: source


def test_aligned_source_yields_faces_and_masks_at_any_size(extraction):
    out, _ = extraction
    n = len(extract.read_index(out))
    train, test = get_source(f"aligned:{out};size=64", "train"), get_source(f"aligned:{out};size=64", "test")
    assert len(test) == -(-n // 10) and len(train) + len(test) == n
    assert train.info.image_shape == (64, 64, 3) and train.info.num_classes == 1
    example = test[0]
    assert set(example) == {"image", "label", "mask", "em_mask", "video", "frame"}
    chex.assert_shape([example["image"], example["mask"], example["em_mask"]], [(64, 64, 3), (64, 64, 1), (64, 64, 1)])
    assert example["image"].dtype == example["mask"].dtype == example["em_mask"].dtype == np.uint8
    assert example["label"] == 0 and example["label"].dtype == np.int64
    first = extract.read_index(out)[0]  # test item 0 is record 0
    assert example["video"] == 0 and example["frame"] == first["frame"] and example["frame"].dtype == np.int64
    np.testing.assert_array_equal(test.frame_index[:, 1], [r["frame"] for r in extract.read_index(out)[::10]])
    full = iio.imread(out / first["file"])
    np.testing.assert_array_equal(example["image"], cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA))
    assert example["mask"].max() == 255 and example["em_mask"].max() == 255
    native = get_source(f"aligned:{out}", "all")
    assert native.face_type == first["face_type"] == train.face_type  # what an export records
    np.testing.assert_array_equal(native[0]["image"], full)
    np.testing.assert_array_equal(native[0]["mask"][..., 0], iio.imread(out / extract.MASKS / first["file"]))


def test_aligned_source_labels_each_video_or_image_folder(grid_frames, tmp_path):
    for person, k in (("p1", 0), ("p2", 40)):
        (tmp_path / "people" / person).mkdir(parents=True)
        iio.imwrite(tmp_path / "people" / person / f"{k}.png", grid_frames[k])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", extract.SmallFaceWarning)
        extract.extract(tmp_path / "people", tmp_path / "out", extract.Options(size=64), progress=False)
    source = get_source(f"aligned:{tmp_path / 'out'}", "all")
    assert source.info.num_classes == 2 and [int(source[i]["label"]) for i in range(2)] == [0, 1]


def test_aligned_source_without_an_index_says_to_run_the_extract_command(tmp_path):
    with pytest.raises(DataError, match="python -m data.faces extract"):
        get_source(f"aligned:{tmp_path}")
    with pytest.raises(DataError, match="size"):
        get_source(f"aligned:{tmp_path};width=3")


def test_a_damaged_index_is_refused_line_by_line(extraction, tmp_path):
    good = json.loads((extraction[0] / extract.INDEX).read_text().splitlines()[0])
    for damage, expected in (({"size": "big"}, "size"), ({"file": "../escape.png"}, "plain file name"),
                             ({"matrix": [[1, 0], [0, 1]]}, "matrix"), ({"face_type": "half"}, "face_type")):
        (tmp_path / extract.INDEX).write_text(json.dumps(good) + "\n" + json.dumps({**good, **damage}) + "\n")
        with pytest.raises(DataError, match=rf"line 2: .*{expected}"):
            get_source(f"aligned:{tmp_path}")
    (tmp_path / extract.INDEX).write_text("[1, 2]\n")
    with pytest.raises(DataError, match="line 1"):
        extract.read_index(tmp_path)
    (tmp_path / extract.INDEX).write_bytes(json.dumps(good).encode() + b"\n\xfb" + json.dumps(good).encode())
    with pytest.raises(DataError, match="line 2: .*utf-8"):  # a damaged byte, found by tests/test_fuzz.py
        extract.read_index(tmp_path)


# ---------------------------------------------------------------- frames with several faces, the CNN detector


def test_all_faces_keeps_each_face_largest_first(grid_frames, shared_data):
    from data.faces.dlib_models import FaceAnalyzer

    other = _frames(shared_data / "grid" / "lrwp9a.mpg")[0]
    small = cv2.resize(other, (other.shape[1] * 3 // 4, other.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((288, 360 + small.shape[1], 3), np.uint8)
    canvas[:, :360] = grid_frames[0]
    canvas[: small.shape[0], 360:] = small
    analyzer = FaceAnalyzer()
    faces = extract.find_faces(analyzer, canvas, "full_face", 96, all_faces=True)
    assert len(faces) == 2
    assert faces[0].box[0] < 360 <= faces[1].box[0], "the larger face (left, unshrunk) comes first"
    assert len(extract.find_faces(analyzer, canvas, "full_face", 96)) == 1
    for face in faces:
        chex.assert_shape([face.image, face.mask, face.em_mask], [(96, 96, 3), (96, 96, 1), (96, 96, 1)])
        chex.assert_shape([face.landmarks, face.landmarks_aligned, face.matrix], [(68, 2), (68, 2), (2, 3)])


def test_cnn_detector_finds_the_face_hog_finds(grid_frames):
    from data.faces.dlib_models import FaceAnalyzer

    hog = FaceAnalyzer().detect(grid_frames[0], 0)[0]
    cnn = FaceAnalyzer("cnn").detect(grid_frames[0], 0)
    assert len(cnn) == 1
    left, top = np.maximum(hog[:2], cnn[0][:2])
    right, bottom = np.minimum(hog[2:], cnn[0][2:])
    overlap = max(0, right - left) * max(0, bottom - top)
    union = np.prod(hog[2:] - hog[:2]) + np.prod(cnn[0][2:] - cnn[0][:2]) - overlap
    assert overlap / union > 0.5


# ---------------------------------------------------------------- bad input


def _flat_video(path: pathlib.Path, frames: int = 12) -> pathlib.Path:
    with iio.get_writer(path, fps=25, codec="libx264", macro_block_size=16) as writer:
        for _ in range(frames):
            writer.append_data(np.full((144, 176, 3), 90, np.uint8))
    return path


def _grid_mp4(grid_frames: list[np.ndarray], path: pathlib.Path, faststart: bool) -> pathlib.Path:
    params = ["-movflags", "+faststart"] if faststart else None
    with iio.get_writer(path, fps=25, codec="libx264", macro_block_size=8, output_params=params) as writer:
        for frame in grid_frames:
            writer.append_data(frame)
    return path


def test_a_video_with_no_faces_is_refused_and_leaves_nothing(tmp_path):
    video = _flat_video(tmp_path / "flat.mp4")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"flat.mp4: no face found in any of the 12 frame"):
        extract.extract(video, out, extract.Options(size=64), progress=False)
    assert not out.exists() and not _leftovers(tmp_path)


def test_a_truncated_mp4_without_its_index_is_refused(grid_frames, tmp_path):
    whole = _grid_mp4(grid_frames[:20], tmp_path / "whole.mp4", faststart=False).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cut.mp4: ffmpeg cannot open this video .*truncated"):
        extract.extract(cut, out, progress=False)
    assert not out.exists() and not _leftovers(tmp_path)


def test_a_truncated_video_keeps_its_intact_frames_and_names_the_loss(grid_frames, tmp_path):
    whole = _grid_mp4(grid_frames, tmp_path / "whole.mp4", faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    from data.media import BadMediaWarning

    with pytest.warns(BadMediaWarning, match="cut.mp4"), warnings.catch_warnings():
        warnings.simplefilter("ignore", extract.SmallFaceWarning)
        summary = extract.extract(cut, out, extract.Options(size=64), every=5, progress=False)
    assert len(summary.unreadable) == 1 and "truncated" in summary.unreadable[0]
    assert "cut.mp4" in summary.unreadable[0] and "missing" in summary.unreadable[0]
    assert 0 < summary.faces < 15 and len(extract.read_index(out)) == summary.faces
    assert "unreadable: 1" in summary.text()


def test_a_directory_of_non_images_is_refused(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes: no images .*a\.txt"):
        extract.extract(notes, tmp_path / "out", progress=False)
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name in ("a.png", "b.jpg"):
        (fakes / name).write_text("<html>not an image</html>")
    with pytest.raises(DataError, match=r"none of its 2 image\(s\) could be read, e\.g\. .*a\.png"):
        extract.extract(fakes, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_an_unreadable_image_beside_good_ones_is_named_and_skipped(grid_frames, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", grid_frames[0])
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    iio.imwrite(folder / "c.jpg", np.ascontiguousarray(grid_frames[30][:, ::-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = extract.extract(folder, tmp_path / "out", extract.Options(size=64), progress=False)
    records = extract.read_index(tmp_path / "out")
    assert [pathlib.Path(r["source"]).name for r in records] == ["a.png", "c.jpg"]
    assert [r["file"] for r in records] == ["a_000000_0.png", "c_000002_0.png"]
    assert len(summary.unreadable) == 1 and "b.png" in summary.unreadable[0]


def test_a_face_smaller_than_the_crop_is_kept_with_a_warning(grid_frames, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", grid_frames[0])
    with pytest.warns(extract.SmallFaceWarning, match=r"enlarged up to [23]\.\d\dx"):
        summary = extract.extract(folder, tmp_path / "big", extract.Options(size=512), progress=False)
    assert summary.upscaled == 1 and summary.faces == 1
    extent = align.source_extent(np.asarray(extract.read_index(tmp_path / "big")[0]["matrix"]), 512)
    assert summary.max_upscale == pytest.approx(512 / extent)
    with warnings.catch_warnings():
        warnings.simplefilter("error", extract.SmallFaceWarning)
        assert extract.extract(folder, tmp_path / "small", extract.Options(size=64), progress=False).upscaled == 0


def test_an_output_in_use_and_bad_options_are_refused(tmp_path, grid_frames):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", grid_frames[0])
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="already holds files"):
        extract.extract(folder, used, progress=False)
    with pytest.raises(DataError, match=r"size=4 .*every=0"):
        extract.extract(folder, tmp_path / "out", extract.Options(size=4), every=0, progress=False)
    with pytest.raises(DataError, match="no such file"):
        extract.extract(tmp_path / "missing.mp4", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    extract.extract(folder, tmp_path / "empty", extract.Options(size=64), progress=False)  # an empty dir is fine
    assert (tmp_path / "empty" / extract.INDEX).is_file()


def test_cli_reports_bad_input_in_one_line_with_status_2(tmp_path):
    video = _flat_video(tmp_path / "flat.mp4", frames=3)
    proc = subprocess.run([sys.executable, "-m", "data.faces", "extract", "--input", str(video), "--output",
                           str(tmp_path / "out"), "--workers", "1", "--size", "64"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("data error:")]
    assert len(errors) == 1 and "no face found" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
