"""Every data source reads what it promises, and bad input fails with an error naming the fix."""
import gzip
import logging
import pathlib
import struct

import numpy as np
import pytest
import scipy.io

from data import __main__ as data_cli
from data.sources import (
    ArraySource,
    DatasetNotPreparedError,
    Source,
    SourceInfo,
    get_source,
    list_sources,
    local_datasets,
    read_idx,
)

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(),
    reason=f"{FASHION} absent: apt-get install -y dataset-fashion-mnist",
)


def _check_example(source: Source, shape: tuple[int, int, int], labelled: bool = True) -> None:
    """One example has the documented types and shapes."""
    example = source[0]
    assert example["image"].dtype == np.uint8 and example["image"].shape == shape
    assert source.info.image_shape == shape
    assert ("label" in example) == labelled
    if labelled:
        assert isinstance(example["label"], np.int64)


def _write_idx(path: pathlib.Path, array: np.ndarray, compress: bool = True) -> None:
    """An idx file holding a uint8 array."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_digits_splits_and_scaling():
    from sklearn.datasets import load_digits

    train, test, every = (get_source("digits", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (1500, 297, 1797)
    assert isinstance(train, Source)
    assert train.info == SourceInfo("digits", (8, 8, 1), 10, 1500)
    _check_example(train, (8, 8, 1))
    raw = load_digits()
    np.testing.assert_array_equal(test[0]["image"][..., 0], np.round(raw.images[1500] * 255 / 16))
    assert test[0]["label"] == raw.target[1500]
    assert train.images.max() == 255 and train.images.min() == 0


def test_mnist_idx_test_split_is_exact(shared_data):
    source = get_source(f"idx:{shared_data / 'mnist'}", "test")
    assert source.images.shape == (10000, 28, 28, 1)
    assert source.info == SourceInfo("mnist", (28, 28, 1), 10, 10000)
    _check_example(source, (28, 28, 1))
    assert set(np.unique(source.labels)) == set(range(10))
    assert source[3]["label"] == source.labels[3]


def test_mnist_train_uses_approx_npz_with_warning(shared_data, caplog):
    with caplog.at_level(logging.WARNING, logger="data.sources"):
        source = get_source(f"idx:{shared_data / 'mnist'}", "train")
    assert "approximate re-encoding" in caplog.text and "mnist-train-images-approx.npz" in caplog.text
    assert source.images.shape == (60000, 28, 28, 1)
    assert source.labels.min() == 0 and source.labels.max() == 9
    assert len(get_source(f"idx:{shared_data / 'mnist'}", "all")) == 70000


@needs_fashion
def test_fashion_mnist_idx():
    train = get_source(f"idx:{FASHION}", "train")
    test = get_source(f"idx:{FASHION}", "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.info.num_classes == 10 and set(np.unique(test.labels)) == set(range(10))


def test_idx_accepts_prefixed_and_plain_names(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    _write_idx(tmp_path / "emnist-digits-test-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "emnist-digits-test-labels-idx1-ubyte", np.array([2, 0, 1], np.uint8), compress=False)
    source = get_source(f"idx:{tmp_path}", "test")
    np.testing.assert_array_equal(source.images[..., 0], images)
    assert source.labels.tolist() == [2, 0, 1] and source.info.image_shape == (4, 5, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an idx file at all", "not an idx file"),
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + bytes(100), "truncated or corrupt"),
        (b"\x1f\x8b" + bytes(30), "corrupt gzip"),
    ],
)
def test_bad_idx_file_names_the_file(tmp_path, content, message):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(content)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match=message) as info:
        get_source(f"idx:{tmp_path}", "test")
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_idx_label_count_mismatch_and_missing_files(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="no test labels file"):
        get_source(f"idx:{tmp_path}", "test")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="different datasets"):
        get_source(f"idx:{tmp_path}", "test")
    with pytest.raises(FileNotFoundError, match="no train images"):
        get_source(f"idx:{tmp_path}", "train")
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").shape == (3,)


def test_npz_keys_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (6, 5, 5), np.uint8), rng.integers(0, 256, (2, 5, 5, 3), np.uint8)
    np.savez(tmp_path / "split.npz", x_train=x_train, y_train=np.arange(6), x_test=x_test, y_test=[1, 0])
    np.savez(tmp_path / "plain.npz", images=np.ones((4, 3, 3), np.float32))
    train = get_source(f"npz:{tmp_path / 'split.npz'}")
    np.testing.assert_array_equal(train.images[..., 0], x_train)
    assert train.labels.tolist() == list(range(6)) and train.info.num_classes == 6
    test = get_source(f"npz:{tmp_path / 'split.npz'}", "test")
    assert test.info.image_shape == (5, 5, 3) and test[1]["label"] == 0
    assert len(get_source(f"npz:{tmp_path / 'split.npz'}:x_test")) == 2
    plain = get_source(f"npz:{tmp_path / 'plain.npz'}")
    _check_example(plain, (3, 3, 1), labelled=False)
    assert plain[0]["image"].max() == 255 and plain.info.num_classes is None
    with pytest.raises(ValueError, match="no images for split 'test'"):
        get_source(f"npz:{tmp_path / 'plain.npz'}", "test")


def test_olivetti_mat(shared_data):
    path = shared_data / "olivetti" / "olivettifaces.mat"
    train, test, every = (get_source(f"mat:{path}", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (320, 80, 400)
    assert every.info == SourceInfo("olivettifaces", (64, 64, 1), 40, 400)
    _check_example(train, (64, 64, 1))
    faces = scipy.io.loadmat(path)["faces"]
    np.testing.assert_array_equal(every[13]["image"][..., 0], faces[:, 13].reshape(64, 64).T)
    assert every.labels.tolist() == [i // 10 for i in range(400)]
    assert set(np.unique(train.labels)) == set(np.unique(test.labels)) == set(range(40))
    assert train.labels[:8].tolist() == [0] * 8 and test.labels[:2].tolist() == [0, 0]


def test_svhn_style_mat(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (4, 4, 3, 5), np.uint8)
    scipy.io.savemat(tmp_path / "svhn.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [4]])})
    source = get_source(f"mat:{tmp_path / 'svhn.mat'}")
    assert source.info.image_shape == (4, 4, 3) and source.labels.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(source[2]["image"], x[..., 2])


def test_unrecognised_mat_lists_variables(tmp_path):
    scipy.io.savemat(tmp_path / "other.mat", {"weights": np.zeros(3)})
    with pytest.raises(ValueError, match="variables: weights"):
        get_source(f"mat:{tmp_path / 'other.mat'}")


@pytest.mark.parametrize(
    "name, shape, num_classes",
    [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("celeb_a", (218, 178, 3), None)],
)
def test_tfds_through_mock_data(name, shape, num_classes):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        source = get_source(f"tfds:{name}:test")
        assert len(source) == 6
        assert source.info == SourceInfo(name, shape, num_classes, 6)
        _check_example(source, shape, labelled=num_classes is not None)
        if num_classes:
            assert all(0 <= source[i]["label"] < num_classes for i in range(len(source)))


def test_tfds_spec_with_version_and_sliced_split():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        source = get_source("tfds:mnist:3.0.1:train[:50%]", "test")
    assert source.info.name == "mnist:3.0.1" and len(source) == 4


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeb_a"])
def test_unprepared_tfds_says_what_to_run(tmp_path, name):
    with pytest.raises(DatasetNotPreparedError) as info:
        get_source(f"tfds:{name}", data_dir=str(tmp_path))
    message = str(info.value)
    assert f"tfds:{name} is not prepared" in message
    assert "pip install '.[tf]'" in message
    assert f"tfds.builder('{name}', data_dir='{tmp_path}', file_format='array_record').download_and_prepare()" in message


def test_unknown_tfds_name(tmp_path):
    with pytest.raises(ValueError, match="no such TFDS dataset"):
        get_source("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))


@pytest.mark.parametrize("spec", ["mnist", "idx:", "csv:/tmp/x.csv", ""])
def test_unknown_spec_lists_valid_forms(spec):
    with pytest.raises(ValueError, match="unknown data spec") as info:
        get_source(spec)
    for form in list_sources():
        assert form in str(info.value)


def test_bad_split_and_index():
    with pytest.raises(ValueError, match="use one of train, test, all"):
        get_source("digits", "validation")
    source = ArraySource("tiny", np.zeros((2, 1, 1), np.uint8))
    assert source[-1]["image"].shape == (1, 1, 1)
    with pytest.raises(IndexError):
        source[2]
    assert len(list(source)) == 2


def test_cli_list(capsys):
    assert data_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(form in out for form in list_sources())
    assert "digits" in local_datasets()
    assert data_cli.main(["info", "nonsense"]) == 2
    assert "unknown data spec" in capsys.readouterr().err


def test_folder_and_video_specs_through_get_source(tmp_path, shared_data):
    from PIL import Image

    for person in ("A", "B"):
        (tmp_path / person).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 30), (40 * i, 0, 0)).save(tmp_path / person / f"{i}.png")
    folder = get_source(f"folder:{tmp_path};size=16", "all")
    assert len(folder) == 6 and folder.info.image_shape == (16, 16, 3)
    assert sorted({int(folder[i]["label"]) for i in range(6)}) == [0, 1]
    video = get_source(f"video:{shared_data / 'grid' / 'bbaf2n.mpg'};size=32;stride=5", "all")
    assert len(video) == 15 and video[0]["image"].shape == (32, 32, 3)


def test_ffhq_explains_the_manual_build(tmp_path):
    from data.sources import DatasetNotPreparedError

    with pytest.raises(DatasetNotPreparedError, match="python -m data.local_tfds --source 'folder:"):
        get_source("tfds:ffhq", data_dir=str(tmp_path))


def test_synthetic_faces_spec():
    faces = get_source("synthetic_faces:ids=3,4;n=5;size=32", "test")
    assert len(faces) == 10 and faces.info.image_shape == (32, 32, 3)
    assert [int(faces[i]["label"]) for i in (0, 9)] == [0, 1]
    assert get_source("synthetic_faces").info.image_shape == (64, 64, 3)
