"""FF++-style face crops (data/faces/crops.py) and merged-frame fake sets (`train.generate --kinds merged`).

References are independent of the code under test: the crop square worked out by hand from a dlib
detection (centre, int(1.3 * max(w, h))) or written as literal numbers for the frame-edge cases, frames
decoded with imageio, and the merged frame made by the merge verb's CLI itself.
"""
import json
import os
import pathlib

import chex
import numpy as np
import pytest

from data.faces import crops
from data.sources import get_source
from zoo.errors import DataError

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is part of the faces extra: pip install -e '.[faces]'")

VIDEO = "bbaf2n.mpg"
EVERY = 25  # frames 0, 25 and 50 of the clip's 75


def _frames(path: pathlib.Path, numbers: list[int]) -> dict[int, np.ndarray]:
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), "ffmpeg") as reader:
        return {k: np.asarray(frame) for k, frame in enumerate(reader) if k in numbers}


def _by_hand(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """FF++'s square worked out here: side int(1.3 * max(w, h)) about the box centre, inside the frame."""
    left, top, right, bottom = (int(v) for v in box)
    side = int(1.3 * max(right - left, bottom - top))
    x, y = (left + right) // 2 - side // 2, (top + bottom) // 2 - side // 2
    assert x >= 0 and y >= 0 and x + side <= frame.shape[1] and y + side <= frame.shape[0], "GRID faces are inside"
    square = frame[y:y + side, x:x + side]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if size < side else cv2.INTER_LINEAR)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE", str(root))
    return root / crops.SUBDIR


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Every crop build (its input), through the real function."""
    made: list[str] = []
    real = crops.crop_faces

    def counting(input_path, directory, **kwargs):
        made.append(str(input_path))
        return real(input_path, directory, **kwargs)

    monkeypatch.setattr(crops, "crop_faces", counting)
    return made


def test_the_crop_of_a_dlib_box_is_the_hand_computed_square(shared_data, analyzer):
    frame = _frames(shared_data / "grid" / VIDEO, [0])[0]
    box = analyzer.largest_face(frame)
    left, top, right, bottom = (int(v) for v in box)
    side = int(1.3 * max(right - left, bottom - top))
    x, y = (left + right) // 2 - side // 2, (top + bottom) // 2 - side // 2
    assert crops.crop_box(box, frame.shape) == (x, y, side)
    np.testing.assert_array_equal(crops.face_crop(frame, box, size=side), frame[y:y + side, x:x + side])
    small = crops.face_crop(frame, box, size=64)
    chex.assert_shape(small, (64, 64, 3))
    np.testing.assert_array_equal(small, _by_hand(frame, box, 64))


@pytest.mark.parametrize("box, clip, pad", [
    # box (l, t, r, b) on a 100 x 80 frame: w = h = 40, side int(52.0) = 52, centre (cx, cy), corner (cx-26, cy-26)
    ((-10, 5, 30, 45), (0, 0, 52), (-16, -1, 52)),  # past the left edge: the corner is clamped, the side kept
    ((70, 50, 110, 90), (64, 44, 36), (64, 44, 52)),  # past the right/bottom: the side shrinks to 36 (FF++)
    ((30, 20, 70, 60), (24, 14, 52), (24, 14, 52)),  # inside: both rules agree
])
def test_frame_edges_clip_as_ff_plus_plus_or_pad_with_black(box, clip, pad):
    frame = np.arange(80 * 100 * 3, dtype=np.int64).reshape(80, 100, 3).astype(np.uint8)
    frame = np.ascontiguousarray(frame)
    assert crops.crop_box(box, frame.shape, edge="clip") == clip
    assert crops.crop_box(box, frame.shape, edge="pad") == pad
    x, y, side = clip
    np.testing.assert_array_equal(crops.face_crop(frame, box, size=side), frame[y:y + side, x:x + side])
    x, y, side = pad
    padded = crops.face_crop(frame, box, size=side, edge="pad")
    expected = np.zeros((side, side, 3), np.uint8)
    for row in range(side):
        for col in range(side):
            if 0 <= y + row < 80 and 0 <= x + col < 100:
                expected[row, col] = frame[y + row, x + col]
    np.testing.assert_array_equal(padded, expected)


def test_bad_arguments_are_refused():
    frame = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="edge"):
        crops.crop_box((1, 1, 5, 5), frame.shape, edge="wrap")
    with pytest.raises(ValueError, match="no square"):
        crops.crop_box((20, 20, 30, 30), frame.shape)
    with pytest.raises(ValueError, match="size"):
        crops.face_crop(frame, (1, 1, 5, 5), size=0)


def test_facecrop_serves_the_hand_crops_of_grid_frames_with_video_and_frame(shared_data, cache, analyzer):
    video = shared_data / "grid" / VIDEO
    source = get_source(f"facecrop:{video};size=64;every={EVERY}", "all")
    assert len(source) == 3 and source.info.image_shape == (64, 64, 3)
    frames = _frames(video, [0, 25, 50])
    for i, number in enumerate([0, 25, 50]):
        item = source[i]
        assert (int(item["frame"]), int(item["video"]), int(item["label"])) == (number, 0, 0)
        np.testing.assert_array_equal(item["image"], _by_hand(frames[number], analyzer.largest_face(frames[number]),
                                                              64))
    assert source.videos == ["bbaf2n"]
    assert [int(get_source(f"facecrop:{video};size=64;every={EVERY}", "test")[0]["frame"])] == [0]
    assert len(get_source(f"facecrop:{video};size=64;every={EVERY}", "train")) == 2


def test_the_cache_round_trip_reuses_an_entry_and_keys_every_option(shared_data, cache, builds):
    video = shared_data / "grid" / VIDEO
    spec = f"facecrop:{video};size=48;every={EVERY}"
    first = get_source(spec, "all")
    again = get_source(spec, "all")
    assert len(builds) == 1, "the cached crops were made again"
    assert again.directory == first.directory and first.directory.parent == cache
    for i in range(len(first)):
        np.testing.assert_array_equal(first[i]["image"], again[i]["image"])
    get_source(f"{spec};scale=1.5", "all")
    get_source(f"{spec};edge=pad", "all")
    assert len(builds) == 3 and len(list(cache.iterdir())) == 3  # each option a new entry, nothing half-written left
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    with open(first.directory / "index.jsonl") as f:
        record = json.loads(f.readline())
    assert record["source"] == str(video.resolve()) and record["frame"] == 0 and len(record["crop"]) == 3
    from data.provenance import read_provenance

    chunks = read_provenance(first.directory / record["file"])
    assert chunks["Description"] == crops.CROP_NOTICE and "Watermark" not in chunks


def test_an_image_folder_counts_the_frames_without_a_face(shared_data, cache, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(shared_data / "grid" / VIDEO, [0, 40])
    Image.fromarray(frames[0]).save(folder / "a.png")
    Image.fromarray(np.full_like(frames[0], 128)).save(folder / "b.png")  # no face
    Image.fromarray(frames[40]).save(folder / "c.png")
    source = get_source(f"facecrop:{folder};size=32", "all")
    assert [int(source[i]["frame"]) for i in range(len(source))] == [0, 2]
    summary = json.loads((source.directory / "summary.json").read_text())
    assert (summary["frames"], summary["crops"], summary["no_face"]) == (3, 2, [str(folder.resolve() / "b.png")])


def test_bad_specs_name_the_option_and_the_fix(shared_data, tmp_path, cache):
    video = shared_data / "grid" / VIDEO
    for spec, expected in [(f"facecrop:{video};sise=64", "bad option 'sise=64'"),
                           (f"facecrop:{video};size=big", "size='big' is not an integer"),
                           (f"facecrop:{video};edge=wrap", "edge='wrap'"),
                           (f"facecrop:{video};scale=0", "scale must be > 0"),
                           (f"facecrop:{tmp_path / 'missing.mp4'}", "no such file or directory")]:
        with pytest.raises(DataError, match=expected):
            get_source(spec, "all")
    blank = tmp_path / "blank"
    blank.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(blank / "x.png")
    with pytest.raises(DataError, match="no face found"):
        get_source(f"facecrop:{blank}", "all")
    assert not cache.is_dir() or not [p for p in cache.iterdir() if p.name.startswith(".")]
    assert os.environ["ZOO_CACHE"] == str(cache.parent)


# ------------------------------------------------------------------------------------------------
# Merged-frame fake sets: the bundled synthetic-face DF export merged into GRID frames. No GRID-trained
# swap model ships, so its faces look wrong; what is tested is the pipeline (frames, boxes, pairs, manifest).

SWAP = "swap_df_synthetic_narrow"
TINY_GRID = '''"""configs/swap_df_grid.py:smoke on every 25th frame (0, 25, 50) of each clip; the test split is frame 0."""
from train import sections
from configs import swap_df_grid


def get_config(arg=None):
    c = swap_df_grid.get_config("smoke")
    c.data.source = "aligned:{grid}/bbaf2n.mpg;size=64;every=25"
    c.data.source_b = "aligned:{grid}/lbax4n.mpg;size=64;every=25"
    return sections.apply_variant(c, arg, {{}})
'''


def _pixels(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def merged_set(tmp_path_factory, shared_data):
    from train import generate as gen

    root = tmp_path_factory.mktemp("merged")
    config = root / "grid_tiny.py"
    config.write_text(TINY_GRID.format(grid=(shared_data / "grid").resolve()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE", str(root / "cache"))
        record = gen.generate(root / "set", export=SWAP, config=str(config), n=1, kinds=["merged"])
    return root, record


def test_merged_set_manifest_pairs_each_fake_with_its_real_crop(merged_set):
    from data import fakeset

    root, record = merged_set
    out = root / "set"
    lines = fakeset.read_manifest(out)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == {line["file"] for line in lines}
    fakes = [line for line in lines if line["label"] == 1]
    assert [(f["file"], f["pair"], f["video"], f["frame"], f["identity"]) for f in fakes] == [
        ("fake/merged/a2b/0.png", "real/crop_a/0.png", "bbaf2n", 0, "bbaf2n"),
        ("fake/merged/b2a/0.png", "real/crop_b/0.png", "lbax4n", 0, "lbax4n")]
    assert all(f["kind"] == "merged" and f["generator"] == "swap_df/merged" for f in fakes)
    reals = [line for line in lines if line["label"] == 0]
    assert sorted((r["file"], r["video"], r["frame"]) for r in reals) == [
        ("real/crop_a/0.png", "bbaf2n", 0), ("real/crop_b/0.png", "lbax4n", 0)]
    assert record["counts"] == {"fake": {"merged": 2}, "real": {"crop_a": 1, "crop_b": 1}}
    assert record["merged"]["crop"] == {"scale": 1.3, "size": 64, "edge": "clip"} and record["merged"]["skipped"] == []
    source = fakeset.FakeSetSource(out, kind=["merged"])
    assert len(source) == 2 and source.info.image_shape == (64, 64, 3) and source.videos == ["bbaf2n", "lbax4n"]
    assert len(fakeset.FakeSetSource(out)) == 4


def test_merged_fake_is_the_merge_verbs_frame_and_real_the_same_crop_of_the_original(merged_set, shared_data,
                                                                                    analyzer, tmp_path):
    from PIL import Image

    from data import provenance
    from train import merge
    from zoo import catalogue, pretrained

    root, _ = merged_set
    frame = _frames(shared_data / "grid" / VIDEO, [0])[0]
    box = analyzer.largest_face(frame)
    real = _pixels(root / "set" / "real" / "crop_a" / "0.png")
    np.testing.assert_array_equal(real, _by_hand(frame, box, 64))
    assert provenance.read_provenance(root / "set" / "real" / "crop_a" / "0.png")["Description"] == crops.CROP_NOTICE

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(frame).save(frames / "f.png")
    export = pretrained.entry_path(SWAP, catalogue.REGISTRY[SWAP])
    assert merge.main(["--export", str(export), "--input", str(frames), "--output", str(tmp_path / "merged"),
                       "--direction", "a2b"]) == 0
    verb = _by_hand(_pixels(tmp_path / "merged" / "f.png"), box, 64)  # both carry a watermark: not bit-equal
    fake_path = root / "set" / "fake" / "merged" / "a2b" / "0.png"
    fake = _pixels(fake_path)
    assert _psnr(fake, verb) > 35, "the merged crop is not the merge verb's frame"
    assert _psnr(fake, real) < 25, "the fake is hardly changed from its real pair"
    chunks = provenance.read_provenance(fake_path)
    assert chunks["Description"] == provenance.NOTICE and chunks["Pair"] == "real/crop_a/0.png"
    assert (chunks["Video"], chunks["Frame"], json.loads(chunks["Box"])) == ("bbaf2n", "0", [int(v) for v in box])


def test_merged_kind_is_refused_before_writing_where_it_cannot_be_made(tmp_path):
    from train import generate as gen
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a swap run whose data are videos"):
        gen.generate(tmp_path / "s", export=SWAP, n=1, kinds=["merged"])  # its card's data: synthetic faces
    with pytest.raises(ConfigError, match="choose from"):
        gen.generate(tmp_path / "s", export=SWAP, n=1, kinds=["morphed"])
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_video_frames_are_found_for_video_sources_and_other_sources_refused(shared_data, tmp_path):
    from data.media import VideoSource
    from train import generate as gen

    path = shared_data / "grid" / VIDEO
    video = VideoSource(path, stride=25, size=32, split="all")  # frames 0, 25 and 50
    assert gen._held_out_frames(video, 2) == {path: [(0, 0), (1, 25)]}
    assert gen._held_out_frames(get_source("digits", "test"), 2) is None
