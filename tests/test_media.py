"""Folder and video sources: formats, labels, bad files, sizes, specs and splits (data/media.py)."""
import pathlib
import pickle
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from data.media import (
    BadMediaWarning,
    FolderSource,
    VideoSource,
    from_spec,
    parse_spec,
    spec_fingerprint,
)
from data.sources import Source
from zoo.errors import DataError

H, W = 12, 16
RNG = np.random.default_rng(0)


def _rgb(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: pathlib.Path, image: Image.Image, **kwargs) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _jpeg_bytes(seed=0) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(_rgb(32, 32, seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ folders


@pytest.fixture
def mixed_folder(tmp_path):
    """A/ holds RGB PNG, JPEG, lossless WebP; B/ (nested) holds grayscale, RGBA and palette PNGs."""
    root = tmp_path / "faces"
    arrays = {}
    arrays["A/1.png"] = _rgb(seed=1)
    _save(root / "A/1.png", Image.fromarray(arrays["A/1.png"]))
    smooth = np.stack([*np.meshgrid(np.linspace(0, 255, W), np.linspace(0, 255, H)), np.full((H, W), 90.0)], -1)
    arrays["A/2.JPG"] = smooth.astype(np.uint8)  # JPEG is lossy: a smooth image survives it closely
    _save(root / "A/2.JPG", Image.fromarray(arrays["A/2.JPG"]), quality=95)
    arrays["A/3.webp"] = _rgb(seed=3)
    _save(root / "A/3.webp", Image.fromarray(arrays["A/3.webp"]), lossless=True)
    grey = _rgb(seed=4)[..., 0]
    arrays["B/deep/er/grey.png"] = grey
    _save(root / "B/deep/er/grey.png", Image.fromarray(grey, "L"))
    rgba = np.random.default_rng(5).integers(0, 256, (H, W, 4), dtype=np.uint8)
    arrays["B/rgba.png"] = rgba
    _save(root / "B/rgba.png", Image.fromarray(rgba, "RGBA"))
    palette = Image.fromarray(_rgb(seed=6)).quantize(colors=16)
    arrays["B/x_palette.png"] = np.asarray(palette.convert("RGB"))
    _save(root / "B/x_palette.png", palette)
    (root / "notes.txt").write_text("not an image")
    (root / "B/.hidden.png").write_bytes(b"macOS resource fork junk")
    return root, arrays


def test_folder_formats_conversions_and_labels(mixed_folder):
    root, arrays = mixed_folder
    source = FolderSource(root)
    assert isinstance(source, Source)
    rel = [p.relative_to(root).as_posix() for p in source.paths]
    assert rel == ["A/1.png", "A/2.JPG", "A/3.webp", "B/deep/er/grey.png", "B/rgba.png", "B/x_palette.png"]
    assert source.classes == ["A", "B"]
    assert source.info.image_shape == (H, W, 3) and source.info.num_classes == 2 and source.info.num_examples == 6
    assert not source.skipped
    examples = {name: source[i] for i, name in enumerate(rel)}
    for name, example in examples.items():
        assert set(example) == {"image", "label"}  # no "path": strings do not batch
        assert example["image"].dtype == np.uint8 and example["image"].shape == (H, W, 3)
        assert example["label"] == (0 if name.startswith("A/") else 1)
    assert np.array_equal(examples["A/1.png"]["image"], arrays["A/1.png"])
    assert np.array_equal(examples["A/3.webp"]["image"], arrays["A/3.webp"])
    assert np.abs(examples["A/2.JPG"]["image"].astype(int) - arrays["A/2.JPG"]).mean() < 4
    grey = arrays["B/deep/er/grey.png"]
    assert np.array_equal(examples["B/deep/er/grey.png"]["image"], np.repeat(grey[..., None], 3, -1))
    rgba = arrays["B/rgba.png"].astype(float)
    over_black = rgba[..., :3] * rgba[..., 3:] / 255  # alpha composited on black
    assert np.abs(examples["B/rgba.png"]["image"] - over_black).max() <= 1
    assert np.array_equal(examples["B/x_palette.png"]["image"], arrays["B/x_palette.png"])
    assert np.array_equal(source[-1]["image"], examples["B/x_palette.png"]["image"])
    with pytest.raises(IndexError):
        source[6]
    clone = pickle.loads(pickle.dumps(source))  # grain workers receive a pickled source
    assert np.array_equal(clone[0]["image"], examples["A/1.png"]["image"])


def test_folder_without_subfolders_has_no_labels_and_16bit_and_exif(tmp_path):
    deep = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 300).astype(np.uint16)
    _save(tmp_path / "a.png", Image.fromarray(deep))  # 16-bit grayscale
    rotated = Image.fromarray(_rgb(W, H, 7))  # stored W x H, EXIF says rotate 90 -> H x W
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(tmp_path / "b.jpg", rotated, exif=exif.tobytes())
    source = FolderSource(tmp_path)
    assert source.classes is None and source.info.num_classes is None and source.labels is None
    a, b = source[0], source[1]
    assert "label" not in a
    assert np.array_equal(a["image"][..., 0], np.round(deep / 257).astype(np.uint8))
    assert b["image"].shape == (H, W, 3)


def test_folder_skips_truncated_and_garbage_files(tmp_path):
    for k in range(3):
        _save(tmp_path / f"ok{k}.png", Image.fromarray(_rgb(seed=k)))
    jpeg = _jpeg_bytes()
    (tmp_path / "ok_trailing.jpg").write_bytes(jpeg + b"\x00" * 10)  # padded, still complete
    (tmp_path / "ok_trailing2.jpg").write_bytes(jpeg + b"vendor trailer after the end marker" * 4)
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not a PNG at all" * 10)
    (tmp_path / "empty.webp").write_bytes(b"")
    with pytest.warns(BadMediaWarning, match=r"skipped 3 unreadable.*(empty\.webp|garbage\.png|half\.jpg)"):
        source = FolderSource(tmp_path, size=8)
    assert len(source) == 5 and source.info.num_examples == 5
    assert sorted(pathlib.Path(s.path).name for s in source.skipped) == ["empty.webp", "garbage.png", "half.jpg"]
    assert "truncated JPEG" in next(s.reason for s in source.skipped if s.path.endswith("half.jpg"))
    assert [p.name for p in source.paths] == ["ok0.png", "ok1.png", "ok2.png", "ok_trailing.jpg", "ok_trailing2.jpg"]
    assert all(source[i]["image"].shape == (8, 8, 3) for i in range(len(source)))


def test_folder_strict_raises_naming_the_file(tmp_path):
    _save(tmp_path / "good.png", Image.fromarray(_rgb()))
    (tmp_path / "broken.jpg").write_bytes(_jpeg_bytes()[:200])
    with pytest.raises(ValueError, match=r"broken\.jpg.*strict"):
        FolderSource(tmp_path, strict=True)


def _corrupt_idat(path: pathlib.Path) -> None:
    """Damage a PNG's pixel data but keep its header and end intact: only a full decode notices."""
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 30
    data[start:start + 30] = bytes(b ^ 0xFF for b in data[start:start + 30])
    path.write_bytes(bytes(data))


def test_folder_file_failing_on_access_is_replaced_deterministically(tmp_path):
    arrays = [_rgb(seed=k) for k in range(4)]
    for k, array in enumerate(arrays):
        _save(tmp_path / f"{k}.png", Image.fromarray(array))
    _corrupt_idat(tmp_path / "1.png")
    _corrupt_idat(tmp_path / "3.png")
    source = FolderSource(tmp_path)
    assert len(source) == 4 and not source.skipped  # header and end look fine
    with pytest.warns(BadMediaWarning, match=r"1\.png: cannot decode"):
        item1 = source[1]
    assert np.array_equal(item1["image"], arrays[2])  # the next readable file
    with pytest.warns(BadMediaWarning, match=r"3\.png"):
        assert np.array_equal(source[3]["image"], arrays[0])  # wraps around
    assert np.array_equal(source[1]["image"], arrays[2])  # same answer every time, no new warning
    assert [pathlib.Path(s.path).name for s in source.skipped] == ["1.png", "3.png"]
    strict = FolderSource(tmp_path, strict=True)
    with pytest.raises(ValueError, match=r"1\.png.*cannot decode"):
        strict[1]


def test_folder_of_unreadable_files_raises_one_data_error(tmp_path):
    for k in range(3):
        (tmp_path / f"face{k}.png").write_text("<html>not found</html>\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone, no warning listing the same files first
        with pytest.raises(DataError) as info:
            FolderSource(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "none of the 3 image file(s) tried" in message
    assert "face0.png: not a readable image" in message and "point folder: at a directory of" in message
    with pytest.raises(DataError, match=r"none of the 2 image file\(s\) tried \(split 'train', 3 found\)"):
        from_spec("folder", str(tmp_path), "train")


def test_folder_whose_every_file_fails_on_access_raises_data_error(tmp_path):
    for k in range(2):
        _corrupt_idat(_save(tmp_path / f"{k}.png", Image.fromarray(_rgb(seed=k))))
    source = FolderSource(tmp_path)
    with pytest.warns(BadMediaWarning), pytest.raises(DataError, match=r"none of the 2 image.*1\.png: decode failed"):
        source[0]


def test_folder_empty_missing_and_mixed_sizes(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderSource(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images.*\.png \.jpg \.jpeg \.webp"):
        FolderSource(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"no images.*readme\.txt"):
        FolderSource(tmp_path / "text")
    with pytest.raises(NotADirectoryError):
        FolderSource(tmp_path / "text" / "readme.txt")
    _save(tmp_path / "mixed" / "a.png", Image.fromarray(_rgb(10, 20)))
    _save(tmp_path / "mixed" / "b.png", Image.fromarray(_rgb(30, 30)))
    with pytest.raises(ValueError, match=r"2 different sizes.*size=N"):
        FolderSource(tmp_path / "mixed")


def test_folder_size_resizes_short_side_then_centre_crops(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20] = (255, 0, 0)
    wide[:, 20:40] = (0, 255, 0)
    wide[:, 40:] = (0, 0, 255)
    _save(tmp_path / "a_wide.png", Image.fromarray(wide))
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = 200
    _save(tmp_path / "b_tall.png", Image.fromarray(tall))
    _save(tmp_path / "c_small.png", Image.fromarray(_rgb(5, 7)))
    exact = FolderSource(tmp_path, size=20)
    assert exact.info.image_shape == (20, 20, 3)
    assert np.array_equal(exact[0]["image"], wide[:, 20:40])  # short side already 20: pure centre crop
    small = FolderSource(tmp_path, size=10)
    images = [small[i]["image"] for i in range(3)]
    assert all(image.shape == (10, 10, 3) for image in images)
    # scaled by 1/2, then the green middle (bicubic blends the colour boundaries into the edge columns)
    assert np.abs(images[0][:, 1:-1].astype(int) - (0, 255, 0)).max() <= 2
    assert np.abs(images[1][3:-3].astype(int) - 200).max() <= 2  # scaled by 1/3: the grey band's middle
    with pytest.raises(ValueError, match="size"):
        FolderSource(tmp_path, size=0)


def test_folder_spec_and_splits(tmp_path):
    for k in range(25):
        _save(tmp_path / "ids" / f"{'AB'[k % 2]}" / f"{k:02d}.png", Image.fromarray(_rgb(6, 6, k)))
    (tmp_path / "ids" / "A" / "zz_bad.png").write_bytes(b"broken")  # 26th file, position 25 -> train
    root = tmp_path / "ids"
    with pytest.warns(BadMediaWarning):
        everything = from_spec("folder", f"{root};size=4", "all")
    with pytest.warns(BadMediaWarning, match="zz_bad"):
        train = from_spec("folder", f"{root};size=4", "train")
    test = from_spec("folder", f"{root};size=4;strict=0", "test")
    assert len(everything) == 25 and everything.info.image_shape == (4, 4, 3)
    assert len(test) == 3 and len(train) == 22 and len(train.skipped) == 1 and not test.skipped
    assert {p.name for p in test.paths} | {p.name for p in train.paths} == {p.name for p in everything.paths}
    assert not {p.name for p in test.paths} & {p.name for p in train.paths}
    # positions 0, 10, 20 of the sorted list A/00, A/02, ..., A/24, A/zz_bad, B/01, ...
    assert [p.relative_to(root).as_posix() for p in test.paths] == ["A/00.png", "A/20.png", "B/13.png"]
    assert list(test.labels) == [0, 0, 1]
    with pytest.raises(ValueError, match=r"bad\.png.*strict"):
        from_spec("folder", f"{root};strict=1", "train")
    fp = spec_fingerprint("folder", f"{root};size=4")
    assert fp == everything.fingerprint() and fp != spec_fingerprint("folder", f"{root};size=5")
    with pytest.raises(ValueError, match="split"):
        from_spec("folder", str(root), "validation")


def test_parse_spec_errors():
    assert parse_spec("video", "a/b.mpg;stride=2; size=64 ;max_frames=9;strict=yes") == (
        pathlib.Path("a/b.mpg"), {"stride": 2, "size": 64, "max_frames": 9, "strict": True})
    assert parse_spec("folder", "faces/") == (pathlib.Path("faces"), {})
    with pytest.raises(ValueError, match=r"bad option 'stride=2'.*size=, strict="):
        parse_spec("folder", "faces;stride=2")
    with pytest.raises(ValueError, match="not an integer"):
        parse_spec("video", "v.mpg;size=big")
    with pytest.raises(ValueError, match="must be positive"):
        parse_spec("video", "v.mpg;stride=0")
    with pytest.raises(ValueError, match="strict=1 or strict=0"):
        parse_spec("folder", "faces;strict=maybe")
    with pytest.raises(ValueError, match="no path"):
        parse_spec("video", ";size=4")


# ------------------------------------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def grid(shared_data):
    videos = sorted((shared_data / "grid").glob("*.mpg"))
    if len(videos) < 2:
        pytest.skip(f"GRID videos not found in {shared_data / 'grid'}")
    return videos


@pytest.fixture(scope="module")
def one_video_full(grid):
    return VideoSource(grid[0])


def test_video_one_file(grid, one_video_full):
    source = one_video_full
    assert isinstance(source, Source)
    assert len(source) == 75 and source.info.image_shape == (288, 360, 3) and source.info.num_classes == 1
    assert source.info.name == grid[0].stem and source.videos == [grid[0]]
    example = source[10]
    assert example["image"].dtype == np.uint8 and example["label"] == 0
    assert source.frame_index.shape == (75, 2) and source.frame_index[10].tolist() == [0, 10]
    assert example["image"].std() > 10  # a real picture, not a blank frame
    strided = VideoSource(grid[0], stride=2, size=64)
    assert len(strided) == 38 and strided.info.image_shape == (64, 64, 3)
    assert strided.frame_index[:, 1].tolist() == list(range(0, 75, 2))
    assert strided.gather(np.array([0, 5]))["image"].shape == (2, 64, 64, 3)
    # size=64 is the full frame's short side scaled to 64, centre crop: compare with resizing it here
    expected = Image.fromarray(source[2]["image"]).resize((80, 64), Image.Resampling.BICUBIC).crop((8, 0, 72, 64))
    assert np.array_equal(strided[1]["image"], np.asarray(expected))


def test_video_directory_labels_per_file(grid):
    source = VideoSource(grid[0].parent, size=32, max_frames=5)
    assert source.videos == grid and source.info.num_classes == len(grid)
    assert len(source) == 5 * len(grid)
    assert source.labels.tolist() == [k for k in range(len(grid)) for _ in range(5)]
    assert source.frame_index[:, 0].tolist() == source.labels.tolist()
    assert source.frame_index[:7, 1].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert source.info.image_shape == (32, 32, 3)


def test_video_truncated_file_keeps_intact_prefix(grid, one_video_full, tmp_path):
    data = grid[0].read_bytes()
    half = tmp_path / "half.mpg"
    half.write_bytes(data[: len(data) // 2])
    with pytest.warns(BadMediaWarning, match=r"half\.mpg: frame \d+ of \d+ is corrupt"):
        source = VideoSource(half)
    (skipped,) = source.skipped
    assert skipped.path == str(half) and skipped.frame == len(source) and skipped.frames >= 1
    assert source.skipped_frames == skipped.frames
    assert 30 <= len(source) < 75
    assert np.array_equal(source.images, one_video_full.images[: len(source)])  # the kept frames are exact
    with pytest.raises(ValueError, match=rf"half\.mpg: frame {len(source)} of \d+ is corrupt.*strict"):
        VideoSource(half, strict=True)


def test_video_directory_with_undecodable_file(grid, tmp_path):
    shutil.copy(grid[0], tmp_path / "b_good.mpg")
    (tmp_path / "a_garbage.mpg").write_bytes(b"\x00\x01 not a video" * 50)
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(BadMediaWarning, match=r"a_garbage\.mpg: ffmpeg cannot open it"):
        source = VideoSource(tmp_path, max_frames=3, size=16)
    assert [p.name for p in source.videos] == ["a_garbage.mpg", "b_good.mpg"]
    assert source.skipped[0].frame is None and source.skipped_frames == 0
    assert source.labels.tolist() == [1, 1, 1]  # labels stay the file's index
    with pytest.raises(ValueError, match=r"a_garbage\.mpg"):
        VideoSource(tmp_path, strict=True, max_frames=3)
    with pytest.raises(FileNotFoundError, match="missing.mpg"):
        VideoSource(tmp_path / "missing.mpg")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"no videos.*\.mpg \.mp4"):
        VideoSource(tmp_path / "none")


def test_video_spec_and_splits(grid):
    spec = f"{grid[0]};stride=2;size=16"
    test = from_spec("video", spec, "test")
    train = from_spec("video", spec, "train")
    assert test.frame_index[:, 1].tolist() == [0, 20, 40, 60]  # kept frames 0, 10, 20, 30 (stride 2)
    assert len(train) == 34 and not set(train.frame_index[:, 1]) & set(test.frame_index[:, 1])
    capped = from_spec("video", f"{grid[0].parent};size=16;max_frames=12", "test")
    assert capped.frame_index.tolist() == [[v, f] for v in range(len(grid)) for f in (0, 10)]
    assert spec_fingerprint("video", spec) == test.fingerprint()
