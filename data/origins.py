"""Where a source's example came from: its identity, clip and frame, the keys fake sets are split by.

A detector must be tested on people (and clips) it never saw in training, so every image a fake set
writes records them (`python -m train.generate`). Each source form says it in its own way: a synthetic
person is its identity seed, an extraction's face belongs to its video (a GRID clip is one speaker, so
the clip's name is the speaker) at a frame, a `video:` frame to its file. Sources that know none of
this give their class label as the identity (Olivetti's person, MNIST's digit) and no clip.
"""
from __future__ import annotations

import pathlib
from typing import Any

from data import transforms
from data.synthetic import SyntheticFaces


def base_source(source: Any) -> Any:
    """The source under index-preserving views (`data.resolution`'s resizing), whose fields say where examples came from."""
    while isinstance(source, transforms.Resized):
        source = source.source
    return source


def origin(source: Any, index: int, label: Any = None) -> dict[str, Any]:
    """{"identity", "video", "frame"} of example `index` of `source` (`label`: its "label" field, if it has one).

    identity is an int or str, video a clip's name, frame its number in the clip; None where unknown.
    """
    from data.faces.aligned import AlignedSource
    from data.media import VIDEO_EXTENSIONS, FolderSource, VideoSource

    base = base_source(source)
    if isinstance(base, SyntheticFaces):
        return _origin(identity=base.identity_seeds[int(label)], video=None, frame=None)
    if isinstance(base, AlignedSource):
        record = base.records[int(index)]
        path = pathlib.Path(record["source"])
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return _origin(identity=path.stem, video=path.stem, frame=int(record["frame"]))
        return _origin(identity=path.parent.name, video=None, frame=None)
    if isinstance(base, VideoSource):
        video, frame = (int(v) for v in base.frame_index[int(index)])
        stem = base.videos[video].stem
        return _origin(identity=stem, video=stem, frame=frame)
    if isinstance(base, FolderSource) and base.classes and label is not None:
        return _origin(identity=base.classes[int(label)], video=None, frame=None)
    return _origin(identity=None if label is None else int(label), video=None, frame=None)


def _origin(identity: int | str | None, video: str | None, frame: int | None) -> dict[str, Any]:
    return {"identity": identity, "video": video, "frame": frame}
