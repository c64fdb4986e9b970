"""Fake sets written by `python -m train.generate`: the manifest read and checked, and the `fakeset:` source.

    fakeset:DIR[;generator=G1,G2;kind=K1,K2;identities=I1,I2]

Each example is {"image": uint8 [H, W, C], "label": int64 (1 fake, 0 real), "identity", "video",
"generator": int64}, the last three indices into the source's `identities`, `videos` and `generators`
name lists, -1 where the manifest has null (a GAN sample has no identity; a real image no generator).
Integer keys are what batches can carry; the names stay on the source for reports and splits.

Filters keep lines whose field is listed: `kind=` any kind ("real" included), `identities=` the
identity (lines without one are dropped), `generator=` a fake's generator ("swap_df/a2b"), where every
real line stays, because a detector needs both classes. A fake set is one pool: every split name
reads all of it, so train and test are made disjoint with the filters (`identities=` for people the
detector never saw, `generator=` for an unseen generator), never by the split name. Images are
decoded on access; their headers are read once at construction, so a set of mixed sizes fails then.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from data.base import SourceInfo, check_index
from zoo.errors import DataError

MANIFEST = "manifest.jsonl"
KEYS = ("file", "label", "kind", "family", "model", "generator", "checkpoint", "identity", "pair", "video", "frame",
        "split", "index")
KINDS = ("a2b", "b2a", "sample", "reconstruction", "merged", "real")
FILTERS = ("generator", "kind", "identities")
SPEC_FORMS = {
    "fakeset:<dir>[;generator=G,..;kind=K,..;identities=I,..]": "a fake set written by `python -m train.generate` "
    "(images, label 1 = fake / 0 = real, identity/video/generator indices); the filters keep the listed values",
}
_FIX = "write the set again with `python -m train.generate ... --out DIR --overwrite`"


def read_manifest(directory: str | pathlib.Path) -> list[dict[str, Any]]:
    """Every line of DIR/manifest.jsonl, checked: known keys, labels that match kinds, files that exist."""
    directory = pathlib.Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; make a fake set with `python -m train.generate --out DIR`")
    if not path.is_file():
        raise DataError(f"{directory} has no {MANIFEST}: the generation was interrupted (the manifest is written "
                        f"last) or this is not a fake set; {_FIX}")
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw.decode("utf-8"))
                _check_line(directory, line)
            except (ValueError, TypeError) as error:
                raise DataError(f"{path}, line {number}: {error}; {_FIX}") from None
            lines.append(line)
    if not lines:
        raise DataError(f"{path} lists no images; {_FIX}")
    return lines


def _check_line(directory: pathlib.Path, line: Any) -> None:
    """Raise ValueError saying what is wrong with one manifest line."""
    if not isinstance(line, dict):
        raise ValueError(f"a JSON {type(line).__name__}, not an object")
    unknown, missing = sorted(set(line) - set(KEYS)), [k for k in KEYS if k not in line]
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (a manifest line has {', '.join(KEYS)})")
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    if line["kind"] not in KINDS:
        raise ValueError(f"kind {line['kind']!r} is not one of {', '.join(KINDS)}")
    expected = 0 if line["kind"] == "real" else 1
    if type(line["label"]) is not int or line["label"] != expected:
        raise ValueError(f"label {line['label']!r} for kind {line['kind']!r}; labels are 1 (fake) or 0 (real), "
                         f"and a {line['kind']!r} image is {expected}")
    if type(line["index"]) is not int or line["index"] < 0:
        raise ValueError(f"index {line['index']!r} is not an example index (an integer >= 0)")
    for key in ("file", "pair"):
        value = line[key]
        if value is None and key == "pair":
            continue
        if not isinstance(value, str) or pathlib.PurePosixPath(value).is_absolute() or ".." in value.split("/"):
            raise ValueError(f"{key} {value!r} is not a path inside the set")
        if not (directory / value).is_file():
            raise ValueError(f"{key} {value} is missing from {directory}")


class FakeSetSource:
    """Random access to a fake set's images with their label and identity/video/generator indices."""

    def __init__(self, directory: str | pathlib.Path, **filters: list[str]) -> None:
        self.directory = pathlib.Path(directory)
        lines = read_manifest(self.directory)
        self.lines = [line for line in lines if _keep(line, filters)]
        if not self.lines:
            raise DataError(f"fakeset:{self.directory}: no line of its {len(lines)} passes the filters {filters}; "
                            f"the set has kinds {_values(lines, 'kind')}, generators {_values(lines, 'generator')}, "
                            f"identities {_values(lines, 'identity')}")
        self.identities = _names(self.lines, "identity")
        self.videos = _names(self.lines, "video")
        self.generators = _names(self.lines, "generator")
        self._labels = np.asarray([line["label"] for line in self.lines], np.int64)
        self._index = {key: np.asarray([names.index(str(v)) if (v := line[key]) is not None else -1
                                        for line in self.lines], np.int64)
                       for key, names in (("identity", self.identities), ("video", self.videos),
                                          ("generator", self.generators))}
        shape = self._check_shapes()
        self.info = SourceInfo(name=f"fakeset:{self.directory.name}", image_shape=shape, num_classes=2,
                               num_examples=len(self.lines))

    def _check_shapes(self) -> tuple[int, int, int]:
        """The one (H, W, C) every image has, read from the PNG headers; DataError naming a file that differs."""
        from PIL import Image

        shapes: dict[tuple[int, int, int], str] = {}
        for line in self.lines:
            with Image.open(self.directory / line["file"]) as image:
                shapes.setdefault((image.height, image.width, len(image.getbands())), line["file"])
        if len(shapes) > 1:
            listed = ", ".join(f"{file} is {h}x{w}x{c}" for (h, w, c), file in shapes.items())
            raise DataError(f"fakeset:{self.directory}: images of several shapes ({listed}); generate one set per "
                            "model resolution")
        return next(iter(shapes))

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        i = check_index(index, len(self))
        with Image.open(self.directory / self.lines[i]["file"]) as image:
            pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        return {"image": pixels, "label": self._labels[i], **{k: v[i] for k, v in self._index.items()}}

    @property
    def labels(self) -> np.ndarray:
        """1 (fake) or 0 (real) per example, int64 [N]."""
        return self._labels.copy()

    def indices(self, key: str) -> np.ndarray:
        """Per-example index into the `identities`, `videos` or `generators` names ("identity", "video",
        "generator"), -1 where none, int64 [N]: what splits by person, clip or generator group on."""
        return self._index[key].copy()

    def __repr__(self) -> str:
        return f"FakeSetSource({self.info})"


def _keep(line: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Whether a line passes every filter (see the module docstring for the rules)."""
    if "kind" in filters and line["kind"] not in filters["kind"]:
        return False
    if "identities" in filters and (line["identity"] is None or str(line["identity"]) not in filters["identities"]):
        return False
    return "generator" not in filters or line["kind"] == "real" or line["generator"] in filters["generator"]


def _names(lines: list[dict[str, Any]], key: str) -> list[str]:
    """The distinct non-null values of `key`, as strings, in first-seen order: what the indices point into."""
    return list(dict.fromkeys(str(line[key]) for line in lines if line[key] is not None))


def _values(lines: list[dict[str, Any]], key: str) -> str:
    names = _names(lines, key)
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "(none)"


def from_spec(rest: str, split: str = "all") -> FakeSetSource:
    """The source a `fakeset:` spec names; `rest` is the text after the colon. Every split reads the whole set."""
    del split
    path, *items = rest.split(";")
    if not path.strip():
        raise DataError(f"fakeset:{rest}: no directory; the format is {next(iter(SPEC_FORMS))}")
    filters: dict[str, list[str]] = {}
    for item in filter(str.strip, items):
        key, eq, value = (s.strip() for s in item.partition("="))
        values = [v.strip() for v in value.split(",") if v.strip()]
        if key not in FILTERS or not eq or not values:
            raise DataError(f"fakeset:{rest}: bad option {item!r}; the filters are "
                            f"{', '.join(f + '=A,B' for f in FILTERS)}")
        if key == "kind" and (bad := [v for v in values if v not in KINDS]):
            raise DataError(f"fakeset:{rest}: kind {', '.join(bad)} is not one of {', '.join(KINDS)}")
        filters[key] = values
    return FakeSetSource(path.strip(), **filters)
