"""The `aligned:DIR[;size=N]` source: faces written by `python -m data.faces extract`, with their masks.

`aligned:VIDEO[;size=N;face_type=T;every=K]` names a video file instead: it is extracted once into the
zoo's cache at size N (default 256), face type T (default whole_face) and every K-th frame (default 1),
and served from there (data/faces/cached.py says where, how the entry is keyed and how it stays whole);
`workers=N` spreads a long video's first extraction over N processes.

Each example is {"image": uint8 [S,S,3], "label": int64, "mask": uint8 [S,S,1], "em_mask": uint8 [S,S,1],
"video": int64, "frame": int64}, the fields data/synthetic's faces carry with masks=1, so `masked_training`
and `eyes_mouth_prio` read real faces exactly as synthetic ones. "mask" is the landmark hull (forehead
included for whole_face and head), "em_mask" the eyes and mouth, 255 = inside. S is the extraction's size,
or size=N: faces are resized with OpenCV (INTER_AREA to shrink, bicubic to enlarge) and masks bilinearly,
so mask edges become soft (values between 0 and 255), as synthetic masks' anti-aliased edges are.

Label = the index of the face's group among the extraction's sorted groups, a group being the source
video, or for images the folder holding the image: a one-video extraction, or one of a flat folder of
photos, is all label 0; a folder with one sub-folder per person gets one label per person. Splits follow
the other sources: the records in index order (frame order), "test" = every 10th (0, 10, 20, ...),
"train" = the rest, "all" = every one. "video" is the label and "frame" the face's frame number in its
video (an image's position in its folder), as synthetic clips number theirs, so `video_pairs:` pairs faces
of one video (`frame_index` holds both for every face without reading one). As with video:, neighbouring
frames fall in both splits, so "test" measures reconstruction of seen footage, not of an unseen clip;
extract a held-out clip into its own directory for that.

Faces are decoded from their PNGs on access (about 2 ms a 256 px face and its masks), so an extraction
of any length costs no memory up front. For faster reading, `python -m data.local_tfds` packs an aligned
set into array_record once, masks included.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from data.base import SourceInfo, check_index
from data.faces.extract import EXTRACT_HINT, INDEX, MASKS, read_index
from zoo.errors import DataError

SPEC_FORMS = {
    "aligned:<dir>[;size=N]": "faces extracted by `python -m data.faces extract` with their masks (mask, em_mask); "
    "label = source video (or image folder) index; size=N resizes; test = every 10th face",
    "aligned:<video>[;size=N;face_type=T;every=K]": "the same from a video file, extracted once into the zoo's "
    "cache ($ZOO_CACHE/aligned) at size N (256), face type T (whole_face), every K-th frame (1), then reused",
}
TEST_EVERY = 10


def _group(source: str) -> str:
    """What a label stands for: the video a face came from, or the folder of the image it came from."""
    from data.media import VIDEO_EXTENSIONS

    path = pathlib.Path(source)
    return source if path.suffix.lower() in VIDEO_EXTENSIONS else str(path.parent)


def _resize(array: np.ndarray, size: int, mask: bool) -> np.ndarray:
    import cv2

    if array.shape[0] == size:
        return array
    interpolation = cv2.INTER_LINEAR if mask else cv2.INTER_AREA if size < array.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(array, (size, size), interpolation=interpolation)


class AlignedSource:
    """Random access to an extraction's faces and masks (see the module docstring for every rule)."""

    def __init__(self, directory: str | os.PathLike[str], *, size: int | None = None, split: str = "train"):
        from data.media import _check_size, _split_positions

        self.directory = pathlib.Path(directory)
        self.size = _check_size(size)
        _split_positions(0, split)  # checks the split's name before any reading
        records = read_index(self.directory)
        if not records:
            raise DataError(f"aligned {self.directory}: {INDEX} lists no faces; re-run `{EXTRACT_HINT}`")
        sizes = sorted({int(r["size"]) for r in records})
        if self.size is None and len(sizes) > 1:
            raise DataError(f"aligned {self.directory}: faces of several sizes ({', '.join(map(str, sizes))}); "
                            f"pass size=N (aligned:{self.directory};size=N) to resize them all")
        self.groups = sorted({_group(r["source"]) for r in records})
        label_of = {g: k for k, g in enumerate(self.groups)}
        positions = _split_positions(len(records), split)
        self.records = [records[p] for p in positions]
        if not self.records:
            raise DataError(f"aligned {self.directory}: no faces in split {split!r} ({len(records)} in all)")
        missing = [r["file"] for r in self.records if not (self.directory / r["file"]).is_file()]
        if missing:
            raise DataError(f"aligned {self.directory}: {len(missing)} face file(s) of {INDEX} are missing, e.g. "
                            f"{missing[0]}; the extraction is incomplete: re-run `{EXTRACT_HINT}` into a new directory")
        self._labels = np.asarray([label_of[_group(r["source"])] for r in self.records], np.int64)
        self.frame_index = np.stack([self._labels, np.asarray([r["frame"] for r in self.records], np.int64)], 1)
        self.frame_index.flags.writeable = False
        types = sorted({str(r["face_type"]) for r in records})
        self.face_type = types[0] if len(types) == 1 else None  # what a model trained on these faces expects
        side = self.size or sizes[0]
        self.info = SourceInfo(name=self.directory.resolve().name, image_shape=(side, side, 3),
                               num_classes=len(self.groups), num_examples=len(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, path: pathlib.Path, mode: str) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return np.asarray(image.convert(mode), dtype=np.uint8)
        except Exception as e:  # Pillow's many exception types for a damaged file
            raise DataError(f"aligned {self.directory}: cannot read {path} ({type(e).__name__}: {e}); the "
                            f"extraction is damaged: re-run `{EXTRACT_HINT}` into a new directory") from e

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self))
        rec = self.records[i]
        side = self.info.image_shape[0]
        image = _resize(self._read(self.directory / rec["file"], "RGB"), side, mask=False)
        mask = _resize(self._read(self.directory / MASKS / rec["file"], "L"), side, mask=True)
        em_mask = _resize(self._read(self.directory / MASKS / f"em_{rec['file']}", "L"), side, mask=True)
        video, frame = self.frame_index[i]
        return {"image": image, "label": self._labels[i], "mask": mask[..., None], "em_mask": em_mask[..., None],
                "video": video, "frame": frame}

    @property
    def labels(self) -> np.ndarray:
        """Labels per item as int64 [N]."""
        return self._labels.copy()

    def fingerprint(self) -> str:
        """Changes when the extraction (its index) or the size changes; cheap (one file's stats)."""
        from data.media import _stat_digest

        return _stat_digest([self.directory / INDEX], f"aligned\0{self.size}")

    def __repr__(self) -> str:
        return f"AlignedSource({self.info})"


def from_spec(rest: str, split: str = "train") -> AlignedSource:
    """The source an `aligned:` spec names; `rest` is the text after the colon, e.g. "faces/A;size=128".

    A video file is extracted into the cache first (once: later builds find it), here in the process that
    builds the source, so grain's workers get the finished extraction and never run dlib.
    """
    path, *items = rest.split(";")
    path = path.strip()
    if not path:
        raise DataError(f"aligned:{rest}: no directory; the format is {next(iter(SPEC_FORMS))}")
    if pathlib.Path(path).is_file():
        from data.faces import cached

        return AlignedSource(cached.extraction(path, **cached.spec_options(rest, items)), split=split)
    options: dict[str, Any] = {}
    for item in filter(str.strip, items):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key != "size" or not eq:
            video_only = " (face_type, every and workers apply to a video file)" if key in (
                "face_type", "every", "workers") else ""
            raise DataError(f"aligned:{rest}: bad option {item!r}; aligned:DIR takes size=N only{video_only}")
        try:
            options["size"] = int(value)
        except ValueError:
            raise DataError(f"aligned:{rest}: size={value!r} is not an integer") from None
    return AlignedSource(path, split=split, **options)

