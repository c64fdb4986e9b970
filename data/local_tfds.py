"""Turn any random-access source into a local TFDS array_record dataset, once; read it fast without TensorFlow.

    python -m data.local_tfds --source 'folder:faces;size=128' --name my_faces [--data_dir DIR] [--overwrite]

then use the spec `tfds:my_faces` (with `data_dir=DIR` when DIR is not the default), or
`tfds.data_source("my_faces", split="train", data_dir=DIR)`, or `load("my_faces", DIR)`.

What is written: a `tfds.core.GeneratorBasedBuilder` subclass made for the source's image shape, with
features `image: Tensor((H, W, C), uint8)` (not `tfds.features.Image`, whose PNG encoding needs
TensorFlow), when the source has labels `label: ClassLabel(num_classes)` (int64), and when it has masks
(an `aligned:` extraction, `synthetic_faces` with masks=1) `mask` and `em_mask: Tensor((H, W, 1), uint8)`,
so an extraction written once is read back, as `tfds:<name>`, with the masks `masked_training` and
`eyes_mouth_prio` need; and when it is video frames (`video:`, `aligned:`, `facecrop:`, `synthetic_clips:`)
`video` and `frame: Tensor((), int64)`, with each split's (video, frame) rows also in
`<split>.frame_index.npy`, so `video_pairs:tfds:<name>` pairs the frames of one video as it pairs the
original's without opening every record. Examples keep the source's order (`disable_shuffling=True`),
so record i of a split is item i of that split's source. Files: <data_dir>/<name>/1.0.0/
<name>-<split>.array_record-*, dataset_info.json, features.json, metadata.json (which records the builder,
the source spec, the fields written and a fingerprint) and, for video frames, <split>.frame_index.npy.

Splits: a spec string is opened once per split (`get_source(spec, split)`; folder:/video: specs through
`data.media.from_spec`): train = all but every 10th item, test = every 10th. A Source object is divided
by the same rule; a mapping {split: Source} is written as given. Read both built splits at once with
TFDS's own split="all" (or "train+test").

Rebuilding: a dataset already built from the same input is not rewritten (`build` returns its path at
once). The fingerprint covers the spec or source description, the splits, the shape and, for folder:/
video: specs, every input file's path, size and mtime (for a spec naming a file or directory, aligned:
included, every file under it; for other Source objects, the content of up to 16 evenly spaced items per
split, masks included). When the fingerprint differs, `build` refuses with FileExistsError unless
`overwrite=True` (`--overwrite`), which deletes that version directory and writes it again; the same
input gives the same records. A dataset written before masks or frame fields were kept (its metadata's
`fields` lack them) from a source that has them is refused the same way, since it lacks them. A
directory not written by this module is never deleted.

Needs tensorflow-datasets, array_record and importlib_resources (etils.epath imports it lazily when a
builder class is created); TensorFlow is not needed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile
import types
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data import media
from data.base import (
    FRAME_FIELDS,
    MASK_FIELDS,
    Source,
    SourceInfo,
    TfdsSource,
    check_index,
    frame_index_file,
    tfds_data_dir,
)
from zoo import files

log = logging.getLogger(__name__)

VERSION = "1.0.0"
BUILT_BY = "data.local_tfds"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SAMPLE_ITEMS = 16


class _Subset:
    """Rows `rows` of a source, as a source."""

    def __init__(self, source: Source, rows: np.ndarray, split: str):
        self._source, self._rows = source, rows
        index = getattr(source, "frame_index", None)
        self.frame_index = None if index is None else np.asarray(index, np.int64)[rows]
        self.info = SourceInfo(
            name=f"{source.info.name}[{split}]",
            image_shape=source.info.image_shape,
            num_classes=source.info.num_classes,
            num_examples=len(rows),
        )

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._source[int(self._rows[check_index(index, len(self))])]


def _spec_source(spec: str, split: str) -> Source:
    kind, _, rest = spec.partition(":")
    if kind in ("folder", "video") and rest:
        return media.from_spec(kind, rest, split)
    from data.sources import get_source

    return get_source(spec, split)


def _spec_fingerprint(spec: str) -> str:
    """Spec text plus the stats of the files it names (without opening any source)."""
    kind, _, rest = spec.partition(":")
    if kind in ("folder", "video") and rest:
        return f"{spec}\0{media.spec_fingerprint(kind, rest)}"
    path = pathlib.Path(re.split("[:;]", rest)[0]) if rest else None  # aligned:DIR;size=N names DIR
    files: list[pathlib.Path] = []
    if path is not None and path.is_file():
        files = [path]
    elif path is not None and path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    return f"{spec}\0{media._stat_digest(files, '')}"


def _content_fingerprint(source: Source) -> str:
    """Source description plus the bytes of up to 16 evenly spaced items."""
    custom = getattr(source, "fingerprint", None)
    if callable(custom):
        return f"{source.info}\0{custom()}"
    digest = hashlib.sha256(repr(source.info).encode())
    n = len(source)
    for i in sorted(set(np.linspace(0, n - 1, min(n, _SAMPLE_ITEMS)).astype(int).tolist())) if n else []:
        example = source[i]
        digest.update(np.ascontiguousarray(example["image"]).tobytes())
        digest.update(str(example.get("label")).encode())
        for key in _mask_fields(example):
            digest.update(key.encode() + np.ascontiguousarray(example[key]).tobytes())
    return digest.hexdigest()[:16]


def _mask_fields(example: Mapping[str, Any]) -> tuple[str, ...]:
    """The `MASK_FIELDS` an example carries, in their order."""
    return tuple(k for k in MASK_FIELDS if k in example)


def _has_frames(source: Source) -> bool:
    """Whether `source` holds video frames: a `frame_index`, or "video" and "frame" fields on its first item."""
    return getattr(source, "frame_index", None) is not None or bool(len(source) and set(FRAME_FIELDS) <= set(source[0]))


def _optional_fields(factories: Mapping[str, Callable[[], Source]]) -> set[str]:
    """The masks and frame fields any split's source has (opens each split's source)."""
    found: set[str] = set()
    for src in (make() for make in factories.values()):
        found |= set(_mask_fields(src[0])) if len(src) else set()
        found |= set(FRAME_FIELDS) if _has_frames(src) else set()
    return found


def _resolve(
    source: str | Source | Mapping[str, Source], splits: Sequence[str]
) -> tuple[dict[str, Callable[[], Source]], str, str]:
    """({split: source factory}, description, fingerprint) for what `build` was given."""
    if isinstance(source, str):
        for split in splits:
            if split not in ("train", "test"):
                raise ValueError(
                    f"split {split!r}: a spec builds 'train' and/or 'test' ('all' is read back as TFDS split 'all')"
                )
        factories = {s: (lambda s=s: _spec_source(source, s)) for s in splits}
        return factories, source, _hash(_spec_fingerprint(source), splits)
    if isinstance(source, Mapping):
        sources = dict(source)
        for split in sources:
            if not re.match(r"^\w+$", split) or split == "all":
                raise ValueError(f"split name {split!r}: use a word such as train/test ('all' is TFDS's union)")
        parts = [f"{s}\0{_content_fingerprint(src)}" for s, src in sources.items()]
        return {s: (lambda src=src: src) for s, src in sources.items()}, "sources " + ", ".join(
            f"{s}: {src.info.name}" for s, src in sources.items()
        ), _hash("\0".join(parts), list(sources))
    if not hasattr(source, "__getitem__") or not hasattr(source, "info"):
        raise TypeError(f"expected a spec string, a Source or a mapping split -> Source, got {type(source).__name__}")
    for split in splits:
        media._split_positions(0, split)
        if split == "all":
            raise ValueError("split 'all': build 'train' and 'test'; TFDS reads them together as split 'all'")
    factories = {s: (lambda s=s: _Subset(source, media._split_positions(len(source), s), s)) for s in splits}
    return factories, f"{source.info.name} ({type(source).__name__})", _hash(_content_fingerprint(source), splits)


def _hash(text: str, splits: Sequence[str]) -> str:
    return hashlib.sha256(f"{text}\0{','.join(splits)}\0{VERSION}".encode()).hexdigest()[:16]


def _check_name(name: str) -> None:
    import tensorflow_datasets as tfds

    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: TFDS names are snake_case: a lowercase letter, then [a-z0-9_]")
    if name in tfds.list_builders(with_community_datasets=False):
        raise ValueError(
            f"name {name!r} is a TFDS catalogue dataset; tfds.data_source({name!r}) would read it with the "
            "catalogue's builder. Choose another name"
        )


def _read_metadata(version_dir: pathlib.Path) -> dict[str, Any]:
    try:
        return json.loads((version_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}


def _builder_class(name: str, sources: dict[str, Source], info: SourceInfo, has_label: bool,
                   masks: tuple[str, ...], frames: dict[str, np.ndarray] | None, metadata: dict):
    """A GeneratorBasedBuilder subclass for these sources (unregistered: read back from files).

    `frames`, for video frames, maps each split to a list the (video, frame) rows are appended to as they are
    written as int64 fields: from the source's `frame_index` where it has one, else from each item's fields.
    """
    import tensorflow_datasets as tfds

    shape = tuple(int(d) for d in info.image_shape)
    mask_shape = (*shape[:2], 1)

    def _info(self):
        features = {"image": tfds.features.Tensor(shape=shape, dtype=np.uint8)}
        if has_label:
            features["label"] = (
                tfds.features.ClassLabel(num_classes=info.num_classes)
                if info.num_classes
                else tfds.features.Tensor(shape=(), dtype=np.int64)
            )
        for key in masks:
            features[key] = tfds.features.Tensor(shape=mask_shape, dtype=np.uint8)
        for key in FRAME_FIELDS if frames is not None else ():
            features[key] = tfds.features.Tensor(shape=(), dtype=np.int64)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Built by {BUILT_BY} from {metadata['source']}.",
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label") if has_label else None,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(metadata),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in sources}

    def _generate_examples(self, split):
        source = sources[split]
        for i in range(len(source)):
            example = source[i]
            image = np.asarray(example["image"])
            if image.ndim == 2:
                image = image[..., None]
            if image.dtype != np.uint8 or image.shape != shape:
                raise ValueError(
                    f"{split} item {i}: image {image.dtype} {image.shape}, but the dataset is uint8 {shape}; "
                    "give every image one size (e.g. folder:<dir>;size=N)"
                )
            record = {"image": image}
            if has_label:
                record["label"] = int(example["label"])
            for key in masks:
                if key not in example:
                    raise ValueError(f"{split} item {i} has no {key!r}, but item 0 has; every item needs its masks")
                mask = np.asarray(example[key])
                mask = mask[..., None] if mask.ndim == 2 else mask
                if mask.dtype != np.uint8 or mask.shape != mask_shape:
                    raise ValueError(f"{split} item {i}: {key} {mask.dtype} {mask.shape}, but the dataset's masks are "
                                     f"uint8 {mask_shape} (255 = inside), the image's height and width")
                record[key] = mask
            if frames is not None:
                index = getattr(source, "frame_index", None)
                row = index[i] if index is not None else (example["video"], example["frame"])
                record["video"], record["frame"] = int(row[0]), int(row[1])
                frames[split].append((record["video"], record["frame"]))
            yield i, record

    def body(ns: dict[str, Any]) -> None:
        ns.update(
            __module__=__name__,
            __doc__=f"Local dataset {name} ({metadata['source']}).",
            name=name,
            VERSION=tfds.core.Version(VERSION),
            RELEASE_NOTES={VERSION: f"Built by {BUILT_BY}."},
            _info=_info,
            _split_generators=_split_generators,
            _generate_examples=_generate_examples,
        )

    class_name = "".join(part.title() for part in name.split("_")) or "Local"
    return types.new_class(class_name, (tfds.core.GeneratorBasedBuilder,), {"skip_registration": True}, body)


def build(
    source: str | Source | Mapping[str, Source],
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    splits: Sequence[str] = ("train", "test"),
    overwrite: bool = False,
) -> pathlib.Path:
    """Write `source` as the array_record TFDS dataset `name` in `data_dir`; returns <data_dir>/<name>/1.0.0.

    `source`: a spec string (opened once per split), a Source (split by the every-10th rule) or a
    mapping {split: Source}. See the module docstring for what is written and when it is rewritten.
    """
    _check_name(name)
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits={splits!r}: give one or more distinct split names")
    data_dir = pathlib.Path(data_dir) if data_dir is not None else tfds_data_dir()
    version_dir = data_dir / name / VERSION
    factories, description, fingerprint = _resolve(source, splits)

    if (version_dir / "dataset_info.json").exists():
        existing = _read_metadata(version_dir)
        if existing.get("built_by") != BUILT_BY:
            raise FileExistsError(
                f"{version_dir} holds a dataset not written by {BUILT_BY}; choose another name or data_dir"
            )
        same = existing.get("fingerprint") == fingerprint
        lacks = sorted(_optional_fields(factories) - set(existing.get("fields", ()))) if same else []
        if same and not lacks:
            log.info("%s is already built from %s (fingerprint %s); not rewriting", version_dir, description,
                     fingerprint)
            return version_dir
        if not overwrite:
            why = (f"was built from this input before its {', '.join(lacks)} fields were kept, so it lacks them" if lacks
                   else f"was built from different input ({existing.get('source')!r}, fingerprint "
                   f"{existing.get('fingerprint')}; now {description!r}, {fingerprint})")
            raise FileExistsError(f"{version_dir} {why}. Pass overwrite=True (--overwrite) to replace it, or choose "
                                  "another name")
        log.warning("overwriting %s (was %s)", version_dir, existing.get("source"))
        shutil.rmtree(version_dir)

    sources = {split: make() for split, make in factories.items()}
    for split, src in sources.items():
        if len(src) == 0:
            raise ValueError(f"split {split!r} is empty ({src.info.name}); build fewer splits, e.g. splits=('train',)")
    infos = [src.info for src in sources.values()]
    shapes = {tuple(i.image_shape) for i in infos}
    if len(shapes) > 1:
        raise ValueError(f"splits have different image shapes {sorted(shapes)}; give them one size")
    first = {split: src[0] for split, src in sources.items() if len(src)}
    has_label = {("label" in ex) for ex in first.values()}
    if len(has_label) > 1:
        raise ValueError("some splits have labels and some do not")
    masks = {_mask_fields(ex) for ex in first.values()}
    if len(masks) > 1:
        raise ValueError(f"the splits' first items carry different masks ({sorted(masks)}); give every split the same")
    has_frames = {_has_frames(src) for src in sources.values()}
    if len(has_frames) > 1:
        raise ValueError("some splits are video frames (video and frame fields) and some are not; give every split "
                         "the same kind of source")
    frames: dict[str, list] | None = {split: [] for split in sources} if has_frames == {True} else None
    num_classes = max((i.num_classes or 0 for i in infos), default=0) or None
    info = SourceInfo(name=name, image_shape=next(iter(shapes)), num_classes=num_classes,
                      num_examples=sum(len(s) for s in sources.values()))
    metadata = {
        "built_by": BUILT_BY,
        "source": description,
        "fingerprint": fingerprint,
        "num_examples": {split: len(src) for split, src in sources.items()},
        "fields": ["image", *(["label"] if has_label == {True} else []), *next(iter(masks)),
                   *(FRAME_FIELDS if frames is not None else ())],
    }
    builder_cls = _builder_class(name, sources, info, has_label == {True}, next(iter(masks)), frames, metadata)
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="local_tfds_") as downloads:
        builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare(download_dir=downloads)
    for split, src in sources.items():
        written = builder.info.splits[split].num_examples
        if written != len(src):
            raise RuntimeError(f"{name}/{split}: wrote {written} examples but the source has {len(src)}")
        if frames is not None:  # what video_pairs reads without opening a record; without it, it reads the fields
            rows = np.asarray(frames[split], np.int64).reshape(-1, 2)
            if len(rows) != len(src):
                raise RuntimeError(f"{name}/{split}: wrote {len(rows)} frame numbers for {len(src)} examples")
            with files.atomic_write(frame_index_file(builder.data_dir, split)) as tmp:
                with open(tmp, "wb") as out:
                    np.save(out, rows)
        skipped = getattr(src, "skipped", None)
        if skipped:
            log.warning("%s/%s: the source skipped %d unreadable file(s)/video tail(s); see its .skipped",
                        name, split, len(skipped))
    return pathlib.Path(builder.data_dir)


def load(name: str, data_dir: str | os.PathLike[str] | None = None, split: str = "train") -> TfdsSource:
    """A built dataset's split as a Source (random access through tfds.data_source, no TensorFlow)."""
    import tensorflow_datasets as tfds

    data_dir = str(data_dir) if data_dir is not None else str(tfds_data_dir())
    data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return TfdsSource(name, data_source, data_source.dataset_info)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.local_tfds",
        description="Write a data spec (folder:, video:, aligned:, digits, idx:, npz:, mat:, ...) as a local "
        "array_record TFDS dataset, read afterwards with the spec tfds:<name> and no TensorFlow (an aligned: "
        "extraction keeps its mask and em_mask).",
    )
    parser.add_argument("--source", required=True, help="data spec, e.g. 'folder:faces;size=128' or "
                        "'video:../shared/data/grid;size=64;stride=2'")
    parser.add_argument("--name", required=True, help="dataset name (snake_case)")
    parser.add_argument("--data_dir", default=None,
                        help=f"TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets: {tfds_data_dir()})")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits to write (default train,test)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset built from different input")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        path = build(args.source, args.name, args.data_dir, splits=splits, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = _read_metadata(path).get("num_examples", {})
    print(f"{path}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    hint = "" if args.data_dir is None else f" with data_dir={args.data_dir!r}"
    print(f"read it with the data spec tfds:{args.name}{hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
