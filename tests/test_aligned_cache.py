"""aligned:VIDEO extracts once into the cache: reused by the next build, keyed by options and content, whole or absent,
never run again in a grain worker, and serving exactly what an explicit extract + aligned:DIR serves."""
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from data.faces import cached, extract
from data.sources import get_source
from zoo.errors import DataError

pytest.importorskip("cv2", reason="opencv-python-headless is part of the faces extra: pip install -e '.[faces]'")

VIDEO = "bbaf2n.mpg"
OPTIONS = "size=64;every=15"  # 5 of the clip's 75 frames


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE", str(root))
    return root / cached.SUBDIR


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """Every extraction run (its input and options), through the real function."""
    made: list[tuple] = []
    real = extract.extract

    def counting(input_path, output, options, every=1, **kwargs):
        made.append((str(input_path), options, every))
        return real(input_path, output, options, every=every, **kwargs)

    monkeypatch.setattr(extract, "extract", counting)
    return made


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def _items(source):
    return [source[i] for i in range(len(source))]


def test_a_second_build_reuses_the_cache_and_another_option_makes_a_new_entry(shared_data, cache, calls):
    spec = f"aligned:{shared_data / 'grid' / VIDEO};{OPTIONS}"
    train = get_source(spec, "train")
    assert len(calls) == 1 and len(_entries(cache)) == 1
    test = get_source(spec, "test")  # what runs.build does next, for the evaluation source
    again = get_source(spec, "train")
    assert len(calls) == 1, "the cached extraction was run again"
    assert len(train) + len(test) == 5 and train.directory == test.directory == again.directory
    for a, b in zip(_items(train), _items(again)):
        np.testing.assert_array_equal(a["image"], b["image"])

    other = get_source(spec.replace("every=15", "every=25"), "all")
    assert len(calls) == 2 and calls[-1][2] == 25 and len(_entries(cache)) == 2
    assert len(other) == 3 and other.directory != train.directory
    full = get_source(spec + ";face_type=full_face", "all")
    assert len(calls) == 3 and calls[-1][1].face_type == "full_face" and len(_entries(cache)) == 3
    assert {r["face_type"] for r in full.records} == {"full_face"} and len(full) == 5
    assert not [name for name in _entries(cache) if name.startswith(".")], "a private directory was left behind"


def test_served_faces_equal_an_explicit_extract_and_aligned_dir(shared_data, cache, tmp_path):
    video = shared_data / "grid" / VIDEO
    explicit = tmp_path / "faces"
    extract.extract(video, explicit, extract.Options(size=64), every=15, progress=False)
    for split in ("all", "test"):
        ours, theirs = get_source(f"aligned:{video};{OPTIONS}", split), get_source(f"aligned:{explicit}", split)
        assert ours.directory.parent == cache and ours.info.image_shape == theirs.info.image_shape == (64, 64, 3)
        assert [r["frame"] for r in ours.records] == [r["frame"] for r in theirs.records]
        assert len(ours) == len(theirs) > 0
        for a, b in zip(_items(ours), _items(theirs)):
            assert a.keys() == b.keys() == {"image", "label", "mask", "em_mask", "video", "frame"}
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    records = extract.read_index(ours.directory)
    assert records == extract.read_index(explicit)
    assert {r["source"] for r in records} == {str(video.absolute())}


def test_a_failed_extraction_leaves_no_entry_and_the_next_build_extracts(shared_data, cache, calls, monkeypatch):
    spec = f"aligned:{shared_data / 'grid' / VIDEO};{OPTIONS}"
    real_write, written = extract.write_face, []

    def dies_on_the_third_face(directory, face, rec):
        if len(written) == 2:
            raise KeyboardInterrupt  # as Ctrl-C mid-extraction
        written.append(rec["file"])
        real_write(directory, face, rec)

    monkeypatch.setattr(extract, "write_face", dies_on_the_third_face)
    with pytest.raises(KeyboardInterrupt):
        get_source(spec)
    assert written and _entries(cache) == []
    monkeypatch.setattr(extract, "write_face", real_write)
    assert len(get_source(spec, "all")) == 5 and len(calls) == 2


def test_a_killed_runs_private_directory_is_removed_only_once_its_process_is_gone(shared_data, cache):
    video = shared_data / "grid" / VIDEO
    name = cached.entry_name(video, extract.Options(size=64), 15)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = cached._host()
    leftovers = {f".{name}.{host}.{dead}.0a1b": False, f"..{name}.{host}.{dead}.0a1b.9f8e.extract": False,
                 f".{name}.{host}.{os.getpid()}.0a1b": True,  # a live run's (this process stands in for it)
                 f".{name}.otherhost.{dead}.0a1b": True,  # another machine's: its pid means nothing here
                 f".other-0123456789abcdef.{host}.{dead}.0a1b": True}  # another entry's
    for leftover in leftovers:
        (cache / leftover / "masks").mkdir(parents=True)
    get_source(f"aligned:{video};{OPTIONS}")
    kept = {p for p in _entries(cache) if p.startswith(".")}
    assert kept == {p for p, stays in leftovers.items() if stays}
    assert name in _entries(cache)


def test_workers_receive_the_finished_extraction_and_never_extract(shared_data, cache, monkeypatch):
    source = get_source(f"aligned:{shared_data / 'grid' / VIDEO};{OPTIONS}", "all")

    def refuse(*args, **kwargs):
        raise AssertionError("extraction ran while unpickling a source")

    monkeypatch.setattr(extract, "extract", refuse)
    monkeypatch.setattr(cached, "extraction", refuse)
    copy = pickle.loads(pickle.dumps(source))  # what grain sends each worker
    assert len(copy) == len(source) and copy.directory == source.directory
    np.testing.assert_array_equal(copy[3]["image"], source[3]["image"])


def test_the_key_follows_the_files_content_and_every_option(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"first")
    base = cached.entry_name(video, extract.Options(size=64), 1)
    assert base.startswith("clip-") and base == cached.entry_name(video, extract.Options(size=64), 1)
    others = [cached.entry_name(video, extract.Options(size=96), 1),
              cached.entry_name(video, extract.Options(size=64, face_type="head"), 1),
              cached.entry_name(video, extract.Options(size=64), 2)]
    os.utime(video, ns=(1, 1))
    video.write_bytes(b"other")  # same size; the content (and mtime) changed
    others.append(cached.entry_name(video, extract.Options(size=64), 1))
    assert len({base, *others}) == 5


def test_bad_specs_name_the_option_and_the_fix(shared_data, tmp_path, cache, calls):
    video = shared_data / "grid" / VIDEO
    for spec, expected in ((f"{video};size=big", "size='big' is not an integer"),
                           (f"{video};face_type=half", "face_type='half'; use one of"),
                           (f"{video};stride=2", "for a video, aligned takes size=N"),
                           (f"{video};size=8", r"size=8 \(an int >= 16\)"),
                           (f"{video};every=0", r"every=0 \(an int >= 1\)"),
                           (f"{tmp_path};every=3", "aligned:DIR takes size=N only .*apply to a video file")):
        with pytest.raises(DataError, match=expected):
            get_source(f"aligned:{spec}")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(DataError, match="ffmpeg cannot open this file"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_source(f"aligned:{tmp_path / 'notes.txt'}")
    assert len(calls) == 1 and _entries(cache) == []
