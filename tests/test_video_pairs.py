"""data.video_pairs: (source, driving) frames of one video, hashed from (seed, index) and resumable like every source."""
import json
import pathlib

import numpy as np
import pytest

from data import video_pairs
from data.pipeline import make_dataset
from data.sources import ArraySource, get_source
from data.synthetic import SyntheticClips
from zoo.errors import DataError

CLIPS = "synthetic_clips:ids=4,9;clips=2;frames=6;size=16"


def _pairs(num_repeats=5, seed=0, split="train"):
    return get_source(f"video_pairs:num_repeats={num_repeats};seed={seed}@{CLIPS}", split)


def test_a_pair_is_two_frames_of_video_i_mod_v():
    pairs = _pairs()
    clips = pairs.frames
    assert isinstance(clips, SyntheticClips) and len(pairs) == 4 * 5 == pairs.info.num_examples
    assert pairs.info.image_shape == (16, 16, 3) and pairs.info.num_classes == 2
    batch = pairs.gather(np.arange(len(pairs)))
    assert set(batch) == {"source_image", "driving_image", "video", "source_frame", "driving_frame", "label"}
    np.testing.assert_array_equal(batch["video"], np.arange(len(pairs)) % 4)
    for i in range(len(pairs)):
        video, s, d = (int(batch[k][i]) for k in ("video", "source_frame", "driving_frame"))
        source, driving = clips[video * 6 + s], clips[video * 6 + d]
        assert source["video"] == driving["video"] == video
        np.testing.assert_array_equal(batch["source_image"][i], source["image"])
        np.testing.assert_array_equal(batch["driving_image"][i], driving["image"])
        assert batch["label"][i] == source["label"] == video // 2
    example = pairs[7]
    for key, value in example.items():
        np.testing.assert_array_equal(value, batch[key][7], err_msg=key)
    assert pairs[-1]["video"] == batch["video"][-1]
    with pytest.raises(IndexError):
        pairs[len(pairs)]


def test_pairs_depend_on_seed_and_index_only():
    a, b = _pairs(num_repeats=50), _pairs(num_repeats=50)
    idx = np.array([17, 3, 150, 3, 0, 199])
    np.testing.assert_array_equal(np.stack(a.pair_indices(idx)), np.stack(b.pair_indices(idx)))
    whole = np.stack(a.pair_indices(np.arange(len(a))))
    np.testing.assert_array_equal(np.stack(a.pair_indices(idx)), whole[:, idx])
    longer = _pairs(num_repeats=80)  # more repeats extend the list; the first pairs stay
    np.testing.assert_array_equal(np.stack(longer.pair_indices(np.arange(len(a)))), whole)
    other = _pairs(num_repeats=50, seed=1)
    assert (np.stack(other.pair_indices(np.arange(len(a)))) != whole).mean() > 0.5


def test_frames_are_drawn_uniformly_with_replacement_and_cover_every_frame():
    pairs = _pairs(num_repeats=600)
    src, drv = pairs.pair_indices(np.arange(len(pairs)))
    for video in range(4):
        rows = np.arange(len(pairs)) % 4 == video
        for picked in (src[rows], drv[rows]):
            assert set(picked // 6) == {video}
            counts = np.bincount(picked % 6, minlength=6)  # 600 draws over 6 frames: 100 each, sd about 9
            assert counts.min() > 65 and counts.max() < 135, counts
    same = (src == drv).mean()
    assert 1 / 6 - 0.04 < same < 1 / 6 + 0.04, "FOMM draws with replacement: one pair in six repeats its frame"
    assert ((src < drv).mean() - (src > drv).mean()) ** 2 < 0.05**2, "either order, as with FOMM's time flip"


@pytest.mark.parametrize("transform", [None, "identity"])
def test_a_grain_pipeline_over_pairs_resumes_exactly(transform):
    pairs = _pairs(num_repeats=3)
    fn = (lambda example: example) if transform else None
    ds = make_dataset(pairs, global_batch_size=4, seed=3, num_epochs=2, transform=fn)
    full = [(b["video"].tolist(), b["source_frame"].tolist(), b["driving_frame"].tolist(), b["source_image"].tolist())
            for b in ds]
    assert len(full) == 2 * 12 // 4
    it = iter(ds)
    for _ in range(2):
        next(it)
    state = it.get_state()
    resumed = iter(ds)
    resumed.set_state(state)
    rest = [(b["video"].tolist(), b["source_frame"].tolist(), b["driving_frame"].tolist(), b["source_image"].tolist())
            for b in resumed]
    assert rest == full[2:]
    expected = pairs.gather(_shuffled_indices(len(pairs), seed=3)[:4])  # the pipeline reads pairs by index
    np.testing.assert_array_equal(next(iter(ds))["source_image"], expected["source_image"])


def _shuffled_indices(n: int, seed: int) -> np.ndarray:
    """The order the pipeline reads a source of n examples in: its first epoch, from an index source."""
    labels = ArraySource("index", np.zeros((n, 1, 1), np.uint8), np.arange(n))
    return np.concatenate([b["label"] for b in make_dataset(labels, global_batch_size=n, seed=seed, num_epochs=1)])


def test_test_split_pairs_come_from_the_test_clips():
    train, test = _pairs(split="train"), _pairs(split="test")
    assert not np.array_equal(train[0]["source_image"], test[0]["source_image"])
    np.testing.assert_array_equal(test[0]["driving_image"],
                                  test.frames[int(test.pair_indices([0])[1][0])]["image"])


def _write_extraction(directory: pathlib.Path, frames: dict[str, list[int]], size: int = 16) -> None:
    """A face extraction of the given videos' frame numbers (index.jsonl, faces, masks), by the extractor's own code.

    The faces are random pixels warped with the canonical template's landmarks, so dlib is not needed.
    """
    from data.faces import align, extract, masks

    rng = np.random.default_rng(0)
    records = []
    for video, numbers in frames.items():
        for frame in numbers:
            landmarks = align.template("whole_face") * 40 + [12, 10]
            matrix = align.alignment_matrix(landmarks, "whole_face", size)
            aligned = align.transform_points(landmarks, matrix)
            face = extract.Face(box=np.array([10, 8, 54, 56]), landmarks=landmarks.astype(np.float32), matrix=matrix,
                                face_type="whole_face", size=size,
                                image=align.warp_face(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), matrix, size),
                                landmarks_aligned=aligned, mask=masks.hull_mask(aligned, size, "whole_face"),
                                em_mask=masks.eyes_mouth_mask(aligned, size))
            records.append(extract.record(face, extract.face_name(video, frame, 0), str(directory / f"{video}.mpg"),
                                          frame, 0))
            extract.write_face(directory, face, records[-1])
    (directory / extract.INDEX).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_aligned_extractions_carry_video_and_frame_and_pair_within_a_video(tmp_path):
    numbers = {"b_clip": [0, 2, 4, 6], "a_clip": [1, 5, 9, 13, 17]}
    _write_extraction(tmp_path, numbers)
    faces = get_source(f"aligned:{tmp_path}", "all")
    by_name = {"a_clip": 0, "b_clip": 1}  # labels follow the sorted video paths
    for i in range(len(faces)):
        example = faces[i]
        video = next(name for name, label in by_name.items() if label == example["label"])
        assert example["video"] == example["label"] and example["frame"] in numbers[video]
    pairs = get_source(f"video_pairs:num_repeats=40@aligned:{tmp_path}", "all")
    assert len(pairs) == 2 * 40
    batch = pairs.gather(np.arange(len(pairs)))
    for video, name in ((0, "a_clip"), (1, "b_clip")):
        rows = batch["video"] == video
        seen = set(batch["source_frame"][rows]) | set(batch["driving_frame"][rows])
        assert seen == set(numbers[name]), "every frame of the video, and only its frames"
    src, _ = pairs.pair_indices([5])
    np.testing.assert_array_equal(pairs[5]["source_image"], faces[int(src[0])]["image"])


def test_a_video_file_pairs_by_its_frame_index(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "clip.mpg"
    writer = imageio_ffmpeg.write_frames(str(path), (32, 32), fps=25, codec="mpeg1video", macro_block_size=16)
    writer.send(None)
    for k in range(8):
        writer.send(np.full((32, 32, 3), 20 + 25 * k, np.uint8))
    writer.close()
    pairs = get_source(f"video_pairs:num_repeats=30@video:{path}", "all")
    batch = pairs.gather(np.arange(30))
    frames = pairs.frames
    for i in range(30):
        assert frames.frame_index[int(pairs.pair_indices([i])[0][0]), 1] == batch["source_frame"][i]
        grey = batch["source_image"][i].mean()
        assert abs(grey - (20 + 25 * batch["source_frame"][i])) < 12, "the frame shown is the frame named"


class _Stills:
    """A frame source whose every video has one frame."""

    info = ArraySource("stills", np.zeros((3, 4, 4, 3), np.uint8)).info
    frame_index = np.array([[0, 0], [1, 0], [2, 5]])

    def __len__(self):
        return 3


@pytest.mark.parametrize("spec, fix", [
    ("video_pairs:", "no frame source; write video_pairs:<frame spec>"),
    (f"video_pairs:repeats=3@{CLIPS}", "not one of num_repeats=N, seed=N"),
    (f"video_pairs:num_repeats=3;num_repeats=4@{CLIPS}", "each at most once"),
    (f"video_pairs:num_repeats=x@{CLIPS}", "must be integers"),
    (f"video_pairs:num_repeats=0@{CLIPS}", "positive count"),
    ("video_pairs:digits", "no video and frame fields"),
    ("video_pairs:synthetic_clips:frames=1", "at least 2 frames"),
])
def test_bad_specs_name_the_fix(spec, fix):
    with pytest.raises(DataError, match=fix):
        get_source(spec)


def test_videos_of_one_frame_are_refused_when_nothing_else_is_left():
    with pytest.raises(DataError, match="no video of .* has two frames"):
        video_pairs.VideoPairs(_Stills())
