"""Random-access sources over image folders and video files, for faces a user has on disk.

Both follow `data.base.Source`: `len(source)`, `source[i] -> {"image": uint8 HxWx3, "label": np.int64}`
and `source.info`. Spec strings (parsed by `from_spec`; paths may not contain ';'):

  folder:<dir>[;size=N][;strict=1]
      Every image under <dir>, recursively (.png .jpg .jpeg .webp by default, any case), in sorted
      path order; hidden files and folders (".name") are ignored. Label = index of the image's
      top-level sub-folder among the sorted top-level sub-folders holding images (faces/A/**, faces/B/**
      -> 0, 1); images directly in <dir> have no label when there are no such sub-folders (and form
      class "." otherwise, with a warning).
  video:<file-or-dir>[;stride=K][;size=N][;max_frames=M][;strict=1]
      The frames of one video, or of every video under a directory (recursively, sorted; .mpg .mp4
      .avi .mov .mkv .webm). Label = index of the video file among the sorted files (one GRID speaker
      = one video = one identity). stride=K keeps frames 0, K, 2K, ...; max_frames=M keeps at most M
      of those per video.

  size=N      resize the short side to N, then centre-crop N x N (Pillow, bicubic with antialiasing),
              so every image has shape (N, N, 3) and batches stack.
  strict=1    the first unreadable image or corrupt frame raises an error naming the file (and frame).

Splits (`split` argument): "all" = every item; "test" = every 10th item (item numbers 0, 10, 20, ...);
"train" = the rest. Item numbers are positions in the sorted file list (folder: counted before any
bad file is dropped, so a broken file never moves another image between splits) or, for video, the
position among the kept frames *of each video* (after stride and max_frames). Video splits are
frame-interleaved: a test frame's neighbours 1/25 s away are in train, so the test split measures
reconstruction of seen footage, not generalisation; hold out whole videos for that.

Pixels: every image comes out RGB uint8. Grayscale ("L", "1") is replicated to three channels; 16-bit
grayscale is scaled by 1/257; palette images are expanded; alpha (RGBA, LA, palette transparency) is
composited over black (rgb * alpha / 255), so transparent areas are black rather than whatever colour
the encoder left under them. EXIF orientation is applied.

Bad input, folder: at construction every file's header is parsed and its end checked (JPEG EOI marker,
PNG IEND chunk, WebP RIFF length, GIF trailer); a file that fails the header parse, or fails the end check
and then also fails a full decode, is dropped up front: listed in `source.skipped` with its reason,
excluded from `len(source)` and reported in one warning. A file that passes these checks but fails to
decode later (damage in the middle of the data) is caught on access: item i then returns the next
readable file (i+1, i+2, ... wrapping around), deterministically, and the file is added to
`source.skipped` with a warning naming it, so an epoch never crashes. `strict=True` raises instead, at
construction or on access.

Bad input, video: decoding is eager (see `VideoSource`) with ffmpeg's `-xerror`, so it stops at the
first frame ffmpeg flags as corrupt. Frames from that one to the end of that video are dropped and
counted (`source.skipped[k].frames`, `source.skipped_frames`) with a warning naming the file and frame;
a file ffmpeg cannot open at all is dropped whole. For a truncated file (an interrupted copy, the usual
damage) this keeps exactly the intact prefix; damage in the middle of a file also loses that file's
later frames.

Bad input, every file: a folder none of whose images can be read (text files named .png, an HTML page
saved for every download) raises `DataError` naming the folder, the files tried, one bad file and the fix,
whether it is found at construction or, when headers pass, as every item fails to decode on access.

Processes: JAX is running when a training run builds its sources, and JAX warns through
`os.register_at_fork` that any `os.fork()` "will likely lead to a deadlock". Building a video source
starts ffmpeg three ways (measured with strace on `swap_df_grid:smoke`): `ffmpeg -version` once
(imageio-ffmpeg finding its binary), one decode per video (imageio's reader) and one frame count per
video (`count_frames_and_secs`). Each is a fork+exec done in C by `_posixsubprocess`, which on Linux
uses vfork: the child runs no Python and only async-signal-safe calls before exec, so no lock another
thread holds can bite and no at-fork hook runs. The decode used to be the exception: imageio-ffmpeg passes
`preexec_fn=os.setpgrp` (to keep Ctrl-C from ffmpeg), which forces a real fork, runs the at-fork hooks
(hence JAX's warning on every video run) and runs Python in the child before exec, which can deadlock
there. `_ffmpeg_reader` sets imageio-ffmpeg's documented `IMAGEIO_FFMPEG_NO_PREVENT_SIGINT=1` (unless
the user set it) so the reader is vfork+exec like the rest; the cost is that Ctrl-C also stops an ffmpeg
that is decoding, which is what a user pressing it wants. Folder images decode with Pillow in-process.
grain's worker processes (`worker_count > 0`, data.pipeline) use multiprocessing's spawn context, also
vfork+exec of a fresh interpreter, as does its resource tracker; nothing forks without exec.
tests/test_forks.py holds all of this.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import threading
import warnings
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageOps

from data.base import SPLITS, ArraySource, DataNotFoundError, SourceInfo, check_index
from zoo.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXTENSIONS = (".mpg", ".mp4", ".avi", ".mov", ".mkv", ".webm")
TEST_EVERY = 10

SPEC_FORMS = {
    "folder:<dir>[;size=N][;strict=1]": "images under <dir> (recursive, sorted; .png .jpg .jpeg .webp); "
    "label = top-level sub-folder index; size=N resizes+centre-crops to NxN; test = every 10th image",
    "video:<file-or-dir>[;stride=K][;size=N][;max_frames=M][;strict=1]": "frames of a video or of every "
    "video in a directory (.mpg .mp4 .avi .mov .mkv .webm, via imageio-ffmpeg); label = video index; "
    "test = every 10th kept frame of each video",
}


class NotADirectoryDataError(DataError, NotADirectoryError):
    """A folder: spec names a file; also a NotADirectoryError, which callers may catch."""


class BadMediaWarning(UserWarning):
    """An image or video (or part of one) could not be read and was skipped."""


class Skipped(NamedTuple):
    """One skipped file, or for video the dropped tail of one file."""

    path: str
    reason: str
    frame: int | None = None  # video: first dropped frame (None: the file could not be opened)
    frames: int = 0  # video: frames dropped from this file (0 where ffmpeg could not count them)


# ----------------------------------------------------------------------------------------------
# Pixels


def to_rgb_array(image: Image.Image, size: int | None = None) -> np.ndarray:
    """A decoded Pillow image as RGB uint8 HxWx3 (conversions as in the module docstring), optionally resized."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(image).astype(np.float64)
        grey = np.round(np.clip(grey, 0, 65535) / 257).astype(np.uint8)
        image = Image.fromarray(grey)  # "L"
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size)
        background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        image = background
    if image.mode != "RGB":
        image = image.convert("RGB")
    if size is not None:
        image = resize_crop(image, size)
    return np.asarray(image, dtype=np.uint8)


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """Short side to `size` (bicubic, antialiased), then the centred size x size crop."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _check_size(size: int | None) -> int | None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise DataError(f"size={size!r}: pass a positive int (the output is size x size) or None")
    return None if size is None else int(size)


def _split_positions(n: int, split: str) -> np.ndarray:
    """Positions 0..n-1 that belong to `split` (test = every TEST_EVERY-th, from 0)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not supported; use one of {', '.join(SPLITS)}")
    positions = np.arange(n)
    if split == "all":
        return positions
    is_test = positions % TEST_EVERY == 0
    return positions[is_test] if split == "test" else positions[~is_test]


def _find_files(root: pathlib.Path, extensions: Sequence[str]) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(files with an accepted extension, other files) under root, recursive, sorted, hidden names skipped."""
    wanted = tuple(e.lower() for e in extensions)
    found: list[pathlib.Path] = []
    others: list[pathlib.Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = pathlib.Path(dirpath) / name
            (found if path.suffix.lower() in wanted else others).append(path)
    return sorted(found, key=lambda p: p.relative_to(root).parts), others


def _stat_digest(paths: Iterable[pathlib.Path], extra: str) -> str:
    """A hash of options and each file's path, size and mtime: changes when the inputs change."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        st = path.stat()
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Folders of images


_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"


def _end_ok(path: pathlib.Path, image_format: str | None) -> bool:
    """Whether the file ends the way a complete file of its format does (cheap truncation check)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        length = f.tell()
        f.seek(max(0, length - 64))
        tail = f.read()
        if image_format == "JPEG":
            return _JPEG_EOI in tail.rstrip(b"\0\r\n\t ")[-8:]
        if image_format == "PNG":
            return tail.endswith(_PNG_IEND)
        if image_format == "GIF":
            return tail.endswith(b";")
        if image_format == "WEBP":
            f.seek(4)
            return int.from_bytes(f.read(4), "little") + 8 <= length
    return True  # no cheap check for other formats; decoding on access catches them


_EXIF_IN_HEADER = ("JPEG", "MPO", "WEBP", "TIFF")  # formats whose EXIF is read with the header


def _orientation(image: Image.Image) -> int:
    """EXIF orientation (1 = as stored). Only read where the header holds it: PNG's getexif decodes the image."""
    if image.format not in _EXIF_IN_HEADER:
        return 1
    return int(image.getexif().get(0x0112, 1))


def _open_oriented(path: pathlib.Path) -> Image.Image:
    """The decoded image with EXIF orientation applied (raises on any decode problem)."""
    with Image.open(path) as image:
        orientation = _orientation(image)
        image.load()
        return ImageOps.exif_transpose(image) if orientation != 1 else image.copy()


def _probe(path: pathlib.Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header; raises ValueError(reason) for a bad file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = image.format
            orientation = _orientation(image)
        if width < 1 or height < 1:
            raise ValueError(f"empty image ({width}x{height})")
        if not _end_ok(path, image_format):
            try:  # ends oddly (e.g. trailing bytes after the JPEG end marker): decide by decoding
                _open_oriented(path)
            except Exception as e:
                raise ValueError(f"truncated {image_format} ({e})") from e
    except ValueError:
        raise
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError...
        raise ValueError(f"not a readable image ({type(e).__name__}: {e})") from e
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _unreadable_folder(root: pathlib.Path, tried: int, example: Skipped, where: str) -> DataError:
    """The error for a folder none of whose files decodes: a typo'd or wrong folder, not an empty dataset."""
    return DataError(
        f"folder {root}: none of the {tried} image file(s) tried {where}could be read, e.g. {example.path}: "
        f"{example.reason}; point folder: at a directory of {' '.join(IMAGE_EXTENSIONS)} images, or replace "
        "the unreadable files (renamed or half-downloaded files are typical; `file <path>` shows what one is)"
    )


class FolderSource:
    """Images under a folder, decoded with Pillow on access (see the module docstring for every rule).

    `paths[i]` is the file behind item i, `classes[label]` the sub-folder a label stands for, `skipped`
    the files dropped (at construction, or on access when they fail to decode; then item i returns the
    next readable file). Construction parses every header (about 0.1 ms a file), so counts are known
    up front; decoding happens per item, in whichever process reads it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        strict: bool = False,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        size: int | None = None,
        split: str = "all",
    ):
        self.root = pathlib.Path(root)
        self.size = _check_size(size)
        self.strict = bool(strict)
        self.extensions = tuple(extensions)
        if not self.root.exists():
            raise DataNotFoundError(f"folder {self.root}: no such directory; check the path in the folder: spec")
        if not self.root.is_dir():
            raise NotADirectoryDataError(f"folder {self.root}: not a directory (for one video use video:{self.root})")
        candidates, others = _find_files(self.root, self.extensions)
        if not candidates:
            seen = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else " (it is empty)"
            raise DataError(
                f"folder {self.root}: no images with the accepted extensions {' '.join(self.extensions)} "
                f"(searched recursively, hidden files ignored){seen}"
            )
        self._candidates = candidates
        groups = [p.relative_to(self.root).parts[0] if len(p.relative_to(self.root).parts) > 1 else "."
                  for p in candidates]
        self.classes: list[str] | None = sorted(set(groups)) if set(groups) != {"."} else None
        if self.classes and "." in self.classes:
            warnings.warn(
                f"folder {self.root}: {groups.count('.')} image(s) lie directly in the folder beside sub-folders "
                f"{', '.join(c for c in self.classes if c != '.')}; they form class '.' (label "
                f"{self.classes.index('.')})",
                BadMediaWarning, stacklevel=2,
            )
        class_index = {name: k for k, name in enumerate(self.classes or [])}

        self.skipped: list[Skipped] = []
        paths, labels, shapes = [], [], []
        for position in _split_positions(len(candidates), split):
            path = candidates[position]
            try:
                shape = _probe(path)
            except ValueError as e:
                if self.strict:
                    raise DataError(f"{path}: {e} (strict mode; drop strict to skip bad files)") from None
                self.skipped.append(Skipped(str(path), str(e)))
                continue
            paths.append(path)
            labels.append(class_index.get(groups[position], 0))
            shapes.append(shape)
        if not paths:
            where = f"(split {split!r}, {len(candidates)} found) "
            raise _unreadable_folder(self.root, len(self.skipped), self.skipped[0], where)
        if self.skipped:
            names = ", ".join(s.path for s in self.skipped[:10]) + (" ..." if len(self.skipped) > 10 else "")
            warnings.warn(
                f"folder {self.root}: skipped {len(self.skipped)} unreadable image(s): {names} "
                "(see source.skipped for reasons)",
                BadMediaWarning, stacklevel=2,
            )
        if self.size is None and len(set(shapes)) > 1:
            by_shape = {}
            for path, shape in zip(paths, shapes):
                by_shape.setdefault(shape, path)
            examples = "; ".join(f"{h}x{w} e.g. {p}" for (h, w), p in list(by_shape.items())[:3])
            raise DataError(
                f"folder {self.root}: images have {len(by_shape)} different sizes ({examples}); batches need one "
                "size: pass size=N (spec: folder:<dir>;size=N) to resize and centre-crop every image to N x N"
            )
        self.paths: list[pathlib.Path] = paths
        self._labels = np.asarray(labels, np.int64) if self.classes else None
        height, width = (self.size, self.size) if self.size else shapes[0]
        self._bad: set[int] = set()
        self._lock = threading.Lock()
        self.info = SourceInfo(
            name=self.root.resolve().name,
            image_shape=(height, width, 3),
            num_classes=len(self.classes) if self.classes else None,
            num_examples=len(paths),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = check_index(index, len(self))
        for step in range(len(self)):
            i = (start + step) % len(self)
            if i in self._bad:
                continue
            try:
                image = to_rgb_array(_open_oriented(self.paths[i]), self.size)
            except Exception as e:
                self._mark_bad(i, e)
                continue
            example: dict[str, Any] = {"image": image}
            if self._labels is not None:
                example["label"] = self._labels[i]
            return example
        raise _unreadable_folder(self.root, len(self.skipped), self.skipped[-1], f"({len(self._candidates)} found) ")

    def _mark_bad(self, i: int, error: Exception) -> None:
        path = self.paths[i]
        if self.strict:
            raise DataError(f"{path}: cannot decode ({type(error).__name__}: {error}) (strict mode)") from error
        with self._lock:
            if i in self._bad:
                return
            self._bad.add(i)
            self.skipped.append(Skipped(str(path), f"decode failed ({type(error).__name__}: {error})"))
        warnings.warn(
            f"{path}: cannot decode ({type(error).__name__}: {error}); item {i} and later items that land on it "
            "return the next readable image instead",
            BadMediaWarning, stacklevel=3,
        )

    @property
    def labels(self) -> np.ndarray | None:
        """Labels per item as int64 [N] (None without sub-folders)."""
        return None if self._labels is None else self._labels.copy()

    def fingerprint(self) -> str:
        """Changes when any candidate file or an option changes; cheap (file stats only)."""
        return _stat_digest(self._candidates, f"folder\0{self.size}\0{self.extensions}")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FolderSource({self.info}, skipped={len(self.skipped)})"


# ----------------------------------------------------------------------------------------------
# Videos


@dataclasses.dataclass
class _Decoded:
    frames: list[np.ndarray]
    numbers: list[int]
    skipped: Skipped | None


_NO_PREEXEC = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"


def _ffmpeg_reader(path: pathlib.Path):
    """imageio's ffmpeg reader, stopping at the first corrupt frame (-xerror), audio ignored.

    Started without imageio-ffmpeg's preexec_fn (its documented switch), so subprocess never forks with
    Python in the child: see "Processes" in the module docstring.
    """
    import imageio.v2 as iio

    os.environ.setdefault(_NO_PREEXEC, "1")

    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "video sources decode with imageio-ffmpeg, which is not installed: pip install imageio-ffmpeg "
            "(or the project's [faces] extra)"
        ) from e
    return iio.get_reader(path, format="FFMPEG", input_params=["-xerror"], output_params=["-an"])


def _decode_video(
    path: pathlib.Path, *, stride: int, max_frames: int | None, size: int | None, strict: bool
) -> _Decoded:
    """Kept frames of one video (every stride-th, at most max_frames), decoded once; damage per the module doc."""
    frames: list[np.ndarray] = []
    numbers: list[int] = []
    try:
        reader = _ffmpeg_reader(path)
    except ImportError:
        raise
    except Exception as e:
        reason = f"ffmpeg cannot open it ({str(e).splitlines()[0]})"
        if strict:
            raise DataError(f"{path}: {reason} (strict mode)") from e
        return _Decoded(frames, numbers, Skipped(str(path), reason))
    decoded, error = 0, None
    try:
        for frame in reader:
            if decoded % stride == 0:
                image = frame if size is None else to_rgb_array(Image.fromarray(frame), size)
                frames.append(np.ascontiguousarray(image, dtype=np.uint8))
                numbers.append(decoded)
            decoded += 1
            if max_frames is not None and len(frames) >= max_frames:
                return _Decoded(frames, numbers, None)  # stopped early: the rest is not wanted
    except Exception as e:  # a frame imageio could not read whole
        error = e
    finally:
        reader.close()
    import imageio_ffmpeg

    try:
        total, _ = imageio_ffmpeg.count_frames_and_secs(str(path))  # a plain decode, conceals damage
    except Exception:
        total = decoded
    if total <= decoded and error is None:
        if decoded == 0:
            reason = "no video frames"
            if strict:
                raise DataError(f"{path}: {reason} (strict mode)")
            return _Decoded(frames, numbers, Skipped(str(path), reason, 0, 0))
        return _Decoded(frames, numbers, None)
    total = max(total, decoded + 1)
    detail = f": {str(error).splitlines()[0]}" if error is not None else ""
    reason = f"frame {decoded} of {total} is corrupt (truncated or damaged file{detail})"
    if strict:
        raise DataError(f"{path}: {reason} (strict mode; without it the frames before it are kept)")
    reason += f"; frames {decoded}-{total - 1} dropped"
    return _Decoded(frames, numbers, Skipped(str(path), reason, decoded, total - decoded))


class VideoSource(ArraySource):
    """Frames of one video or a directory of videos, decoded once into memory at construction.

    Eager, because ffmpeg cannot seek cheaply: imageio restarts an ffmpeg process (and decodes from
    the previous keyframe) for every backward or far jump, so shuffled random access over a lazily
    indexed video costs tens of milliseconds an item, and MPEG-1 seeks are not guaranteed frame-exact.
    Decoding once gives exact frames, `gather` (whole batches by fancy indexing) and pickling into grain
    workers. Memory is N x H x W x 3 bytes: the 6 GRID videos (450 frames of 288x360) take 140 MB,
    with size=128 22 MB; stride, max_frames and size are applied while decoding, so only kept frames
    (already resized) are held. Full-length footage needs them.

    `videos[label]` is the file for a label, `frame_index[i] = (video, frame)` the frame number (in the
    video's full frame sequence) behind item i, `skipped` the files or tails dropped, `skipped_frames`
    their frame count.
    """

    def __init__(
        self,
        path_or_dir: str | os.PathLike[str],
        *,
        stride: int = 1,
        strict: bool = False,
        size: int | None = None,
        max_frames: int | None = None,
        split: str = "all",
    ):
        self.path = pathlib.Path(path_or_dir)
        self.size = _check_size(size)
        for name, value in (("stride", stride), ("max_frames", max_frames)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise DataError(f"{name}={value!r}: pass a positive int")
        self.stride, self.max_frames, self.strict = int(stride), max_frames, bool(strict)
        _split_positions(0, split)  # validates the name before any decoding
        if not self.path.exists():
            raise DataNotFoundError(f"video {self.path}: no such file or directory; check the path in the video: spec")
        if self.path.is_dir():
            videos, others = _find_files(self.path, VIDEO_EXTENSIONS)
            if not videos:
                seen = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else " (it is empty)"
                raise DataError(
                    f"video {self.path}: no videos with the accepted extensions {' '.join(VIDEO_EXTENSIONS)} "
                    f"(searched recursively){seen}"
                )
        else:
            videos = [self.path]
        self.videos: list[pathlib.Path] = videos
        self.skipped: list[Skipped] = []
        parts, labels, index = [], [], []
        for label, video in enumerate(videos):
            decoded = _decode_video(video, stride=self.stride, max_frames=max_frames, size=self.size, strict=strict)
            if decoded.skipped is not None:
                self.skipped.append(decoded.skipped)
                warnings.warn(f"{video}: {decoded.skipped.reason}", BadMediaWarning, stacklevel=2)
            keep = _split_positions(len(decoded.frames), split)
            parts.extend(decoded.frames[k] for k in keep)
            labels.extend([label] * len(keep))
            index.extend((label, decoded.numbers[k]) for k in keep)
            log.info("%s: %d frames kept for split %s", video, len(keep), split)
        if not parts:
            why = f" ({self.skipped[0].path}: {self.skipped[0].reason})" if self.skipped else ""
            raise DataError(f"video {self.path}: no frames decoded for split {split!r}{why}")
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            sizes = ", ".join(f"{s[0]}x{s[1]}" for s in sorted(shapes))
            raise DataError(
                f"video {self.path}: videos have different frame sizes ({sizes}); "
                "pass size=N (spec: video:<dir>;size=N) to resize and centre-crop every frame to N x N"
            )
        images = np.stack(parts)
        del parts
        name = self.path.resolve().stem if self.path.is_file() else self.path.resolve().name
        super().__init__(name, images, np.asarray(labels, np.int64), num_classes=len(videos))
        self.frame_index = np.asarray(index, np.int64).reshape(-1, 2)
        self.frame_index.flags.writeable = False

    @property
    def skipped_frames(self) -> int:
        """Frames dropped from damaged videos (files that could not be opened count 0: unknown)."""
        return sum(s.frames for s in self.skipped)

    def fingerprint(self) -> str:
        """Changes when any video file or an option changes; cheap (file stats only)."""
        return _stat_digest(self.videos, f"video\0{self.stride}\0{self.size}\0{self.max_frames}")

    def __repr__(self) -> str:
        return f"VideoSource({self.info}, skipped_frames={self.skipped_frames})"


# ----------------------------------------------------------------------------------------------
# Spec strings


_OPTIONS = {"folder": ("size", "strict"), "video": ("stride", "size", "max_frames", "strict")}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_spec(kind: str, rest: str) -> tuple[pathlib.Path, dict[str, Any]]:
    """(path, keyword options) of `folder:`/`video:` spec text after the colon, e.g. "faces;size=64"."""
    if kind not in _OPTIONS:
        raise DataError(f"{kind}: not a media spec kind (use folder or video)")
    usage = next(form for form in SPEC_FORMS if form.startswith(kind + ":"))
    path, *items = rest.split(";")
    if not path.strip():
        raise DataError(f"{kind}:{rest}: no path; the format is {usage}")
    options: dict[str, Any] = {}
    for item in items:
        if not item.strip():
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in _OPTIONS[kind] or not eq:
            raise DataError(
                f"{kind}:{rest}: bad option {item!r}; {kind} takes {', '.join(k + '=' for k in _OPTIONS[kind])} "
                f"(format {usage})"
            )
        if key == "strict":
            if value.lower() not in _TRUE + _FALSE:
                raise DataError(f"{kind}:{rest}: strict={value!r}; use strict=1 or strict=0")
            options[key] = value.lower() in _TRUE
        else:
            try:
                options[key] = int(value)
            except ValueError:
                raise DataError(f"{kind}:{rest}: {key}={value!r} is not an integer") from None
            if options[key] < 1:
                raise DataError(f"{kind}:{rest}: {key}={value} must be positive")
    return pathlib.Path(path.strip()), options


def from_spec(kind: str, rest: str, split: str = "train") -> FolderSource | VideoSource:
    """The source a `folder:` or `video:` spec names (`kind` before the first colon, `rest` after it)."""
    path, options = parse_spec(kind, rest)
    if kind == "folder":
        return FolderSource(path, split=split, **options)
    return VideoSource(path, split=split, **options)


def spec_fingerprint(kind: str, rest: str) -> str:
    """What `fingerprint()` of the spec's source would return, without decoding anything."""
    path, options = parse_spec(kind, rest)
    if kind == "folder":
        files, _ = _find_files(path, IMAGE_EXTENSIONS) if path.is_dir() else ([], [])
        return _stat_digest(files, f"folder\0{options.get('size')}\0{IMAGE_EXTENSIONS}")
    files = (_find_files(path, VIDEO_EXTENSIONS)[0] if path.is_dir() else [path]) if path.exists() else []
    return _stat_digest(files, f"video\0{options.get('stride', 1)}\0{options.get('size')}\0{options.get('max_frames')}")
