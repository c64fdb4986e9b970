"""Videos in and out of the merge: probe, read frames, write an MP4 or PNG frames that carry provenance.

* `probe(path)` reads what a video holds (frames, fps, size, audio, container metadata) with the ffmpeg
  binary imageio-ffmpeg ships: `ffmpeg -i` for streams and metadata, a decode for the frame count.
* `read_frames(path)` decodes RGB frames one at a time with ffmpeg's `-xerror`; fewer frames than the
  probe counted (a truncated or damaged file) is a DataError, since a merge must keep the frame count.
* `write_mp4` encodes frames with libx264 (yuv420p, `-crf`) through `imageio_ffmpeg.write_frames`, at the
  input's frame rate (NTSC rates as their exact fractions, 30000/1001...), and muxes the first audio
  stream of `audio_from` in the same ffmpeg run: copied when its codec is one MP4 players take
  (`MP4_AUDIO_COPY`), otherwise re-encoded to AAC (192 kb/s). GRID's MPEG-1 Layer II (mp2) is re-encoded:
  ffmpeg would copy it, but tags it as MP4 audio that reads back as "mp3" and that browsers do not
  play. Every frame carries `data.watermark`'s invisible mark (`data.provenance.frame_marker`), the container
  gets `title` and `comment` (the provenance notice) and, where a signing certificate is configured, signed
  C2PA Content Credentials (`data.provenance.sign_file`); a sidecar `<file>.json`
  manifest (`data.provenance.write_manifest`) follows, and the video is written under a temporary name,
  checked by probing it (ffmpeg's own exit status is not reported by imageio-ffmpeg) and renamed only
  then; any failure removes it.
* `write_pngs` writes frames as PNGs with provenance text chunks and the watermark (`data.provenance.save_png`)
  into a temporary folder renamed to the output folder when every frame is written.

H.264 in yuv420p needs even sizes: a frame with an odd width or height is padded by repeating its last
column or row (logged), the one case where the output's size differs from the input's.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import secrets
import shutil
import subprocess
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from data import provenance
from zoo.errors import DataError, WorkdirError

log = logging.getLogger(__name__)

MP4_AUDIO_COPY = ("aac", "mp3", "alac", "ac3", "eac3", "opus")
"""Audio codecs copied into an MP4 unchanged; any other is re-encoded to AAC."""
AAC_BITRATE = "192k"
VIDEO_NOTICE = provenance.NOTICE.replace("image", "video")
_NO_PREEXEC = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"  # see data.media, "Processes": no fork with Python in the child
_NTSC = (24, 30, 48, 60, 120)


class VideoInfo(NamedTuple):
    """What a video holds: frames, frame rate, (width, height), its first audio stream, container metadata."""

    frames: int
    fps: float
    size: tuple[int, int]
    has_audio: bool
    audio_codec: str | None
    metadata: dict[str, str] = {}


class Written(NamedTuple):
    """A finished output: where, how many frames, and what happened to the audio ("copy", "aac" or "none")."""

    path: pathlib.Path
    frames: int
    audio: str


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg ships (or the one IMAGEIO_FFMPEG_EXE names)."""
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError("merging video needs imageio-ffmpeg: pip install imageio-ffmpeg (or the [faces] extra)"
                          ) from error
    os.environ.setdefault(_NO_PREEXEC, "1")
    return imageio_ffmpeg.get_ffmpeg_exe()


def exact_fps(fps: float) -> Fraction:
    """The frame rate as a fraction: 29.97 and the other NTSC rates as N*1000/1001, anything else to 1/1000."""
    for rate in _NTSC:
        if abs(fps - rate * 1000 / 1001) < 0.006:
            return Fraction(rate * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: (\w+)")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frames, fps, size, audio and container metadata of a video; DataError naming the file when ffmpeg cannot."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"video {path} does not exist (or is not a file); check the --input path")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, errors="replace", timeout=300)
    streams = proc.stderr
    video = next((m for line in streams.splitlines() if (m := _VIDEO.search(line))), None)
    if video is None:
        last = streams.strip().splitlines()[-1] if streams.strip() else "no output"
        raise DataError(f"{path} is not a readable video (ffmpeg: {last}); pass a video file (.mp4 .mpg .avi ...) "
                        "or a folder of images")
    line = next(line for line in streams.splitlines() if _VIDEO.search(line))
    rate = _FPS.search(line)
    audio = next((m.group(1) for line in streams.splitlines() if (m := _AUDIO.search(line))), None)
    return VideoInfo(frames=count_frames(path), fps=float(rate.group(1)) if rate else 0.0,
                     size=(int(video.group(2)), int(video.group(3))), has_audio=audio is not None,
                     audio_codec=audio, metadata=_ffmetadata(proc.stdout))


def _ffmetadata(text: str) -> dict[str, str]:
    """Global key=value pairs of ffmpeg's FFMETADATA1 output (before any [SECTION]), escapes undone."""
    found: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if line.startswith("["):
            break
        key, eq, value = line.partition("=")
        if eq:
            found[key.lower()] = re.sub(r"\\(.)", r"\1", value)
    return found


def count_frames(path: pathlib.Path) -> int:
    """Frames ffmpeg decodes from the first video stream (errors concealed, so damaged frames count)."""
    import imageio_ffmpeg

    ffmpeg_exe()
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except RuntimeError as error:
        raise DataError(f"{path}: ffmpeg cannot decode it ({str(error).strip().splitlines()[-1]}); "
                        "check that it is a complete video") from error
    return int(frames)


def read_frames(path: str | os.PathLike, expected: int | None = None) -> Iterator[np.ndarray]:
    """The video's frames as RGB uint8 [H, W, 3]; DataError when fewer than `expected` decode (truncated or damaged)."""
    import imageio_ffmpeg

    path = pathlib.Path(path)
    ffmpeg_exe()
    reader = imageio_ffmpeg.read_frames(str(path), input_params=["-xerror"], output_params=["-an"])
    decoded = 0
    try:
        width, height = reader.__next__()["size"]
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            decoded += 1
    except (RuntimeError, OSError, StopIteration) as error:
        raise DataError(f"{path}: decoding stopped at frame {decoded} ({str(error).strip().splitlines()[0]}); "
                        "the file is damaged: re-encode or re-download it") from error
    finally:
        reader.close()
    if expected is not None and decoded < expected:
        raise DataError(f"{path}: only {decoded} of its {expected} frames decode cleanly: the file is truncated or "
                        "damaged; re-encode or re-download it (ffmpeg -i IN -c:v libx264 OUT.mp4 keeps what is left)")


def audio_plan(codec: str | None) -> str:
    """What `write_mp4` does with an input's audio codec: "copy" into MP4, "aac" re-encode, or "none"."""
    if codec is None:
        return "none"
    return "copy" if codec in MP4_AUDIO_COPY else "aac"


def pad_even(frame: np.ndarray) -> np.ndarray:
    """The frame with its last row and/or column repeated to even sizes, which yuv420p H.264 needs."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge") if height % 2 or width % 2 else frame


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...] = (".mp4",)) -> pathlib.Path:
    """The output path once its folder exists and is writable and its name is usable; WorkdirError otherwise."""
    path = pathlib.Path(path)
    parent = path.absolute().parent
    if not parent.is_dir():
        raise WorkdirError(f"cannot write {path}: folder {parent} does not exist; create it first or pick another "
                           "--output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkdirError(f"cannot write {path}: folder {parent} is not writable; pick another --output")
    if suffixes and path.suffix.lower() not in suffixes and path.is_file():
        raise WorkdirError(f"--output {path} is a file without a video suffix ({', '.join(suffixes)})")
    return path


def _temporary(path: pathlib.Path) -> pathlib.Path:
    """A fresh hidden name beside `path`, keeping its suffix (ffmpeg picks the container by it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}")


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], *, fps: float | Fraction,
              audio_from: str | os.PathLike | None = None, crf: int = 18, title: str = "",
              manifest: Mapping[str, object] | Callable[[], Mapping[str, object]] | None = None,
              watermark: bool = True) -> Written:
    """Encode `frames` (RGB uint8, one size) as H.264 MP4 with `audio_from`'s audio, metadata and a sidecar manifest.

    Every frame gets `data.watermark`'s invisible mark first (`watermark=False` only for frames already
    marked, or real footage a benchmark encodes as its baseline); the manifest's "Watermark" says whether it did.

    Nothing takes `path`'s name until the file is complete and probes with every frame; an exception raised
    by `frames` (the merge failing halfway) propagates after the temporary file is removed. `manifest` may
    be a function, called once every frame is written, so counts made while writing can go in.
    """
    import imageio_ffmpeg

    ffmpeg_exe()  # sets the no-fork setting before imageio-ffmpeg starts its subprocess
    path = check_output(path)
    if not 0 <= crf <= 51:
        raise DataError(f"crf={crf}: libx264 takes 0 (lossless) to 51 (worst); 18 is visually lossless")
    rate = fps if isinstance(fps, Fraction) else exact_fps(float(fps))
    if rate <= 0:
        raise DataError(f"frame rate {fps} must be positive")
    source = probe(audio_from) if audio_from is not None else None
    plan = audio_plan(source.audio_codec if source else None)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise DataError(f"no frames to write to {path}")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        log.warning("%s: frames are %dx%d; H.264 (yuv420p) needs even sizes, so the last row/column is repeated",
                    path, width, height)
    params = ["-crf", str(int(crf)), "-metadata", f"title={title}", "-metadata", f"comment={VIDEO_NOTICE}"]
    if plan == "aac":
        params += ["-b:a", AAC_BITRATE]
    mark = provenance.frame_marker(enabled=watermark)
    tmp = _temporary(path)
    written = 0
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width + width % 2, height + height % 2), fps=rate, quality=None, codec="libx264",
            macro_block_size=1, ffmpeg_log_level="error", output_params=params,
            audio_path=str(audio_from) if plan != "none" else None, audio_codec=plan if plan != "none" else None)
        writer.send(None)
        try:
            for frame in _same_size(first, iterator):
                writer.send(np.ascontiguousarray(pad_even(mark(frame))))
                written += 1
        finally:
            writer.close()
        made = probe(tmp) if tmp.is_file() else None
        if made is None or made.frames != written or made.has_audio != (plan != "none"):
            raise DataError(f"ffmpeg did not write {path} completely ({written} frames sent, "
                            f"{made.frames if made else 0} written; audio {plan}); see its message above")
        credentials = provenance.sign_file(tmp, "video/mp4", title or path.name, {"Comment": VIDEO_NOTICE},
                                           source_type="composite")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sidecar(path, lambda: {"Title": title, "Frames": written, "fps": str(rate), "Audio": plan,
                            "Watermark": mark.record, "C2PA": credentials,
                            **(manifest() if callable(manifest) else manifest or {})})
    return Written(path, written, plan)


def _same_size(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`first` then `rest`, each checked to be RGB uint8 of `first`'s shape (one video has one size)."""
    yield _checked(first, first.shape, 0)
    for index, frame in enumerate(rest, start=1):
        yield _checked(frame, first.shape, index)


def _checked(frame: np.ndarray, shape: tuple[int, ...], index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape != shape:
        raise DataError(f"frame {index} is {frame.dtype} {frame.shape}; a video needs RGB uint8 frames of the "
                        f"first frame's shape {shape}")
    return frame


def _sidecar(path: pathlib.Path, record: Callable[[], Mapping[str, object]]) -> None:
    """`<path>.json` beside a finished output; if that fails the output goes too (no file without its manifest)."""
    try:
        provenance.write_manifest(path, record())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_pngs(directory: str | os.PathLike, frames: Iterable[tuple[str, np.ndarray]],
               chunks: Mapping[str, object]) -> Written:
    """Write (name, frame) pairs as `directory/<name>.png` with provenance text chunks; returns the count.

    The frames go to a hidden temporary folder beside `directory`, renamed to it when all are written, so
    a failure leaves no partial folder. `directory` must not exist yet or be empty.
    """
    directory = pathlib.Path(directory)
    check_output(directory, suffixes=())
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise WorkdirError(f"--output {directory} exists and is not an empty folder; pass a new folder name (or an "
                           ".mp4 file)")
    tmp = directory.with_name(f".{directory.name}.{secrets.token_hex(6)}.partial")
    tmp.mkdir()
    written = 0
    try:
        for name, frame in frames:
            provenance.save_png(tmp / f"{name}.png", frame, {"Comment": VIDEO_NOTICE, **chunks})
            written += 1
        if not written:
            raise DataError(f"no frames to write to {directory}")
        if directory.exists():
            directory.rmdir()
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Written(directory, written, "none")
