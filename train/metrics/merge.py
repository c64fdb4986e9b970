"""Merge-quality metrics: a merged clip scored against the destination clip it was merged into.

A merge should put the source identity's face into every destination frame while keeping the
destination's expression, pose and motion, and leave everything outside the blend mask alone.
Each property is one pure function over arrays, so each can be tested alone:

- identity (`identity_metrics`): dlib embeddings of the merged faces, mean L2 to the source and to
  the target (destination) identity's centroid, and retrieval accuracy, the fraction of merged faces
  nearer the source centroid than the target's (1.0: the swap took; 0.0: the destination's identity stayed);
- expression and pose (`landmark_error`): mean distance over all 68 dlib landmarks between each
  destination frame and its merged frame, over the destination's inter-ocular distance taken between
  the outer eye corners, 0-based indices 36 and 45 (iBUG points 37 and 46 in its 1-based numbering).
  Nothing is centred or aligned first: a face that drifts or turns counts;
- temporal stability (`temporal_stability`): mean absolute change from frame to frame inside the
  merged face region, for the merged clip and for the destination clip over the same region, with
  their ratio and difference (a flickering merge changes more than the footage it replaced);
- background (`background_psnr`): PSNR between merged and input frames over the pixels farther than
  `dilate` px from the blend mask, pooled over every such pixel and channel of the clip (one MSE for
  the clip, so a frame with a large background contributes in proportion). It is inf when the
  background is bit-exact, which a merge must be before the video is encoded.

`merge_metrics` runs dlib over both clips (`analyze_frames`) and returns all of them in one flat
dict of floats and ints a JSON row can carry; the copy baseline (the destination unchanged) goes
through the same function with merged_frames = dest_frames. Pixel values are uint8 levels (0..255).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from train.metrics.face_identity import OUTER_EYE_CORNERS
from zoo.errors import DataError

if TYPE_CHECKING:
    from data.faces.dlib_models import FaceAnalyzer

#: Background margin in pixels: one 16 x 16 macroblock, so codec bleed across the mask edge is not charged to the merge.
DEFAULT_DILATE = 16
EMBEDDING_DIM = 128
TEMPORAL_KEYS = ("temporal_change_merged", "temporal_change_dest", "temporal_change_ratio", "temporal_change_diff")


class FrameFaces(NamedTuple):
    """What dlib found in each frame of a clip: the largest face's box, landmarks and embedding.

    Rows where no face was found have found=False, a zero box and NaN landmarks and embedding.
    """

    found: np.ndarray  # bool [T]
    boxes: np.ndarray  # int64 [T, 4] (left, top, right, bottom)
    landmarks: np.ndarray  # float32 [T, 68, 2] frame px
    embeddings: np.ndarray  # float32 [T, 128]


def _frames(x: ArrayLike, name: str) -> np.ndarray:
    """x as a uint8 clip [T, H, W, 3], or a DataError saying what it is instead."""
    arr = np.asarray(x)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"{name} must be a uint8 RGB clip [T, H, W, 3]; got {arr.dtype} {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise DataError(f"{name} has no frames")
    return arr


def _clip_pair(dest: ArrayLike, merged: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both clips checked, with the same shape."""
    d, m = _frames(dest, "dest_frames"), _frames(merged, "merged_frames")
    if d.shape != m.shape:
        raise DataError(
            f"merged_frames {list(m.shape)} differ from dest_frames {list(d.shape)}: a merge keeps the "
            "destination's frame count and size; pass the frames of the clip that was merged into"
        )
    return d, m


def _masks(masks: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Blend masks [T, H, W] or [T, H, W, 1] (any dtype; > 0 is inside) as bool [T, H, W] matching the clip."""
    arr = np.asarray(masks)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != tuple(shape[:3]):
        raise DataError(
            f"blend_masks {list(np.shape(masks))} do not match the clip {list(shape)}: "
            f"pass one mask per frame, [T, H, W] or [T, H, W, 1] = {list(shape[:3])}"
        )
    if not np.all(np.isfinite(arr)):
        raise DataError("blend_masks hold NaN or inf; pass alpha in [0, 1] or uint8 0..255")
    return arr > 0


def analyze_frames(frames: ArrayLike, analyzer: FaceAnalyzer, *, upsample: int = 1, embed: bool = True) -> FrameFaces:
    """Largest face, 68 landmarks and (if embed) the identity embedding of each frame, by dlib.

    Each frame is detected on its own, as a viewer would see it: a merged face dlib no longer finds
    is a detection miss, and its landmarks are placed from its own box, not the destination's.
    """
    clip = _frames(frames, "frames")
    t = len(clip)
    found = np.zeros(t, bool)
    boxes = np.zeros((t, 4), np.int64)
    landmarks = np.full((t, 68, 2), np.nan, np.float32)
    embeddings = np.full((t, EMBEDDING_DIM), np.nan, np.float32)
    for i, frame in enumerate(clip):
        frame = np.ascontiguousarray(frame)
        box = analyzer.largest_face(frame, upsample)
        if box is None:
            continue
        found[i], boxes[i] = True, box
        landmarks[i] = analyzer.landmarks(frame, box)
        if embed:
            embeddings[i] = analyzer.embedding(frame, box)
    return FrameFaces(found, boxes, landmarks, embeddings)


def identity_centroid(frames: ArrayLike, analyzer: FaceAnalyzer, *, upsample: int = 1) -> np.ndarray:
    """The mean embedding [128] of the largest face in each reference frame of one person."""
    faces = analyze_frames(frames, analyzer, upsample=upsample)
    if not faces.found.any():
        raise DataError(
            f"no face found in any of the {len(faces.found)} reference frames; pass frames showing the person's face "
            "(frontal, at least ~80 px wide, or raise upsample)"
        )
    return faces.embeddings[faces.found].astype(np.float64).mean(axis=0)


def identity_metrics(embeddings: ArrayLike, source_centroid: ArrayLike, target_centroid: ArrayLike) -> dict[str, float]:
    """Mean L2 of merged-face embeddings [N, D] to each centroid [D], and the fraction nearer the source.

    A tie counts as not retrieved. N = 0 (no merged face found) gives NaN: there is nothing to score.
    """
    emb = np.asarray(embeddings, np.float64)
    src, tgt = np.asarray(source_centroid, np.float64), np.asarray(target_centroid, np.float64)
    if emb.ndim != 2:
        raise DataError(f"embeddings must be [N, D]; got shape {list(emb.shape)}")
    for name, c in (("source_centroid", src), ("target_centroid", tgt)):
        if c.shape != (emb.shape[1],) or not np.all(np.isfinite(c)):
            raise DataError(f"{name} must be {emb.shape[1]} finite numbers (a mean embedding); got shape {list(c.shape)}")
    if len(emb) == 0:
        return {"id_l2_source": float("nan"), "id_l2_target": float("nan"), "id_retrieval": float("nan")}
    to_src, to_tgt = np.linalg.norm(emb - src, axis=1), np.linalg.norm(emb - tgt, axis=1)
    return {"id_l2_source": float(to_src.mean()), "id_l2_target": float(to_tgt.mean()),
            "id_retrieval": float(np.mean(to_src < to_tgt))}


def inter_ocular(landmarks: ArrayLike) -> np.ndarray:
    """Distance [N] between the outer eye corners (0-based 36 and 45) of 68-point landmarks [N, 68, 2]."""
    marks = np.asarray(landmarks, np.float64)
    return np.linalg.norm(marks[:, OUTER_EYE_CORNERS[0]] - marks[:, OUTER_EYE_CORNERS[1]], axis=-1)


def landmark_error(dest_landmarks: ArrayLike, merged_landmarks: ArrayLike) -> np.ndarray:
    """Per-frame error [N]: mean distance of the 68 landmarks, over the destination's inter-ocular distance."""
    dest, merged = np.asarray(dest_landmarks, np.float64), np.asarray(merged_landmarks, np.float64)
    if dest.shape != merged.shape or dest.ndim != 3 or dest.shape[1:] != (68, 2):
        raise DataError(
            f"need 68-point landmarks [N, 68, 2] for both clips; got {list(dest.shape)} and {list(merged.shape)}"
        )
    iod = inter_ocular(dest)
    if np.any(~(iod > 0)):
        raise DataError(f"destination faces {np.flatnonzero(~(iod > 0)).tolist()} have coincident or NaN eye corners")
    return np.linalg.norm(dest - merged, axis=-1).mean(axis=1) / iod


def frame_change(frames: ArrayLike, masks: ArrayLike) -> float:
    """Mean absolute change (uint8 levels) between consecutive frames over the pixels either frame's mask covers.

    Pooled over every pixel, channel and frame pair of the clip; NaN when the masks cover nothing.
    """
    clip = _frames(frames, "frames")
    if len(clip) < 2:
        raise DataError(f"temporal change needs at least 2 frames; got {len(clip)}")
    inside = _masks(masks, clip.shape)
    total, count = 0, 0
    for t in range(len(clip) - 1):
        region = inside[t] | inside[t + 1]
        change = np.abs(clip[t + 1][region].astype(np.int16) - clip[t][region])
        total, count = total + int(change.sum(dtype=np.int64)), count + change.size
    return total / count if count else float("nan")


def temporal_stability(dest_frames: ArrayLike, merged_frames: ArrayLike, blend_masks: ArrayLike) -> dict[str, float]:
    """Frame-to-frame change inside the merged face region for both clips, their ratio and difference.

    The ratio is merged / destination: 1.0 is as steady as the footage, above 1 flicker the merge
    added. It is NaN for 0 / 0 (two static clips) and inf when only the merge changes.
    """
    dest, merged = _clip_pair(dest_frames, merged_frames)
    d, m = frame_change(dest, blend_masks), frame_change(merged, blend_masks)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.float64(m) / np.float64(d))
    return dict(zip(TEMPORAL_KEYS, (m, d, ratio, m - d)))


def outside_mask(blend_masks: ArrayLike, dilate: int = DEFAULT_DILATE) -> np.ndarray:
    """bool [T, H, W]: the pixels farther than `dilate` px (Euclidean, centre to centre) from every mask pixel."""
    if isinstance(dilate, bool) or not isinstance(dilate, (int, np.integer)) or dilate < 0:
        raise DataError(f"dilate={dilate!r}: pass a whole number of pixels >= 0")
    inside = np.asarray(blend_masks)
    if inside.ndim == 4 and inside.shape[-1] == 1:
        inside = inside[..., 0]
    if inside.ndim != 3:
        raise DataError(f"blend_masks must be [T, H, W] or [T, H, W, 1]; got shape {list(np.shape(blend_masks))}")
    inside = inside > 0
    out = np.ones(inside.shape, bool)
    for i, frame in enumerate(inside):
        if frame.any():
            out[i] = ndimage.distance_transform_edt(~frame) > dilate
    return out


def background_psnr(
    dest_frames: ArrayLike, merged_frames: ArrayLike, blend_masks: ArrayLike, dilate: int = DEFAULT_DILATE
) -> dict[str, float]:
    """PSNR (dB, peak 255) outside the dilated blend mask, pooled over the clip; inf when bit-exact.

    Also the largest absolute difference there and the fraction of the clip's pixels it covers (NaN
    PSNR when that is 0: every pixel lies within `dilate` of a mask).
    """
    dest, merged = _clip_pair(dest_frames, merged_frames)
    _masks(blend_masks, dest.shape)
    outside = outside_mask(blend_masks, dilate)
    squares, count, worst = 0, 0, 0
    for d, m, keep in zip(dest, merged, outside):
        diff = d[keep].astype(np.int32) - m[keep]
        squares, count = squares + int(np.square(diff).sum(dtype=np.int64)), count + diff.size
        worst = max(worst, int(np.abs(diff).max(initial=0)))
    fraction = float(outside.mean())
    if count == 0:
        return {"background_psnr": float("nan"), "background_max_abs": float("nan"), "background_fraction": fraction}
    psnr = float("inf") if squares == 0 else float(10 * np.log10(255.0**2 * count / squares))
    return {"background_psnr": psnr, "background_max_abs": float(worst), "background_fraction": fraction}


def merge_metrics(
    dest_frames: ArrayLike,
    merged_frames: ArrayLike,
    blend_masks: ArrayLike,
    source_centroid: ArrayLike,
    target_centroid: ArrayLike,
    analyzer: FaceAnalyzer,
    *,
    dilate: int = DEFAULT_DILATE,
    upsample: int = 1,
    dest_faces: FrameFaces | None = None,
) -> dict[str, float | int]:
    """Every merge metric of a merged clip against its destination clip, as one flat JSON-ready dict.

    Identity is scored over the merged frames where dlib finds a face, landmark error over frames
    with a face in both clips. `detection_rate` is the fraction of frames with a destination face
    whose merged frame still shows one (1.0 for the copy baseline); `dest_detection_rate` the fraction
    of all frames with a destination face. dest_faces, when given, is `analyze_frames(dest_frames)`
    reused (the merge and its copy baseline share it); a merged clip identical to the destination
    reuses it too.
    """
    dest, merged = _clip_pair(dest_frames, merged_frames)
    _masks(blend_masks, dest.shape)
    if dest_faces is None:
        dest_faces = analyze_frames(dest, analyzer, upsample=upsample)
    elif len(dest_faces.found) != len(dest):
        raise DataError(f"dest_faces covers {len(dest_faces.found)} frames, the clip {len(dest)}; pass analyze_frames(dest_frames)")
    merged_faces = dest_faces if merged is dest or np.array_equal(merged, dest) else None
    if merged_faces is None or np.isnan(merged_faces.embeddings[merged_faces.found]).any():
        merged_faces = analyze_frames(merged, analyzer, upsample=upsample)
    both = dest_faces.found & merged_faces.found
    errors = landmark_error(dest_faces.landmarks[both], merged_faces.landmarks[both])
    n_dest = int(dest_faces.found.sum())
    result: dict[str, float | int] = {
        "frames": len(dest),
        "dest_detection_rate": n_dest / len(dest),
        "detection_rate": float(both.sum() / n_dest) if n_dest else float("nan"),
        "identity_frames": int(merged_faces.found.sum()),
        **identity_metrics(merged_faces.embeddings[merged_faces.found], source_centroid, target_centroid),
        "landmark_frames": int(both.sum()),
        "landmark_error": float(errors.mean()) if len(errors) else float("nan"),
        "landmark_error_max": float(errors.max()) if len(errors) else float("nan"),
    }
    if len(dest) >= 2:
        result |= temporal_stability(dest, merged, blend_masks)
    else:
        result |= {k: float("nan") for k in TEMPORAL_KEYS}
    result |= background_psnr(dest, merged, blend_masks, dilate)
    result["dilate_px"] = int(dilate)
    return result
