"""Face extraction: detect, fit 68 landmarks, align and mask every face of a video or image folder, onto disk.

`find_faces` does one frame. `extract` does a whole input (`python -m data.faces extract`) and writes:

    DIR/index.jsonl                     one JSON record per face (fields below), in frame order
    DIR/<stem>_<frame:06d>_<face>.png   the aligned face, its record's fields in PNG text chunks
    DIR/masks/<same name>               the landmark hull mask (grey PNG, 255 = face)
    DIR/masks/em_<same name>            the eyes-and-mouth mask
    DIR/summary.json                    options, counts, and the frames with no face, several faces or bad data

Record fields: file (PNG name relative to DIR), source (absolute input path: the video, or the image file),
frame (frame number in the video, or the image's position in the folder's sorted list), face (0 = largest
in its frame), face_type, size, matrix (2x3, frame px -> crop px), landmarks (68x2 frame px),
landmarks_aligned (68x2 crop px), box (left, top, right, bottom). `read_index` reads them back.

Every PNG also carries `data.provenance.EXTRACTED_NOTICE`: cut from a real frame, not generated.

Nothing half-written: everything is written into a hidden staging directory beside DIR
(`.DIR.<random>.extract`), which becomes DIR by one rename when the extraction succeeded; on an error,
Ctrl-C, or an input with no face at all it is removed. DIR must be new or empty, so an extraction never
mixes with an earlier one. A process killed outright leaves only the hidden staging directory.

Work is split across processes: the parent decodes (ffmpeg) and hands frames (or, for a folder, image
paths) to a pool of `workers` processes, each with its own dlib models (they cannot be pickled), which
detect, align, mask and write the PNGs, and return the records. The pool uses multiprocessing's spawn
context, never a bare fork (JAX forbids forking a process it runs in; tests/test_forks.py). A spawned
worker imports no JAX (the `data` and `zoo` packages load their public names on first use;
tests/test_import_graph.py checks it): it starts in about 2 s of CPU, the interpreter, OpenCV and dlib's
models (importing JAX through those packages used to add 3 s). On a short clip a second worker still
costs more than it saves on a loaded machine. Measured on this project's 2-core machine while other jobs
kept its load average at 8.4-9.7, one 75-frame GRID clip at 256 px whole_face, `python -m data.faces
extract` run twice each, interleaved with the code before the lazy packages: workers=1 took 8.6-8.9 s
wall (before: 9.6-11.7 s, the parent importing JAX too), 9.1-9.4 frames/s in the summary; workers=2
12.5-13.8 s wall (before: 21.3-25.8 s), 5.8-6.4 frames/s after 4.9-5.3 s of start-up (before: 3.4-4.1
frames/s after 9.0-10.7 s). The summary reports both rates.

Bad input: a path that does not exist, a folder with no images, a video ffmpeg cannot open, or an input
where no frame shows a face is a DataError naming the file and the fix, and leaves nothing behind. An
unreadable image in a folder, or the tail of a truncated video (fewer frames decode than the container
promises, or ffmpeg stops at a corrupt frame), is skipped, named in the summary and warned about; the
faces before it are kept. Faces smaller than the crop (the crop spans fewer frame pixels than `size`,
so it is upscaled) are kept and counted in the summary with the largest upscaling factor, since the usual
cause is low-resolution footage that is still worth training on; `--size` near the faces' extent avoids it.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import pathlib
import secrets
import shutil
import warnings
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from data.faces import align, masks
from zoo.errors import DataError
from zoo.files import atomic_write

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
SUMMARY = "summary.json"
MASKS = "masks"
FIELDS = ("file", "source", "frame", "face", "face_type", "size", "matrix", "landmarks", "landmarks_aligned", "box")
_JSON_FIELDS = ("matrix", "landmarks", "landmarks_aligned", "box")
_INT_FIELDS = ("frame", "face", "size")
MIN_SIZE = 16
EXTRACT_HINT = "python -m data.faces extract --input VIDEO_OR_DIR --output DIR"


class Face(NamedTuple):
    """One detected face, aligned: where it is in the frame, the crop, and the crop's masks."""

    box: np.ndarray  # int64 [4] left, top, right, bottom (frame px, inclusive, may pass the border)
    landmarks: np.ndarray  # float32 [68, 2] frame px
    matrix: np.ndarray  # float64 [2, 3] frame px -> crop px
    face_type: str
    size: int
    image: np.ndarray  # uint8 [size, size, 3]
    landmarks_aligned: np.ndarray  # float64 [68, 2] crop px
    mask: np.ndarray  # uint8 [size, size, 1] landmark hull
    em_mask: np.ndarray  # uint8 [size, size, 1] eyes and mouth


def find_faces(analyzer: Any, frame: np.ndarray, face_type: str, size: int, all_faces: bool = False,
               upsample: int = 1) -> list[Face]:
    """The faces in an RGB uint8 frame, largest (by detector box area) first: only it unless all_faces."""
    return _find_faces(analyzer, frame, face_type, size, all_faces, upsample)[0]


def _find_faces(analyzer: Any, frame: np.ndarray, face_type: str, size: int, all_faces: bool,
                upsample: int) -> tuple[list[Face], int]:
    """`find_faces` and how many faces the detector found (more than returned when only the largest is kept)."""
    from data.faces.dlib_models import check_image

    check_image(frame, "frame")
    align.check_face_type(face_type)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    boxes = analyzer.detect(frame, upsample)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = boxes[np.argsort(-areas, kind="stable")]
    faces = []
    for box in boxes if all_faces else boxes[:1]:
        landmarks = analyzer.landmarks(frame, box)
        matrix = align.alignment_matrix(landmarks, face_type, size)
        aligned = align.transform_points(landmarks, matrix)
        faces.append(Face(box=box, landmarks=landmarks, matrix=matrix, face_type=face_type, size=size,
                          image=align.warp_face(frame, matrix, size), landmarks_aligned=aligned,
                          mask=masks.hull_mask(aligned, size, face_type),
                          em_mask=masks.eyes_mouth_mask(aligned, size)))
    return faces, len(boxes)


def record(face: Face, file: str, source: str, frame: int, index: int) -> dict[str, Any]:
    """The JSON-ready index record of a face (see the module docstring for the fields)."""
    return {
        "file": file, "source": source, "frame": int(frame), "face": int(index), "face_type": face.face_type,
        "size": int(face.size), "matrix": face.matrix.tolist(), "landmarks": face.landmarks.astype(float).tolist(),
        "landmarks_aligned": np.round(face.landmarks_aligned, 4).tolist(), "box": [int(v) for v in face.box],
    }


def face_name(stem: str, frame: int, index: int) -> str:
    """The PNG name of face `index` of `frame`: <stem>_<frame:06d>_<face>.png."""
    return f"{stem}_{int(frame):06d}_{int(index)}.png"


def write_face(directory: pathlib.Path, face: Face, rec: dict[str, Any]) -> None:
    """Write a face's PNG (record in text chunks) and its two mask PNGs under directory, each atomically."""
    from data.provenance import EXTRACTED_NOTICE, save_png

    chunks = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in rec.items() if k != "file"}
    save_png(directory / rec["file"], face.image, chunks, notice=EXTRACTED_NOTICE)
    where = {"source": rec["source"], "frame": rec["frame"], "face": rec["face"]}
    save_png(directory / MASKS / rec["file"], face.mask, {**where, "mask": "landmark hull"}, notice=EXTRACTED_NOTICE)
    save_png(directory / MASKS / f"em_{rec['file']}", face.em_mask, {**where, "mask": "eyes and mouth"},
             notice=EXTRACTED_NOTICE)


def read_face_png(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record stored in an extracted face PNG's text chunks (lists and ints parsed), plus its Description."""
    from data.provenance import read_provenance

    path = pathlib.Path(path)
    try:
        chunks = read_provenance(path)
        rec: dict[str, Any] = {"file": path.name, **chunks}
        for key in _JSON_FIELDS:
            rec[key] = json.loads(chunks[key])
        for key in _INT_FIELDS:
            rec[key] = int(chunks[key])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a face PNG written by `{EXTRACT_HINT}` ({type(e).__name__}: {e})") from e
    return rec


def read_index(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of DIR/index.jsonl, checked for every field, or a DataError saying how to make one."""
    directory = pathlib.Path(directory)
    path = directory / INDEX
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory of extracted faces; make one with `{EXTRACT_HINT}`")
    if not path.is_file():
        raise DataError(f"{directory}: no {INDEX}, so it is not a face extraction; make one with `{EXTRACT_HINT}`")
    records = []
    with open(path, "rb") as f:  # decoded line by line, so a damaged byte is named with its line
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError(f"a JSON {type(rec).__name__}, not an object")
                missing = [k for k in FIELDS if k not in rec]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                _check_record(rec)
            except (ValueError, TypeError) as e:
                raise DataError(f"{path}, line {number}: not an extraction record ({e}); re-run the extraction") from e
            records.append(rec)
    return records


_SHAPES = {"matrix": (2, 3), "landmarks": (68, 2), "landmarks_aligned": (68, 2), "box": (4,)}


def _check_record(rec: dict[str, Any]) -> None:
    """Raise ValueError unless a record's fields have the types and shapes the extraction writes."""
    file = rec["file"]
    if not isinstance(file, str) or pathlib.PurePath(file).name != file or file.startswith("."):
        raise ValueError(f"file {file!r} is not a plain file name inside the directory")
    for key in _INT_FIELDS:
        if isinstance(rec[key], bool) or not isinstance(rec[key], int) or rec[key] < 0:
            raise ValueError(f"{key} {rec[key]!r} is not a non-negative integer")
    if rec["face_type"] not in align.FACE_TYPES or not isinstance(rec["source"], str):
        raise ValueError(f"face_type {rec['face_type']!r} or source {rec['source']!r} is not valid")
    for key, shape in _SHAPES.items():
        value = np.asarray(rec[key], dtype=np.float64)
        if value.shape != shape or not np.all(np.isfinite(value)):
            raise ValueError(f"{key} is not {' x '.join(map(str, shape))} finite numbers")


# ----------------------------------------------------------------------------------------------
# Reading the input


class _Item(NamedTuple):
    frame: int
    payload: Any  # an RGB uint8 frame, or the path of an image file to decode in the worker
    source: str
    stem: str


@dataclasses.dataclass
class _Input:
    """What an input holds: its items (lazily), how many there are (an estimate for video), and its problems."""

    path: pathlib.Path
    kind: str  # "video" or "folder"
    total: int | None
    items: Iterator[_Item]
    unreadable: list[str]
    close: Callable[[], None] = lambda: None


def _open_input(path: pathlib.Path, every: int) -> _Input:
    from data import media

    if not path.exists():
        raise DataError(f"input {path}: no such file or directory; pass a video file or a directory of images")
    if path.is_dir():
        images, others = media._find_files(path, media.IMAGE_EXTENSIONS)
        if not images:
            videos = [p for p in others if p.suffix.lower() in media.VIDEO_EXTENSIONS]
            if videos:
                hint = f"; it holds videos (e.g. {videos[0].name}): pass one as --input"
            elif others:
                hint = f"; it holds {len(others)} other file(s), e.g. {others[0].name}"
            else:
                hint = " (it is empty)"
            raise DataError(f"input {path}: no images ({' '.join(media.IMAGE_EXTENSIONS)}, searched recursively, "
                            f"hidden files ignored){hint}")
        kept = images[::every]
        items = (_Item(k * every, str(p), str(p.absolute()), p.stem) for k, p in enumerate(kept))
        return _Input(path, "folder", len(kept), items, [])
    return _open_video(path, every)


def _open_video(path: pathlib.Path, every: int) -> _Input:
    from data import media

    try:
        reader = media._ffmpeg_reader(path)
        meta = reader.get_meta_data()
    except ImportError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "video" if path.suffix.lower() in media.VIDEO_EXTENSIONS else "file"
        raise DataError(
            f"input {path}: ffmpeg cannot open this {kind} ({first}); it is truncated, corrupt or not a video "
            "(an MP4 cut short loses its index and opens not at all): re-copy or re-encode it, or pass a "
            "directory of images"
        ) from None
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    promised = int(math.floor(fps * duration + 0.5)) if fps > 0 and duration > 0 else None
    source = str(path.absolute())
    unreadable: list[str] = []
    wrapper = _Input(path, "video", None if promised is None else -(-promised // every), iter(()), unreadable,
                     reader.close)

    def frames() -> Iterator[_Item]:
        decoded = 0
        try:
            for frame in reader:
                if decoded % every == 0:
                    yield _Item(decoded, np.ascontiguousarray(frame, dtype=np.uint8), source, path.stem)
                decoded += 1
        except Exception as e:  # ffmpeg stopped at a corrupt frame (-xerror)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            unreadable.append(f"{path}: frame {decoded} onward unreadable ({reason}): truncated or damaged file")
        finally:
            reader.close()
        if decoded == 0 and not unreadable:
            raise DataError(f"input {path}: ffmpeg decodes no video frames from it; is it an audio-only file?")
        if promised is not None and decoded < promised - max(2, promised // 50) and not unreadable:
            unreadable.append(
                f"{path}: frames {decoded}-{promised - 1} missing (the container promises {promised} at {fps:g} fps, "
                f"{decoded} decode): truncated or damaged file")

    wrapper.items = frames()
    return wrapper


# ----------------------------------------------------------------------------------------------
# Workers


@dataclasses.dataclass(frozen=True)
class Options:
    """What every worker needs to know to turn a frame into written faces."""

    face_type: str = "whole_face"
    size: int = 256
    all_faces: bool = False
    upsample: int = 1
    detector: str = "hog"


class _Result(NamedTuple):
    frame: int
    source: str
    records: list[dict[str, Any]]
    detected: int  # faces the detector found (all, also when only the largest is kept)
    extents: list[float]  # frame pixels each kept crop spans
    error: str | None  # why the item could not be read


_worker: dict[str, Any] = {}


def _init_worker(options: Options, directory: str) -> None:
    """Load the dlib models once in this process (they cannot be pickled) and remember where to write."""
    from data.faces.dlib_models import FaceAnalyzer

    _worker.update(analyzer=FaceAnalyzer(options.detector), options=options, directory=pathlib.Path(directory))


def _process(item: _Item) -> _Result:
    """Find, align, mask and write the faces of one frame or image file; return their records."""
    options: Options = _worker["options"]
    frame = item.payload
    if isinstance(frame, str):
        from PIL import Image

        from data import media

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                frame = media.to_rgb_array(media._open_oriented(pathlib.Path(frame)))
        except Exception as e:  # Pillow's many exception types for a broken or non-image file
            return _Result(item.frame, item.source, [], 0, [], f"{item.payload}: not a readable image "
                           f"({type(e).__name__}: {e})")
        frame = np.ascontiguousarray(frame)
    faces, detected = _find_faces(_worker["analyzer"], frame, options.face_type, options.size, options.all_faces,
                                  options.upsample)
    records = []
    for k, face in enumerate(faces):
        rec = record(face, face_name(item.stem, item.frame, k), item.source, item.frame, k)
        write_face(_worker["directory"], face, rec)
        records.append(rec)
    return _Result(item.frame, item.source, records, detected,
                   [align.source_extent(f.matrix, f.size) for f in faces], None)


def _results(items: Iterator[_Item], options: Options, directory: pathlib.Path, workers: int) -> Iterator[_Result]:
    """Each item's result, in input order, from this process (workers=1) or a spawn pool of `workers`.

    At most 4 frames per worker are in flight, so a long video is never decoded far ahead into memory.
    """
    if workers == 1:
        _init_worker(options, str(directory))
        try:
            yield from map(_process, items)
        finally:
            _worker.clear()
        return
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
        initargs=(options, str(directory)))
    pending: collections.deque[concurrent.futures.Future[_Result]] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(_process, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# The whole input


class SmallFaceWarning(UserWarning):
    """Faces were upscaled to fill the aligned crop: the crop spans fewer frame pixels than its size."""


@dataclasses.dataclass
class Summary:
    """What an extraction found: counts, and the frames (or image files) with no face, several faces or bad data."""

    input: str
    output: str
    frames: int = 0
    faces: int = 0
    no_face: list[str] = dataclasses.field(default_factory=list)
    several_faces: list[str] = dataclasses.field(default_factory=list)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    upscaled: int = 0
    max_upscale: float = 1.0
    seconds: float = 0.0
    startup: float = 0.0  # seconds until the first frame's result: model loading, worker start
    all_faces: bool = False

    @property
    def frames_per_second(self) -> float:
        """Frames read over the whole run's time, start-up included."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_frames_per_second(self) -> float:
        """Frames after the first over the time after it: the rate a long input approaches."""
        rest = self.seconds - self.startup
        return (self.frames - 1) / rest if self.frames > 1 and rest > 0 else float("nan")

    def text(self, limit: int = 12) -> str:
        """A few lines for people: totals, then each kind of problem with the frames or files it hit."""
        lines = [f"{self.input}: {self.frames} frame(s) read, {self.faces} face(s) written to {self.output} "
                 f"in {self.seconds:.1f} s ({self.frames_per_second:.1f} frames/s; "
                 f"{self.steady_frames_per_second:.1f} frames/s after {self.startup:.1f} s of start-up)"]
        several = "several faces" + ("" if self.all_faces else " (the largest kept)")
        for label, items in (("no face", self.no_face), (several, self.several_faces),
                             ("unreadable", self.unreadable)):
            if items:
                shown = "; ".join(_ranges(items)[:limit])
                more = f" ... ({len(items)} in all; every one in {SUMMARY})" if len(_ranges(items)) > limit else ""
                lines.append(f"  {label}: {len(items)}: {shown}{more}")
        if self.upscaled:
            lines.append(f"  upscaled: {self.upscaled} face(s) span fewer frame pixels than the crop size "
                         f"(up to {self.max_upscale:.2f}x enlarged); a smaller --size keeps them sharp")
        return "\n".join(lines)


def _ranges(items: Sequence[str]) -> list[str]:
    """Labels with runs of consecutive "frame N" collapsed into "frames A-B"."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            out.append(f"frame {run[0]}" if len(run) == 1 else f"frames {run[0]}-{run[-1]}")
            run.clear()

    for item in items:
        number = item.removeprefix("frame ")
        if item.startswith("frame ") and number.isdigit():
            if run and int(number) != run[-1] + 1:
                flush()
            run.append(int(number))
        else:
            flush()
            out.append(item)
    flush()
    return out


def _check_output(output: pathlib.Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        what = "is a file" if not output.is_dir() else f"already holds files (e.g. {next(output.iterdir()).name})"
        raise DataError(f"output {output} {what}; pass a new or empty directory (an extraction never mixes with "
                        "or overwrites another)")


def _check_options(options: Options, every: int, workers: int) -> None:
    from data.faces.dlib_models import DETECTORS

    align.check_face_type(options.face_type)
    problems = []
    if isinstance(options.size, bool) or not isinstance(options.size, int) or options.size < MIN_SIZE:
        problems.append(f"size={options.size!r} (an int >= {MIN_SIZE})")
    for name, value, low in (("every", every, 1), ("workers", workers, 1), ("upsample", options.upsample, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"{name}={value!r} (an int >= {low})")
    if options.detector not in DETECTORS:
        problems.append(f"detector={options.detector!r} (one of {', '.join(DETECTORS)})")
    if problems:
        raise DataError(f"bad extraction option(s): {'; '.join(problems)}")


def extract(input_path: str | os.PathLike[str], output: str | os.PathLike[str], options: Options = Options(),
            every: int = 1, workers: int = 1, progress: bool = True) -> Summary:
    """Extract every `every`-th frame's faces of a video or image folder into a new directory (module docstring)."""
    import time

    from tqdm import tqdm

    _check_options(options, every, workers)
    input_path, output = pathlib.Path(input_path), pathlib.Path(output)
    _check_output(output)
    source = _open_input(input_path, every)
    summary = Summary(input=str(input_path), output=str(output), all_faces=options.all_faces)
    staging = output.absolute().parent / f".{output.name}.{secrets.token_hex(4)}.extract"
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    try:
        try:
            (staging / MASKS).mkdir(parents=True)
        except OSError as e:
            raise DataError(f"output {output}: cannot create {staging} ({e.strerror}); pass a writable "
                            "location") from e
        with tqdm(total=source.total, unit="frame", desc=f"extract {input_path.name}", disable=not progress,
                  dynamic_ncols=True) as bar:
            for result in _results(source.items, options, staging, workers):
                if not summary.startup:
                    summary.startup = time.perf_counter() - start
                where = f"frame {result.frame}" if source.kind == "video" else result.source
                if result.error is not None:
                    summary.unreadable.append(result.error)
                else:
                    summary.frames += 1
                    if not result.records:
                        summary.no_face.append(where)
                    if result.detected > 1:
                        summary.several_faces.append(where)
                records.extend(result.records)
                for extent in result.extents:
                    if extent < options.size:
                        summary.upscaled += 1
                        summary.max_upscale = max(summary.max_upscale, options.size / extent)
                summary.faces = len(records)
                bar.set_postfix(faces=summary.faces, refresh=False)
                bar.update(1)
        summary.unreadable.extend(source.unreadable)
        summary.seconds = time.perf_counter() - start
        if not records:
            raise DataError(_no_faces_message(input_path, summary, options))
        with atomic_write(staging / INDEX) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        _write_summary(staging / SUMMARY, summary, options, every, workers)
        _publish(staging, output)
    finally:
        source.close()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _warn(summary, options.size)
    log.info("%s", summary.text())
    return summary


def _no_faces_message(path: pathlib.Path, summary: Summary, options: Options) -> str:
    if summary.frames == 0:
        example = summary.unreadable[0] if summary.unreadable else "nothing decoded"
        return (f"input {path}: none of its {len(summary.unreadable)} image(s) could be read, e.g. {example}; "
                "pass a directory of .png/.jpg/.jpeg/.webp images (renamed or half-downloaded files are typical)")
    return (f"input {path}: no face found in any of the {summary.frames} frame(s) read ({options.detector} "
            f"detector, upsample {options.upsample}); nothing was written. If it shows people, their faces may be "
            "small (try --upsample 2), turned away or in profile (try --detector cnn)")


def _publish(staging: pathlib.Path, output: pathlib.Path) -> None:
    """Give the finished staging directory the output's name in one rename (output absent or empty)."""
    try:
        os.rename(staging, output)
    except OSError as e:
        raise DataError(f"output {output}: cannot move the finished extraction into place ({e.strerror}); it must "
                        "be a new or empty directory on the same filesystem") from e


def _write_summary(path: pathlib.Path, summary: Summary, options: Options, every: int, workers: int) -> None:
    import datetime

    from data.provenance import EXTRACTED_NOTICE, package_versions

    data = {"Description": EXTRACTED_NOTICE, "options": {**dataclasses.asdict(options), "every": every,
                                                         "workers": workers},
            **dataclasses.asdict(summary), "frames_per_second": summary.frames_per_second,
            "steady_frames_per_second": summary.steady_frames_per_second,
            "versions": package_versions("dlib-bin", "dlib", "face-recognition-models", "opencv-python-headless",
                                         "imageio-ffmpeg"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _warn(summary: Summary, size: int) -> None:
    from data.media import BadMediaWarning

    if summary.unreadable:
        warnings.warn(f"{summary.input}: skipped unreadable data: {'; '.join(summary.unreadable[:5])}"
                      + (" ..." if len(summary.unreadable) > 5 else ""), BadMediaWarning, stacklevel=3)
    if summary.upscaled:
        warnings.warn(f"{summary.input}: {summary.upscaled} face(s) were smaller than the {size}-pixel crop "
                      f"and enlarged up to {summary.max_upscale:.2f}x; a smaller --size keeps them sharp",
                      SmallFaceWarning, stacklevel=3)
