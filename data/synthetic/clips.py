"""Synthetic talking clips and the exact answer of reenactment: person X driven by person Y's clip.

A reenactment model (FOMM, TPSMM) animates a source face with a driving video's motion. On real
video nothing says what the animated frames should be; here `reenact_truth(X, clip of Y)` is X
rendered with Y's expression and pose in every frame, the frames a perfect model would make.

`SyntheticClips` is `SyntheticFaces` whose expressions and poses follow smooth trajectories
(`sampling.clip_expression_pose`): each identity has `clips` clips of `frames` frames, and example i
is frame i % frames of clip (video) i // frames, of identity position (label) video // clips.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np

from data.synthetic.params import EXPRESSION_FIELDS, POSE_FIELDS, Expression, Identity, Pose
from data.synthetic.render import swap_ground_truth
from data.synthetic.sampling import clip_expression_pose
from data.synthetic.source import SyntheticFaces, _parse_ids, spec_values
from zoo.errors import DataError

_LIGHT = [POSE_FIELDS.index("light_angle"), POSE_FIELDS.index("light_strength")]


def reenact_truth(
    identity_x: Identity, clip_of_y: tuple[Expression, Pose], size: int, *, lighting: Pose | None = None
) -> np.ndarray:
    """uint8 [T,size,size,3]: X with the expression and pose of each of Y's T frames, what X animated by Y shows.

    `lighting` (one pose, e.g. X's source frame's) replaces the clip's light angle and strength: a motion
    model keeps its source image's appearance, so that is the truth to hold it to; without it the light
    follows Y's clip, as the pose vector says.
    """
    expression, pose = clip_of_y
    if lighting is not None:
        rows = pose.vector()
        rows[:, _LIGHT] = lighting.vector()[:1, _LIGHT]
        pose = Pose.from_vector(rows)
    return swap_ground_truth(identity_x, (expression, pose), size)


@functools.lru_cache(maxsize=4096)
def _clip_vectors(seed: int, split: str, person: int, clip: int, frames: int, spacing: int) -> tuple[np.ndarray, ...]:
    """A clip's expression and pose rows, computed once per process: a batch revisits the same few clips."""
    expression, pose = clip_expression_pose(seed, split, person, clip, frames, spacing)
    vectors = expression.vector(), pose.vector()
    for v in vectors:
        v.flags.writeable = False
    return vectors


class SyntheticClips(SyntheticFaces):
    """A random-access source of synthetic video frames, each with its clip and frame number.

    Each example is SyntheticFaces' {"image", "label", "expression", "pose"} (and masks with
    `masks=True`) plus "video" (the clip's position in this source, int64) and "frame" (int64, 0..T-1).
    Clip j of identity seed s in split "train" or "test" is `clip_expression_pose(seed, split, s, j,
    frames, spacing)`, so the splits hold different trajectories of the same people; "all" is train's
    clips followed by test's, numbered on. `frame_index` [N, 2] holds every example's (video, frame)
    without rendering, for pair samplers (data/video_pairs.py).
    """

    def __init__(
        self,
        identities: Sequence[int],
        clips: int,
        frames: int,
        size: int,
        seed: int = 0,
        split: str = "train",
        *,
        spacing: int = 8,
        masks: bool = False,
        cache_bytes: int = 512 << 20,
    ):
        if int(clips) < 1:
            raise DataError(f"clips={clips}; need at least 1 clip per identity")
        if int(frames) < 2:
            raise DataError(f"frames={frames}; a clip needs at least 2 frames (e.g. frames=32)")
        if int(spacing) < 1:
            raise DataError(f"spacing={spacing}; keyframes lie at least 1 frame apart (e.g. spacing=8)")
        self.clips, self.frames, self.spacing = int(clips), int(frames), int(spacing)
        super().__init__(identities, self.clips * self.frames, size, seed, split, masks=masks,
                         cache_bytes=cache_bytes)
        self.info = dataclasses.replace(self.info, name="synthetic_clips")
        n = len(self)
        self.frame_index = np.stack([np.arange(n) // self.frames, np.arange(n) % self.frames], axis=1)
        self.frame_index.flags.writeable = False

    @property
    def num_videos(self) -> int:
        """How many clips the source holds (all identities, both splits for "all")."""
        return len(self) // self.frames

    def __repr__(self) -> str:
        return (
            f"SyntheticClips(ids={list(self.identity_seeds)}, clips={self.clips}, frames={self.frames}, "
            f"size={self.size}, seed={self.seed}, split={self.split!r}, spacing={self.spacing}"
            f"{', masks=True' if self.masks else ''})"
        )

    def _clip_key(self, video: int) -> tuple[str, int, int]:
        """(split, identity seed, clip number of that person) of a video position."""
        per_split = self._per_split // self.frames
        split = self.split if self.split != "all" else ("train" if video < per_split else "test")
        person, clip = divmod(video % per_split, self.clips)
        return split, self.identity_seeds[person], clip

    def _video(self, video: int) -> int:
        if not 0 <= int(video) < self.num_videos:
            raise IndexError(f"video {video} out of range for a source of {self.num_videos} clips")
        return int(video)

    def clip(self, video: int) -> tuple[Expression, Pose]:
        """The T frames' expression and pose of clip `video`: what drives a reenactment by that clip."""
        split, person, clip = self._clip_key(self._video(video))
        e, q = _clip_vectors(self.seed, split, person, clip, self.frames, self.spacing)
        return Expression.from_vector(e), Pose.from_vector(q)

    def clip_indices(self, video: int) -> np.ndarray:
        """The example indices of clip `video`'s frames, in frame order."""
        start = self._video(video) * self.frames
        return np.arange(start, start + self.frames)

    def video_label(self, video: int) -> int:
        """The identity position (label) of the person in clip `video`."""
        return int(self.labels(self.clip_indices(video)[:1])[0])

    def truth(self, label_x: int, video_y: int, *, lighting: Pose | None = None) -> np.ndarray:
        """uint8 [T,size,size,3]: identity `label_x` animated by clip `video_y` (see `reenact_truth`)."""
        return reenact_truth(self.identities[int(label_x)], self.clip(video_y), self.size, lighting=lighting)

    def expression_pose(self, indices: Any) -> tuple[Expression, Pose]:
        """The expression and pose of examples: their clips' trajectories at their frames."""
        idx = self._indices(indices)
        videos, frames = idx // self.frames, idx % self.frames
        e = np.empty((len(idx), len(EXPRESSION_FIELDS)), np.float32)
        q = np.empty((len(idx), len(POSE_FIELDS)), np.float32)
        for video in np.unique(videos):
            rows = np.flatnonzero(videos == video)
            split, person, clip = self._clip_key(int(video))
            ev, qv = _clip_vectors(self.seed, split, person, clip, self.frames, self.spacing)
            e[rows], q[rows] = ev[frames[rows]], qv[frames[rows]]
        return Expression.from_vector(e), Pose.from_vector(q)

    def _render(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        out = super()._render(idx)
        out["video"], out["frame"] = (np.asarray(v, np.int64) for v in np.divmod(idx, self.frames))
        return out


_SPEC_DEFAULTS = {"ids": "0,1", "clips": "4", "frames": "32", "size": "64", "seed": "0", "spacing": "8",
                  "masks": "0"}
_EXAMPLE = "ids=0-9;clips=4;frames=32;size=64;seed=0"


def from_spec(rest: str, split: str) -> SyntheticClips:
    """A SyntheticClips source from "key=value;..." text (the part after `synthetic_clips:`).

    Keys (all optional): ids = identity seeds as in synthetic_faces ("0,1", "0-9"), default 0,1;
    clips = clips per identity (4); frames = frames per clip (32); size = image side (64); seed =
    trajectory seed (0); spacing = frames between expression keyframes (8; pose keyframes lie 3x
    further apart); masks = 1 to add face and eyes/mouth masks (0).
    """
    values = spec_values(rest, _SPEC_DEFAULTS, "synthetic_clips", _EXAMPLE)
    try:
        ids = _parse_ids(values["ids"])
        clips, frames, size, seed, spacing, masks = (
            int(values[k]) for k in ("clips", "frames", "size", "seed", "spacing", "masks")
        )
    except ValueError as e:
        raise DataError(f"synthetic_clips spec {rest!r}: {e}; expected integers, e.g. {_EXAMPLE}") from e
    if masks not in (0, 1):
        raise DataError(f"synthetic_clips spec {rest!r}: masks must be 0 or 1, got {masks}")
    return SyntheticClips(ids, clips, frames, size, seed, split, spacing=spacing, masks=bool(masks))
