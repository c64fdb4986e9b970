"""What every data source is built on: the `Source` protocol, its `SourceInfo`, the in-memory and TFDS
sources, index checking and the TFDS data directory.

Kept apart from the spec dispatcher (`data.sources`) so the sources in `media`, `synthetic` and
`local_tfds` build on public names without importing the dispatcher that imports them.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from zoo.errors import DataError

SPLITS = ("train", "test", "all")
MASK_FIELDS = ("mask", "em_mask")
"""Per-pixel masks a face source may carry beside "image" (uint8 [H, W, 1], 255 = inside): the face, eyes and mouth."""

FRAME_FIELDS = ("video", "frame")
"""What a source of video frames carries per item (int64): its video and its frame number there (`video_pairs:`)."""


def frame_index_file(version_dir: str | os.PathLike[str], split: str) -> pathlib.Path:
    """Where `data.local_tfds` keeps a split's (video, frame) rows, [N, 2] int64, beside its records."""
    return pathlib.Path(version_dir) / f"{split}.frame_index.npy"


class DataNotFoundError(DataError, FileNotFoundError):
    """A file or directory a spec names is missing; also a FileNotFoundError, which callers may catch."""


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a model needs to know about a source before reading it: shapes and class count."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int | None
    num_examples: int


@runtime_checkable
class Source(Protocol):
    """Random access to examples, which is what grain needs for global shuffles and resumable state."""

    info: SourceInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class ArraySource:
    """A source over in-memory arrays: cheap random access for datasets that fit in RAM."""

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        num_classes: int | None = None,
    ):
        images = _as_nhwc_uint8(images, name)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),):
                raise DataError(
                    f"{name}: labels have shape {labels.shape} but there are {len(images)} images; "
                    "pass one integer label per image"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"{name}: labels have dtype {labels.dtype}; integer class ids are required")
            labels = labels.astype(np.int64)
            if num_classes is None and len(labels):
                num_classes = int(labels.max()) + 1
        self._images = images
        self._labels = labels
        self.info = SourceInfo(
            name=name,
            image_shape=tuple(int(d) for d in images.shape[1:]),
            num_classes=num_classes if labels is not None else None,
            num_examples=len(images),
        )

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self))
        example: dict[str, Any] = {"image": self._images[i].copy()}
        if self._labels is not None:
            example["label"] = self._labels[i]
        return example

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `indices` as one batch, by fancy indexing: the pipeline's fast path."""
        indices = np.asarray(indices)
        batch: dict[str, np.ndarray] = {"image": self._images[indices]}
        if self._labels is not None:
            batch["label"] = self._labels[indices]
        return batch

    def __repr__(self) -> str:
        return f"ArraySource({self.info})"

    @property
    def images(self) -> np.ndarray:
        """All images as one read-only [N,H,W,C] uint8 array, for fast whole-set statistics."""
        view = self._images.view()
        view.flags.writeable = False
        return view

    @property
    def labels(self) -> np.ndarray | None:
        """All labels as a read-only int64 [N] array, or None for unlabelled data."""
        if self._labels is None:
            return None
        view = self._labels.view()
        view.flags.writeable = False
        return view


class TfdsSource:
    """A TFDS array_record data source mapped to {"image", "label"} and any `MASK_FIELDS` and `FRAME_FIELDS` it has,
    without TensorFlow.

    The masks and frame fields are what `data.local_tfds` writes for a source that has them (aligned:,
    synthetic_faces with masks=1; video:, aligned:, synthetic_clips:), so `masked_training` and
    `video_pairs:` read a packed set as they read the original. `frame_index` ([N, 2] (video, frame)) is
    the split's rows file that `local_tfds` writes when this is one whole built split, else None (then
    `video_pairs` reads the fields item by item).
    """

    def __init__(self, name: str, data_source: Any, dataset_info: Any):
        self._source = data_source
        features = dataset_info.features
        if "image" not in features:
            raise DataError(
                f"tfds:{name} has no 'image' feature (features: {', '.join(features.keys())}); "
                "only image datasets are supported"
            )
        self._has_label = "label" in features
        self._masks = tuple(k for k in MASK_FIELDS if k in features)
        self._frames = all(k in features for k in FRAME_FIELDS)
        self.frame_index = self._frame_rows(getattr(dataset_info, "data_dir", None), getattr(data_source, "split", None))
        shape = tuple(features["image"].shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        num_classes = getattr(features["label"], "num_classes", None) if self._has_label else None
        self.info = SourceInfo(
            name=name, image_shape=shape, num_classes=num_classes, num_examples=len(data_source)
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._source[check_index(index, len(self))]
        image = np.asarray(record["image"], dtype=np.uint8)
        if image.ndim == 2:
            image = image[..., None]
        example: dict[str, Any] = {"image": image}
        if self._has_label:
            example["label"] = np.int64(record["label"])
        for key in self._masks:
            mask = np.asarray(record[key], dtype=np.uint8)
            example[key] = mask[..., None] if mask.ndim == 2 else mask
        if self._frames:
            example.update({key: np.int64(record[key]) for key in FRAME_FIELDS})
        return example

    def _frame_rows(self, version_dir: str | None, split: str | None) -> np.ndarray | None:
        """The split's (video, frame) rows file when there is one of this source's length, read-only."""
        if not (self._frames and version_dir and split) or not frame_index_file(version_dir, split).is_file():
            return None
        rows = np.load(frame_index_file(version_dir, split), allow_pickle=False)
        if rows.dtype != np.int64 or rows.shape != (len(self._source), 2):
            return None
        rows.flags.writeable = False
        return rows

    def __repr__(self) -> str:
        return f"TfdsSource({self.info})"


def check_index(index: int, length: int) -> int:
    """A non-negative in-range int index; IndexError past the end so plain iteration stops."""
    i = int(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} out of range for a source of {length} examples")
    return i


def tfds_data_dir() -> pathlib.Path:
    """$TFDS_DATA_DIR, else ~/tensorflow_datasets: where local array_record datasets are written and found."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or pathlib.Path.home() / "tensorflow_datasets")


def _as_nhwc_uint8(images: np.ndarray, name: str) -> np.ndarray:
    """Images as [N,H,W,C] uint8; floats in [0,1] are scaled, anything else is refused with the fix."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{name}: images have shape {images.shape}; expected [N,H,W] or [N,H,W,C]")
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    if np.issubdtype(images.dtype, np.floating) and images.size and 0 <= images.min() and images.max() <= 1:
        return np.round(images * 255).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) and images.size and 0 <= images.min() and images.max() <= 255:
        return images.astype(np.uint8)
    raise DataError(
        f"{name}: images have dtype {images.dtype} with values outside uint8 0..255 or float 0..1; "
        "convert them to uint8 first"
    )
