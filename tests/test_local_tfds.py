"""Local array_record TFDS datasets written from sources and read back without TensorFlow (data/local_tfds.py)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ItemsOnly
from PIL import Image

from data import local_tfds
from data.media import from_spec
from data.sources import ArraySource, get_source

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write_faces(root: pathlib.Path, per_class: int = 12, size: int = 10) -> pathlib.Path:
    for p, person in enumerate(("alice", "bob")):
        for k in range(per_class):
            seed = 1000 * p + k
            array = np.random.default_rng(seed).integers(0, 256, (size, size + 2, 3), dtype=np.uint8)
            path = root / person / f"{k:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def _assert_same(read_back, source):
    assert len(read_back) == len(source)
    for i in range(len(source)):
        expected, got = source[i], read_back[i]
        assert got["image"].dtype == np.uint8
        assert np.array_equal(got["image"], expected["image"]), i
        assert int(got["label"]) == int(expected["label"]), i


def _record_files(path: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in path.glob("*.array_record*")}


def test_folder_dataset_round_trip_and_rebuild(tmp_path):
    faces = _write_faces(tmp_path / "faces")
    spec = f"folder:{faces};size=8"
    data_dir = tmp_path / "tfds"
    path = local_tfds.build(spec, "my_faces", data_dir)
    assert path == data_dir / "my_faces" / "1.0.0"
    assert not (data_dir / "downloads").exists()
    for split in ("train", "test"):
        original = from_spec("folder", spec.split(":", 1)[1], split)
        data_source = tfds.data_source("my_faces", split=split, data_dir=str(data_dir))
        features = data_source.dataset_info.features
        assert features["image"].shape == (8, 8, 3) and features["label"].num_classes == 2
        _assert_same(data_source, original)
        _assert_same(get_source("tfds:my_faces", split, data_dir=str(data_dir)), original)
    assert len(local_tfds.load("my_faces", data_dir, "test")) == 3
    assert len(tfds.data_source("my_faces", split="all", data_dir=str(data_dir))) == 24
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["built_by"] == "data.local_tfds" and metadata["num_examples"] == {"train": 21, "test": 3}

    before = _record_files(path)
    assert local_tfds.build(spec, "my_faces", data_dir) == path  # same input: nothing rewritten
    assert _record_files(path) == before

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(faces / "bob" / "999.png")
    with pytest.raises(FileExistsError, match="overwrite"):
        local_tfds.build(spec, "my_faces", data_dir)
    local_tfds.build(spec, "my_faces", data_dir, overwrite=True)
    _assert_same(tfds.data_source("my_faces", split="train", data_dir=str(data_dir)),
                 from_spec("folder", spec.split(":", 1)[1], "train"))
    assert len(tfds.data_source("my_faces", split="test", data_dir=str(data_dir))) == 3


def test_source_object_and_mapping(tmp_path):
    rng = np.random.default_rng(1)
    source = ArraySource("synthetic", rng.integers(0, 256, (23, 5, 6, 1), dtype=np.uint8),
                         rng.integers(0, 4, 23), num_classes=4)
    path = local_tfds.build(source, "synthetic_grey", tmp_path)
    test = local_tfds.load("synthetic_grey", tmp_path, "test")
    assert test.info.image_shape == (5, 6, 1) and test.info.num_classes == 4
    _assert_same(test, ArraySource("t", source.images[::10], source.labels[::10]))
    train = local_tfds.load("synthetic_grey", tmp_path, "train")
    keep = np.arange(23) % 10 != 0
    _assert_same(train, ArraySource("t", source.images[keep], source.labels[keep]))
    assert local_tfds.build(source, "synthetic_grey", tmp_path) == path

    unlabelled = ArraySource("u", rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8))
    local_tfds.build({"train": unlabelled}, "unlabelled", tmp_path)
    read_back = local_tfds.load("unlabelled", tmp_path, "train")
    assert "label" not in read_back[0] and np.array_equal(read_back[3]["image"], unlabelled[3]["image"])


def test_bad_names_and_foreign_directories(tmp_path):
    source = ArraySource("s", np.zeros((2, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="snake_case"):
        local_tfds.build(source, "My-Faces", tmp_path)
    with pytest.raises(ValueError, match="catalogue"):
        local_tfds.build(source, "mnist", tmp_path)
    with pytest.raises(ValueError, match="'all'"):
        local_tfds.build(source, "ok_name", tmp_path, splits=("all",))
    with pytest.raises(ValueError, match="split 'train' is empty"):
        local_tfds.build(ArraySource("one", np.zeros((1, 2, 2, 3), np.uint8)), "ok_name", tmp_path)
    foreign = tmp_path / "someone_else" / "1.0.0"
    foreign.mkdir(parents=True)
    (foreign / "dataset_info.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not written by"):
        local_tfds.build(source, "someone_else", tmp_path, overwrite=True)
    assert (foreign / "dataset_info.json").exists()


def test_command_line(tmp_path):
    faces = _write_faces(tmp_path / "faces", per_class=3, size=6)
    result = subprocess.run(
        [sys.executable, "-m", "data.local_tfds", "--source", f"folder:{faces}", "--name", "cli_faces",
         "--data_dir", str(tmp_path / "tfds")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train 5, test 1" in result.stdout and "tfds:cli_faces" in result.stdout
    _assert_same(tfds.data_source("cli_faces", split="train", data_dir=str(tmp_path / "tfds")),
                 from_spec("folder", str(faces), "train"))
    assert local_tfds.main(["--source", f"folder:{tmp_path}/nowhere", "--name", "x", "--data_dir",
                            str(tmp_path / "tfds")]) == 2


def test_grid_video_dataset(shared_data, tmp_path):
    spec = f"video:{shared_data / 'grid'};size=16;max_frames=10"
    local_tfds.build(spec, "grid_small", tmp_path)
    for split in ("train", "test"):
        original = from_spec("video", spec.split(":", 1)[1], split)
        read_back = local_tfds.load("grid_small", tmp_path, split)
        assert read_back.info.num_classes == 6
        _assert_same(read_back, original)
        np.testing.assert_array_equal(read_back.frame_index, original.frame_index)  # the video tells no item its frame
        assert [(int(read_back[i]["video"]), int(read_back[i]["frame"])) for i in range(len(read_back))] == \
            [tuple(row) for row in original.frame_index.tolist()]


@pytest.fixture(scope="module")
def grid_extraction(shared_data, tmp_path_factory) -> pathlib.Path:
    """Every 8th frame (10 frames) of a GRID video extracted at 48 px in this process (dlib finds a face in each)."""
    pytest.importorskip("dlib", reason="the faces extra (dlib) extracts the faces: pip install -e '.[faces]'")
    from data.faces import extract

    out = tmp_path_factory.mktemp("aligned") / "faces"
    extract.extract(shared_data / "grid" / "bbaf2n.mpg", out, extract.Options(size=48), every=8, workers=1,
                    progress=False)
    return out


@pytest.mark.parametrize("size", [None, 32])
def test_an_aligned_extraction_is_read_back_with_its_masks(grid_extraction, tmp_path, size):
    import chex

    from data.faces import extract

    spec = f"aligned:{grid_extraction}" + (f";size={size}" if size else "")
    side = size or 48
    path = local_tfds.build(spec, "grid_faces", tmp_path)
    assert json.loads((path / "metadata.json").read_text())["fields"] == ["image", "label", "mask", "em_mask", "video",
                                                                          "frame"]
    for split in ("train", "test"):
        original = get_source(spec, split)
        packed = get_source("tfds:grid_faces", split, data_dir=str(tmp_path))
        assert len(packed) == len(original) == {"train": 9, "test": 1}[split]
        for i in range(len(original)):
            want, got = original[i], packed[i]
            assert sorted(got) == sorted(want) == ["em_mask", "frame", "image", "label", "mask", "video"]
            assert (got["video"], got["frame"]) == (want["video"], want["frame"]) and got["frame"].dtype == np.int64
            chex.assert_shape([got["mask"], got["em_mask"]], (side, side, 1))
            for key in ("image", "mask", "em_mask"):
                assert got[key].dtype == np.uint8 and np.array_equal(got[key], want[key]), (split, i, key)
            assert int(got["label"]) == int(want["label"]) == 0
            assert 0 < got["em_mask"].mean() < got["mask"].mean() < 255  # eyes and mouth inside the face
    if size is None:  # the extractor's own mask files, read here with Pillow alone
        first = extract.read_index(grid_extraction)[0]  # test item 0
        test = get_source("tfds:grid_faces", "test", data_dir=str(tmp_path))[0]
        for key, name in (("mask", first["file"]), ("em_mask", f"em_{first['file']}")):
            np.testing.assert_array_equal(test[key][..., 0], np.asarray(Image.open(grid_extraction / "masks" / name)))


def test_a_dataset_written_before_masks_were_kept_is_not_reused(grid_extraction, tmp_path):
    spec = f"aligned:{grid_extraction}"
    path = local_tfds.build(spec, "grid_faces", tmp_path, splits=("test",))
    metadata = json.loads((path / "metadata.json").read_text())
    del metadata["fields"]  # what a build before masks were kept wrote
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(FileExistsError, match="before its em_mask, frame, mask, video fields were kept"):
        local_tfds.build(spec, "grid_faces", tmp_path, splits=("test",))
    local_tfds.build(spec, "grid_faces", tmp_path, splits=("test",), overwrite=True)
    assert "mask" in get_source("tfds:grid_faces", "test", data_dir=str(tmp_path))[0]
    folder = _write_faces(tmp_path / "plain", per_class=2)  # no masks: an old dataset is still what it should be
    plain = local_tfds.build(f"folder:{folder};size=8", "plain_faces", tmp_path, splits=("train",))
    metadata = json.loads((plain / "metadata.json").read_text())
    assert metadata["fields"] == ["image", "label"]
    del metadata["fields"]
    (plain / "metadata.json").write_text(json.dumps(metadata))
    assert local_tfds.build(f"folder:{folder};size=8", "plain_faces", tmp_path, splits=("train",)) == plain


def test_video_pairs_read_a_packed_clip_set_as_they_read_the_original(tmp_path):
    """The same pairs, frame numbers and pixels from `tfds:<name>` as from the clips it was packed from; without the
    rows file the pairs come from the records' own fields, unchanged."""
    spec = "synthetic_clips:ids=0-2;clips=2;frames=5;size=16"
    path = local_tfds.build(spec, "clips_small", tmp_path)
    packs = {"data_dir": str(tmp_path)}
    for split in ("train", "test"):
        original, packed = get_source(spec, split), get_source("tfds:clips_small", split, **packs)
        np.testing.assert_array_equal(packed.frame_index, original.frame_index)
        want = get_source(f"video_pairs:num_repeats=3@{spec}", split)
        got = get_source("video_pairs:num_repeats=3@tfds:clips_small", split, **packs)
        assert len(got) == len(want) > 0
        every = np.arange(len(want))
        batch_want, batch_got = want.gather(every), got.gather(every)
        assert set(batch_got) == set(batch_want)
        for key in batch_want:
            np.testing.assert_array_equal(batch_got[key], batch_want[key], err_msg=f"{split} {key}")
    (path / "train.frame_index.npy").unlink()
    packed = get_source("tfds:clips_small", "train", **packs)
    assert packed.frame_index is None and get_source("tfds:clips_small", "test", **packs).frame_index is not None
    fields_only = get_source("video_pairs:num_repeats=3@tfds:clips_small", "train", **packs)
    original = get_source(f"video_pairs:num_repeats=3@{spec}", "train")
    np.testing.assert_array_equal(fields_only.gather(np.arange(10))["driving_image"],
                                  original.gather(np.arange(10))["driving_image"])
    assert get_source("tfds:clips_small", "all", **packs).frame_index is None  # not one built split: no rows file stands for it


def test_frame_numbers_come_from_the_items_where_a_source_has_no_frame_index(tmp_path):
    """A frame source whose items carry video and frame (as facecrop: does) packs the same rows as its index."""
    clips = get_source("synthetic_clips:ids=0-1;clips=2;frames=4;size=16", "train")
    local_tfds.build({"train": ItemsOnly(clips)}, "fields_only", tmp_path, splits=("train",))
    packed = local_tfds.load("fields_only", tmp_path)
    np.testing.assert_array_equal(packed.frame_index, clips.frame_index)


def test_synthetic_faces_keep_their_masks_and_the_fingerprint_covers_them(tmp_path):
    spec = "synthetic_faces:ids=0-1;n=3;size=16;masks=1"
    source = get_source(spec, "train")
    path = local_tfds.build({"train": source}, "synthetic_masked", tmp_path)
    packed = local_tfds.load("synthetic_masked", tmp_path)
    assert len(packed) == len(source) == 6
    for i in range(len(source)):
        for key in ("image", "mask", "em_mask"):
            np.testing.assert_array_equal(packed[i][key], source[i][key])
    assert local_tfds.build({"train": source}, "synthetic_masked", tmp_path) == path  # the same input is reused

    class MasksChanged:
        """The same source with every face mask inverted: only the masks differ."""

        info = source.info

        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            return {**source[i], "mask": 255 - source[i]["mask"]}

    with pytest.raises(FileExistsError, match="different input"):
        local_tfds.build({"train": MasksChanged()}, "synthetic_masked", tmp_path)
