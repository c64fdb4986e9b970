"""(source, driving) frame pairs of one video: the examples a reenactment model (FOMM, TPSMM) trains on.

`video_pairs:[num_repeats=75;seed=0@]<frame spec>` reads any source of video frames (`synthetic_clips:`,
`aligned:<video|dir>`, `facecrop:`, `video:`) and makes example i a pair of two frames of video
i % V (V videos), as FOMM's repeated dataset visits its videos: each video num_repeats times, so the
length is V * num_repeats. FOMM draws the two frames uniformly with replacement and, with its time
flip, in either order; here both positions are hashed from (seed, i), so the pair of index i is the
same in every run, process and resume and does not depend on the order examples are read in (grain's
global shuffle and checkpointed iterator work as for every source). That also means the length is
the number of distinct pairs: a few short videos want a larger num_repeats.

Each example is {"source_image", "driving_image": uint8 [H, W, C], "video", "source_frame",
"driving_frame", "label": int64}: the frame source's video id, the two frame numbers (as the frame
source numbers them) and the source frame's label. A frame source's videos and frames come from its
`frame_index` ([N, 2] (video, frame) rows) when it has one, else from its examples' "video" and
"frame" fields; videos with a single frame give no pair and are left out (logged). Several frame specs
joined by " + " (spaces around the plus) are one frame source (`JoinedFrames`): each part's videos and
labels numbered on after the previous parts', so the four GRID speakers' `aligned:` videos, each its
source's video 0, stay four videos.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from data.base import SourceInfo, check_index
from data.synthetic.sampling import hashed_uniform
from zoo.errors import DataError

log = logging.getLogger(__name__)

SPEC_FORMS = {
    "video_pairs:[num_repeats=75;seed=0@]<frame spec>[ + <frame spec>...]": "(source, driving) pairs of two frames "
    "of one video from a frame source with video and frame fields (synthetic_clips:, aligned:, facecrop:, video:), "
    "or several joined by ' + '; V videos x num_repeats pairs, hashed from (seed, index)",
}
DEFAULT_REPEATS = 75  # FOMM's num_repeats for VoxCeleb (vox-256.yaml)
_TAG = 0x5A1
_KEYS = {"num_repeats": str(DEFAULT_REPEATS), "seed": "0"}
_HINT = ("a source of video frames: synthetic_clips:..., aligned:<video or dir>, facecrop:<video>, video:<file or dir>")


def video_frames(source: Any) -> np.ndarray:
    """int64 [N, 2] (video, frame) of every example of `source`, from `frame_index` or else its fields."""
    index = getattr(source, "frame_index", None)
    if index is not None:
        return np.asarray(index, np.int64).reshape(-1, 2)
    rows = []
    for i in range(len(source)):
        example = source[i]
        if "video" not in example or "frame" not in example:
            raise DataError(f"video_pairs: {getattr(source, 'info', source)} has no video and frame fields "
                            f"(example {i} holds {', '.join(sorted(example))}); pair frames of {_HINT}")
        rows.append((int(example["video"]), int(example["frame"])))
    return np.asarray(rows, np.int64).reshape(-1, 2)


class JoinedFrames:
    """Frame sources one after another: part k's videos and labels numbered on after parts 0..k-1's."""

    def __init__(self, parts: list[Any]) -> None:
        shapes = sorted({tuple(p.info.image_shape) for p in parts})
        if len(shapes) > 1:
            raise DataError(f"video_pairs: the joined frame sources have frames of shapes {shapes}; give every part "
                            "one size (e.g. size=64 on each aligned: part)")
        self.parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        rows, self._video_offsets, self._label_offsets = [], [], []
        videos = labels = 0
        for part in parts:
            index = video_frames(part).copy()
            self._video_offsets.append(videos)
            self._label_offsets.append(labels)
            index[:, 0] += videos
            rows.append(index)
            videos = int(index[:, 0].max()) + 1 if len(index) else videos
            labels += int(part.info.num_classes or 0)
        self.frame_index = np.concatenate(rows)
        self.frame_index.flags.writeable = False
        self.info = SourceInfo(name=" + ".join(p.info.name for p in parts), image_shape=shapes[0],
                               num_classes=labels or None, num_examples=int(self._starts[-1]))

    def __len__(self) -> int:
        return self.info.num_examples

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self))
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        example = dict(self.parts[k][i - int(self._starts[k])])
        example["video"], example["frame"] = (np.int64(v) for v in self.frame_index[i])
        if "label" in example:
            example["label"] = np.int64(int(example["label"]) + self._label_offsets[k])
        return example


class VideoPairs:
    """Random access to (source, driving) pairs of frames of one video (module docstring for every rule)."""

    def __init__(self, frames: Any, num_repeats: int = DEFAULT_REPEATS, seed: int = 0) -> None:
        if int(num_repeats) < 1:
            raise DataError(f"video_pairs: num_repeats={num_repeats}; pass a positive count (FOMM uses 75)")
        if not 0 <= int(seed) < 2**63:
            raise DataError(f"video_pairs: seed={seed}; pass a seed in [0, 2**63)")
        self.frames, self.num_repeats, self.seed = frames, int(num_repeats), int(seed)
        index = video_frames(frames)
        order = np.lexsort((index[:, 1], index[:, 0]))
        ids, starts, counts = np.unique(index[order, 0], return_index=True, return_counts=True)
        single = ids[counts < 2]
        if len(single):
            log.warning("video_pairs: %d video(s) of %s have a single frame and give no pair, e.g. video %d",
                        len(single), getattr(frames, "info", frames), int(single[0]))
        keep = counts >= 2
        if not keep.any():
            raise DataError(f"video_pairs: no video of {getattr(frames, 'info', frames)} has two frames; pair "
                            f"frames of {_HINT} with at least 2 frames a video in this split")
        self.videos = ids[keep]
        self._members = [order[s:s + c] for s, c in zip(starts[keep], counts[keep])]
        self._frame_numbers = index[:, 1]
        info = frames.info
        self.info = SourceInfo(name=f"video_pairs({info.name})", image_shape=info.image_shape,
                               num_classes=info.num_classes, num_examples=len(self.videos) * self.num_repeats)

    def __len__(self) -> int:
        return self.info.num_examples

    def __repr__(self) -> str:
        return f"VideoPairs({self.frames!r}, num_repeats={self.num_repeats}, seed={self.seed})"

    def _checked(self, indices: Any) -> np.ndarray:
        """int64 pair indices, negative ones counted from the end; IndexError past it."""
        return np.asarray([check_index(i, len(self)) for i in np.asarray(indices).reshape(-1)], np.int64)

    def pair_indices(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """Frame-source indices (source, driving) of pairs `indices`: two uniform draws within video i % V."""
        idx = self._checked(indices)
        u = hashed_uniform((_TAG, self.seed), (idx[:, None] * 2 + np.arange(2)).astype(np.uint64))
        members = [self._members[s] for s in idx % len(self.videos)]
        sizes = np.asarray([len(m) for m in members]).reshape(-1, 1)
        positions = np.minimum((u * sizes).astype(np.int64), sizes - 1)
        picked = np.asarray([m[row] for m, row in zip(members, positions)], np.int64).reshape(-1, 2)
        return picked[:, 0], picked[:, 1]

    def gather(self, indices: Any) -> dict[str, np.ndarray]:
        """The pairs at `indices` as one batch, the frame source read in one `gather` when it has one."""
        idx = self._checked(indices)
        src, drv = self.pair_indices(idx)
        both = np.concatenate([src, drv])
        read = getattr(self.frames, "gather", None)
        if read is not None:
            batch = read(both)
            images, labels = batch["image"], batch.get("label")
        else:
            examples = [self.frames[int(i)] for i in both]
            images = np.stack([e["image"] for e in examples])
            labels = np.asarray([e["label"] for e in examples]) if "label" in examples[0] else None
        n = len(idx)
        out = {"source_image": images[:n], "driving_image": images[n:],
               "video": self.videos[idx % len(self.videos)].astype(np.int64),
               "source_frame": self._frame_numbers[src], "driving_frame": self._frame_numbers[drv]}
        if labels is not None:
            out["label"] = np.asarray(labels[:n], np.int64)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {k: v[0] for k, v in self.gather([check_index(index, len(self))]).items()}


def _options(head: str, rest: str) -> tuple[int, int]:
    """num_repeats and seed from the "key=value;..." text before the '@'."""
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in head.split(";"))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if key not in _KEYS or not eq or not value or key in values:
            raise DataError(f"video_pairs:{rest}: {item!r} is not one of {', '.join(k + '=N' for k in _KEYS)} (each "
                            "at most once), as in video_pairs:num_repeats=75;seed=0@synthetic_clips:ids=0-9")
        values[key] = value
    try:
        return tuple(int(values.get(k, default)) for k, default in _KEYS.items())  # type: ignore[return-value]
    except ValueError as e:
        raise DataError(f"video_pairs:{rest}: num_repeats and seed must be integers ({e})") from e


def from_spec(rest: str, split: str, get_source: Callable[[str, str], Any]) -> VideoPairs:
    """A VideoPairs from "[num_repeats=N;seed=S@]<frame spec>", the frames read by `get_source(spec, split)`.

    Text before an '@' is options only when it holds no ':' (every frame spec names its kind with one),
    so a path with an '@' in it still reads as a frame spec. The dispatcher passes its own `get_source`.
    """
    head, at, tail = rest.partition("@")
    options_given = bool(at) and ":" not in head
    spec = tail.strip() if options_given else rest.strip()
    if not spec:
        raise DataError(f"video_pairs:{rest}: no frame source; write video_pairs:<frame spec>, e.g. "
                        "video_pairs:synthetic_clips:ids=0-9;clips=4;frames=32 or video_pairs:aligned:clip.mp4")
    num_repeats, seed = _options(head, rest) if options_given else (DEFAULT_REPEATS, 0)
    parts = [get_source(part.strip(), split) for part in spec.split(" + ")]
    frames = parts[0] if len(parts) == 1 else JoinedFrames(parts)
    return VideoPairs(frames, num_repeats, seed)
