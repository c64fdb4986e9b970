"""Local array_record TFDS datasets written from sources and read back without TensorFlow (data/local_tfds.py)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
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
