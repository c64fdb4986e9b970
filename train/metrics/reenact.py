"""Reenactment metrics on held-out clips, model-free: same-video reconstruction, cross-identity, synthetic truth.

Every metric takes an `animate(source uint8 [H,W,C], driving uint8 [T,H,W,C], mode) -> uint8 [T,H,W,C]`
callable, mode "absolute" (the driving keypoints as they are, for same-video reconstruction) or
"relative" (the source's keypoints moved by the driving clip's motion since its frame 0, for another
person), as FOMM's evaluation uses them; the family builds it from `zoo.animate`, so nothing here
knows a model. Clips are host arrays from `clips_of`. Each metric returns a flat dict of floats whose
keys name the protocol (`recon/akd_64px`, `cross/motion_corr`, `truth/psnr`) and carry its counts
(clips, frames, frames dlib scored), with the baselines beside the model's figures:

- `reconstruction`: the pose-evaluation protocol (Siarohin et al.). Each clip is reconstructed from
  its first frame; L1 on pixels in [0, 1]; AKD, the mean Euclidean distance of dlib's 68 landmarks
  between each driving frame and its reconstruction, in pixels at the clips' size (the key says
  which), and `akd_coord_*`, the pose-evaluation script's form, the mean absolute x and y difference
  (the papers' 1.29 is that, of face-alignment landmarks on VoxCeleb at 256 px); AED, the L2
  distance of dlib's 128-D embeddings, not OpenFace's (whose squared distances the papers report), so
  not comparable with their absolute AED. Baseline `copy_source/*`: the first frame unchanged. The
  driving frames would be the perfect reconstruction by definition, so they are no baseline here.
- `cross_identity`: person X's first frame animated by person Y's clip. Identity kept: mean embedding
  L2 to X's centroid (X's frames in the clips other than that source frame) and to Y's (all of Y's
  frames), and retrieval, the fraction of frames nearer X's centroid than Y's. Motion followed: the
  Pearson correlation of the landmark displacements since frame 0 of the output and of the driving
  clip. Baselines: `copy_source/*` (the source frame unchanged: identity kept, no motion, correlation
  0) and `driving/*` (the driving frames: perfect motion, Y's identity; Y's centroid holds these very
  frames, so theirs is the nearest Y can be). A pair where dlib found none of X's or Y's gallery faces
  scores no identity (`no_gallery_pairs`).
- `truth`: synthetic people only (`data.synthetic.clips`). X's first frame animated by Y's clip is
  compared by PSNR and SSIM with `reenact_truth`, X rendered with Y's expression and pose in every
  frame and the source frame's light, and with `relative_truth`, X's source-frame parameters moved
  by Y's change since Y's frame 0, which is what relative mode's formula asks for in parameter space
  (the two differ by X's and Y's pose difference at frame 0). Frames 1.. are scored. Baselines: the
  source frame unchanged and the driving frames. No face detector is involved.

Faces are found by dlib (`data.faces.dlib_models`; HOG detector, 68-point predictor, ResNet
embedding) on frames upscaled (bicubic) to `ANALYSIS_SIZE` px first, and landmarks are mapped back to
the clips' own pixel coordinates. On GRID's aligned 64 px faces (6 speakers, every 5th frame, 90
faces) the HOG detector found none at 64 px without upsampling (its window is 80 px) and all 90 at
64 px with upsample 1, 128 px or 256 px; dlib places landmarks on whole pixels, so the landmark
jitter under +-2 levels of pixel noise was 0.21 px (at 64 px) analysed at 64 px, 0.16 at 128 and
0.12 at 256, hence 256. Analysis costs about 0.15 s a frame on 2 busy cores, most of it the embedding.
A frame where dlib finds no face is left out of AKD, AED, identity and motion and counted
(`no_face_driving`, `no_face_output`, `face_missed_rate`, `frames_scored`, `id_frames`), never dropped
silently; a figure with nothing to average is NaN. dlib found 16 of 32 synthetic 64 px faces (the
synthetic smoke config's test clips), so on synthetic data `truth` is the measure and `reenact`'s face
figures are thin.

`host_evaluator(kind, make_animate)` wraps them as the family's host evaluators, one per name of KINDS:

    host_evaluators={kind: reenact.host_evaluator(kind, make_animate) for kind in reenact.KINDS}

where make_animate(state) returns the animate callable (train/families/reenact.py: animate_callable).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from train.metrics.merge import FrameFaces
from zoo.errors import ConfigError, DataError

Animate = Callable[[np.ndarray, np.ndarray, str], np.ndarray]
#: frames uint8 [T, H, W, C], embed -> what dlib found in each frame, landmarks in the frames' own pixels.
FaceFn = Callable[..., FrameFaces]

ANALYSIS_SIZE = 256
KINDS = ("reenact", "reenact_truth")
DEFAULT_MAX_CLIPS = 8
DEFAULT_MAX_FRAMES = 32
SSIM_WINDOW = 11
COPY, DRIVING = "copy_source", "driving"


class Clip(NamedTuple):
    """One video of a frame source: its id, its person's label and its frames in order."""

    video: int
    label: int
    frames: np.ndarray  # uint8 [T, H, W, C]


def frame_source(source: Any) -> Any:
    """The frame source itself, or the one inside a `data.video_pairs.VideoPairs` (the reenact family's data)."""
    inner = getattr(source, "frames", None)
    return inner if inner is not None and hasattr(source, "pair_indices") else source


def _read(source: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Images [N, H, W, C] and labels [N] (None when the source has none) of examples `indices`."""
    gather = getattr(source, "gather", None)
    if gather is not None:
        batch = gather(indices)
        labels = batch.get("label")
        return np.asarray(batch["image"]), None if labels is None else np.asarray(labels)
    examples = [source[int(i)] for i in indices]
    labels = [e["label"] for e in examples] if "label" in examples[0] else None
    return np.stack([np.asarray(e["image"]) for e in examples]), None if labels is None else np.asarray(labels)


def turns(labels: Sequence[int]) -> list[int]:
    """Positions of `labels` taken person by person in turn: each person's first item, then each one's second..."""
    seen: dict[int, int] = {}
    rank = []
    for i, label in enumerate(labels):
        rank.append((seen.get(int(label), 0), int(label), i))
        seen[int(label)] = seen.get(int(label), 0) + 1
    return [i for _, _, i in sorted(rank)]


def clips_of(source: Any, *, max_clips: int = 0, max_frames: int = 0) -> list[Clip]:
    """Videos of a frame source as `Clip`s, frames in frame order, in video-id order (all) or by `turns` (capped).

    `source` is any source with video and frame fields (synthetic_clips:, aligned:, facecrop:, video:)
    or a `VideoPairs`, whose frame source is read. max_clips > 0 keeps that many videos taken person
    by person in turn, so a cap still leaves several people for cross-identity; max_frames > 0 keeps
    the first that many frames of each. A video with a single frame is kept (it scores frame 0 only).
    The label is the first frame's (-1 when the source has none).
    """
    from data.video_pairs import video_frames

    frames_source = frame_source(source)
    name = getattr(frames_source, "info", frames_source)
    if max_clips < 0 or max_frames < 0:
        raise DataError(f"max_clips={max_clips}, max_frames={max_frames}: pass 0 (all) or a positive count")
    index = video_frames(frames_source)
    if len(index) == 0:
        raise DataError(f"reenactment metrics: {name} holds no frames")
    order = np.lexsort((index[:, 1], index[:, 0]))
    videos, starts, counts = np.unique(index[order, 0], return_index=True, return_counts=True)
    members = [order[s:s + (c if max_frames == 0 else min(c, max_frames))] for s, c in zip(starts, counts)]
    chosen = range(len(videos))
    if max_clips and max_clips < len(videos):
        labels = _read(frames_source, np.asarray([m[0] for m in members]))[1]
        chosen = sorted(turns(videos if labels is None else labels)[:max_clips])
    clips = []
    for k in chosen:
        images, labels = _read(frames_source, members[k])
        images = _clip_array(images, f"video {videos[k]} of {name}")
        clips.append(Clip(int(videos[k]), -1 if labels is None else int(labels[0]), images))
    return clips


def _clip_array(frames: Any, name: str) -> np.ndarray:
    """frames as uint8 [T, H, W, C] (C 1 or 3), or a DataError saying what they are instead."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.dtype != np.uint8 or len(arr) == 0:
        raise DataError(f"{name}: need uint8 frames [T, H, W, 1 or 3] with T >= 1; got {arr.dtype} {list(arr.shape)}")
    return arr


def animated(animate: Animate, source: np.ndarray, driving: np.ndarray, mode: str) -> np.ndarray:
    """animate's frames for (source, driving), checked to be uint8 of the driving clip's shape."""
    out = np.asarray(animate(source, driving, mode))
    if out.shape != driving.shape or out.dtype != np.uint8:
        raise DataError(f"animate returned {out.dtype} {list(out.shape)} for a driving clip {list(driving.shape)} "
                        f"in {mode} mode; it must return uint8 frames of the driving clip's shape")
    return out


def next_identity_pairs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Deterministic cross-identity pairs (i, j) of positions in `labels`: each item with another person's.

    The k-th item of the person ranked r (labels sorted) is paired with the k-th item (cycling) of the
    person ranked r + 1 (cycling), so every item is a source once and every person drives another.
    """
    labels = [int(v) for v in labels]
    people = sorted(set(labels))
    if len(people) < 2:
        raise DataError(f"cross-identity pairs need clips of at least two people; got labels {people}: evaluate on a "
                        "split holding several people (e.g. synthetic_clips:ids=0-3 or an aligned dir of several videos)")
    members = {p: [i for i, v in enumerate(labels) if v == p] for p in people}
    pairs = []
    for i, label in enumerate(labels):
        k = members[label].index(i)
        others = members[people[(people.index(label) + 1) % len(people)]]
        pairs.append((i, others[k % len(others)]))
    return pairs


class DlibFaces:
    """dlib's largest face, 68 landmarks and embedding per frame, on frames upscaled to `analysis_size` px.

    Results are kept per frame content, so a frame analysed once (a driving frame, a repeated source
    frame) costs nothing again. Landmarks come back in the input frames' pixel coordinates (pixel
    centres at integers, as dlib's), mapped from the upscaled frame by x = (x_up + 0.5) / s - 0.5.
    """

    def __init__(self, analysis_size: int = ANALYSIS_SIZE, upsample: int = 0, detector: str = "hog") -> None:
        from data.faces.dlib_models import FaceAnalyzer

        if analysis_size < 1 or upsample < 0:
            raise ConfigError(f"analysis_size={analysis_size}, upsample={upsample}: need a positive size and upsample >= 0")
        self.analyzer = FaceAnalyzer(detector)
        self.analysis_size, self.upsample = int(analysis_size), int(upsample)
        self._memo: dict[bytes, tuple[bool, np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def upscaled(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The RGB frame resized (bicubic) so its longer side is analysis_size when smaller, and the factor."""
        import cv2

        rgb = np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame
        scale = self.analysis_size / max(frame.shape[:2])
        if scale <= 1:
            return np.ascontiguousarray(rgb), 1.0
        size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
        return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)), scale

    def _frame(self, frame: np.ndarray, embed: bool) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray | None]:
        key = repr(frame.shape).encode() + hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
        known = self._memo.get(key)
        if known is not None and (known[3] is not None or not embed or not known[0]):
            return known
        image, scale = self.upscaled(frame)
        box = self.analyzer.largest_face(image, self.upsample)
        if box is None:
            result = (False, np.zeros(4, np.int64), np.full((68, 2), np.nan, np.float32), None)
        else:
            marks = (self.analyzer.landmarks(image, box) + 0.5) / scale - 0.5
            emb = self.analyzer.embedding(image, box) if embed else None
            result = (True, np.asarray(box), marks.astype(np.float32), emb)
        self._memo[key] = result
        return result

    def __call__(self, frames: np.ndarray, embed: bool = True) -> FrameFaces:
        clip = _clip_array(frames, "frames")
        rows = [self._frame(np.ascontiguousarray(f), embed) for f in clip]
        return FrameFaces(
            found=np.array([r[0] for r in rows], bool),
            boxes=np.stack([r[1] for r in rows]),
            landmarks=np.stack([r[2] for r in rows]),
            embeddings=np.stack([r[3] if r[3] is not None else np.full(128, np.nan, np.float32) for r in rows]),
        )


def _size_of(clips: Sequence[Clip]) -> int:
    """The clips' common side (they must share one, so one pixel unit holds for AKD)."""
    if not clips:
        raise DataError("no clips to evaluate; pass clips_of(source) of a split holding videos")
    shapes = sorted({c.frames.shape[1:] for c in clips})
    if len(shapes) != 1 or shapes[0][0] != shapes[0][1]:
        raise DataError(f"clips must share one square frame shape for one pixel unit; got {shapes}: resize them "
                        "(e.g. aligned:DIR;size=64)")
    return int(shapes[0][0])


def landmark_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean Euclidean distance [T] of matching 68-point landmarks [T, 68, 2]."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1).mean(axis=-1)


class _Scores:
    """Running per-frame values and counts of one output kind (the model's, or a baseline's)."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, values: Any) -> None:
        self.values.setdefault(name, []).append(np.atleast_1d(np.asarray(values, np.float64)))

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def means(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(c) for k, c in self.counts.items()}
        for name, parts in self.values.items():
            values = np.concatenate(parts)
            out[name] = float(values.mean()) if values.size else float("nan")
        return out


def _face_scores(scores: _Scores, driving: FrameFaces, output: FrameFaces, size: int, landmarks: bool,
                 embed: bool) -> None:
    """AKD, AED and the face counts of one output clip against its driving clip."""
    both = driving.found & output.found
    scores.count("frames_scored", both.sum())
    scores.count("no_face_driving", (~driving.found).sum())
    scores.count("no_face_output", (~output.found).sum())
    scores.count("_driving_faces", driving.found.sum())
    scores.count("_missed", (driving.found & ~output.found).sum())
    if landmarks:
        a, b = driving.landmarks[both].astype(np.float64), output.landmarks[both].astype(np.float64)
        scores.add(f"akd_{size}px", landmark_distance(a, b))
        scores.add(f"akd_coord_{size}px", np.abs(a - b).mean(axis=(1, 2)))
    if embed:
        scores.add("aed_dlib", np.linalg.norm(driving.embeddings[both].astype(np.float64)
                                              - output.embeddings[both], axis=-1))


def _finish(prefix: str, parts: dict[str, _Scores], common: dict[str, float]) -> dict[str, float]:
    """One flat dict: `prefix/metric` for the model, `prefix/<baseline>/metric` for each baseline."""
    out = {f"{prefix}/{k}": v for k, v in common.items()}
    for name, scores in parts.items():
        means = scores.means()
        if "_driving_faces" in means:
            faces = means.pop("_driving_faces")
            means["face_missed_rate"] = means.pop("_missed") / faces if faces else float("nan")
        head = prefix if name == "model" else f"{prefix}/{name}"
        out |= {f"{head}/{k}": v for k, v in means.items()}
    return out


def reconstruction(animate: Animate, clips: Sequence[Clip], *, faces: FaceFn | None = None, landmarks: bool = True,
                   embed: bool = True) -> dict[str, float]:
    """The pose-evaluation protocol on held-out clips: each clip reconstructed from its first frame (absolute mode).

    Every frame of a clip is generated, frame 0 included, and L1 is the mean over all of them (as
    FOMM's reconstruction script). landmarks / embed switch AKD / AED (dlib, via `faces`, default
    `DlibFaces()`) on; with both off no face model is loaded. See the module docstring for each figure.
    """
    size = _size_of(clips)
    parts = {"model": _Scores(), COPY: _Scores()}
    if faces is None and (landmarks or embed):
        faces = DlibFaces()
    for clip in clips:
        driving = clip.frames
        outputs = {"model": animated(animate, driving[0], driving, "absolute"),
                   COPY: np.broadcast_to(driving[:1], driving.shape)}
        target = driving.astype(np.float64) / 255.0
        for name, output in outputs.items():
            parts[name].add("l1", np.abs(output / 255.0 - target).mean(axis=(1, 2, 3)))
        if faces is not None and (landmarks or embed):
            found = faces(driving, embed=embed)
            for name, output in outputs.items():
                _face_scores(parts[name], found, faces(output, embed=embed), size, landmarks, embed)
    common = {"num_clips": float(len(clips)), "num_frames": float(sum(len(c.frames) for c in clips)),
              "size_px": float(size)}
    return _finish("recon", parts, common)


def correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two equal-length vectors; 0 when either is constant (no motion follows nothing)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise DataError(f"correlation needs equal lengths; got {x.size} and {y.size}")
    if x.size < 2:
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt(np.sum(x * x)), np.sqrt(np.sum(y * y))
    return 0.0 if sx == 0 or sy == 0 else float(np.sum(x * y) / (sx * sy))


def motion_correlation(output: FrameFaces, driving: FrameFaces) -> tuple[float, int]:
    """Correlation of landmark displacements since frame 0 (output vs driving) and the frames it used.

    Frames 1.. where both clips have a face count, provided frame 0 has one in both; otherwise
    (nan, 0): nothing to compare.
    """
    if not (output.found[0] and driving.found[0]):
        return float("nan"), 0
    use = output.found & driving.found
    use[0] = False
    if not use.any():
        return float("nan"), 0
    moved_out = output.landmarks[use].astype(np.float64) - output.landmarks[0]
    moved_drv = driving.landmarks[use].astype(np.float64) - driving.landmarks[0]
    return correlation(moved_out, moved_drv), int(use.sum())


def _centroid(embeddings: list[np.ndarray]) -> np.ndarray:
    """Mean of the rows found (non-NaN) among the embeddings, NaN [128] when none."""
    rows = np.concatenate(embeddings) if embeddings else np.zeros((0, 128))
    rows = rows[np.all(np.isfinite(rows), axis=1)].astype(np.float64)
    return rows.mean(axis=0) if len(rows) else np.full(128, np.nan)


def cross_identity(animate: Animate, clips: Sequence[Clip], pairs: Sequence[tuple[int, int]] | None = None, *,
                   faces: FaceFn | None = None) -> dict[str, float]:
    """Person X's first frame animated by person Y's clip (relative mode): identity kept and motion followed.

    pairs are (source clip, driving clip) positions in `clips`, of different labels; default
    `next_identity_pairs` of the clips' labels. Embeddings and landmarks are dlib's (`faces`, default
    `DlibFaces()`); see the module docstring for each figure and baseline.
    """
    _size_of(clips)
    pairs = next_identity_pairs([c.label for c in clips]) if pairs is None else [(int(i), int(j)) for i, j in pairs]
    for i, j in pairs:
        if not (0 <= i < len(clips) and 0 <= j < len(clips)):
            raise DataError(f"cross-identity pair {(i, j)} names a clip outside the {len(clips)} given")
        if clips[i].label == clips[j].label:
            raise DataError(f"cross-identity pair {(i, j)}: both clips show person {clips[i].label}; pair clips of "
                            "different people (next_identity_pairs does)")
    faces = DlibFaces() if faces is None else faces
    found = [faces(c.frames) for c in clips]
    parts = {"model": _Scores(), COPY: _Scores(), DRIVING: _Scores()}
    no_gallery = 0
    for i, j in pairs:
        x, y = clips[i].label, clips[j].label
        gallery_x = [f.embeddings[1:] if k == i else f.embeddings for k, f in enumerate(found) if clips[k].label == x]
        centre_x = _centroid(gallery_x)
        centre_y = _centroid([f.embeddings for k, f in enumerate(found) if clips[k].label == y])
        galleries = bool(np.all(np.isfinite(centre_x)) and np.all(np.isfinite(centre_y)))
        no_gallery += not galleries
        driving = clips[j].frames
        outputs = {"model": animated(animate, clips[i].frames[0], driving, "relative"),
                   COPY: np.broadcast_to(clips[i].frames[:1], driving.shape), DRIVING: driving}
        for name, output in outputs.items():
            scores, out_faces = parts[name], faces(output)
            scores.count("no_face_output", (~out_faces.found).sum())
            emb = out_faces.embeddings[out_faces.found & galleries].astype(np.float64)
            to_x, to_y = np.linalg.norm(emb - centre_x, axis=-1), np.linalg.norm(emb - centre_y, axis=-1)
            scores.add("source_id_l2", to_x)
            scores.add("driving_id_l2", to_y)
            scores.add("source_id_retrieval", (to_x < to_y).astype(np.float64))
            scores.count("id_frames", len(emb))
            corr, used = motion_correlation(out_faces, found[j])
            if used:
                scores.add("motion_corr", corr)
            scores.count("motion_pairs", int(used > 0))
            scores.count("motion_frames", used)
    common = {"num_pairs": float(len(pairs)), "num_frames": float(sum(len(clips[j].frames) for _, j in pairs)),
              "no_face_driving": float(sum((~found[j].found).sum() for _, j in pairs)),
              "no_gallery_pairs": float(no_gallery)}
    return _finish("cross", parts, common)


_EXPRESSION_RANGE = np.array([[0.0, -1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
_POSE_RANGE = np.array([[-10.0, -1.0, -0.08, -0.06, 0.9], [10.0, 1.0, 0.08, 0.06, 1.1]])


def relative_truth(source: Any, label_x: int, video_x: int, video_y: int) -> np.ndarray:
    """uint8 [T,S,S,3]: X with its source frame's expression and pose moved by Y's change since Y's frame 0.

    The parameter-space counterpart of relative mode's kp_s + (kp_d - kp_d0): frame t gets X's frame-0
    expression and pose plus (Y's at t - Y's at 0), clipped to the range the still faces are drawn from,
    and the light of X's source frame. Frame 0 is X's source frame itself.
    """
    from data.synthetic.clips import reenact_truth
    from data.synthetic.params import Expression, Pose

    ex, px = source.clip(video_x)
    ey, py = source.clip(video_y)
    e = ex.vector()[:1] + ey.vector() - ey.vector()[:1]
    q = np.repeat(px.vector()[:1], len(py), axis=0)
    moved = px.vector()[:1, :5] + py.vector()[:, :5] - py.vector()[:1, :5]
    q[:, :5] = np.clip(moved, *_POSE_RANGE)
    e = np.clip(e, *_EXPRESSION_RANGE)
    return reenact_truth(source.identities[int(label_x)], (Expression.from_vector(e), Pose.from_vector(q)),
                         source.size)


def truth_frames(source: Any, label_x: int, video_x: int, video_y: int, mode: str) -> np.ndarray:
    """uint8 [T, S, S, 3]: what person `label_x` animated by clip `video_y` from clip `video_x`'s first frame should be.

    Absolute mode: X rendered with Y's expression and pose per frame, in the light of X's source frame;
    relative mode: `relative_truth`. The references of `truth` and the grid's truth row.
    """
    if mode == "relative":
        return relative_truth(source, label_x, video_x, video_y)
    return source.truth(label_x, video_y, lighting=source.clip(video_x)[1][:1])


def is_synthetic(source: Any) -> bool:
    """Whether `source` (or the frame source inside a VideoPairs) is synthetic people, whose truth can be rendered."""
    from data.synthetic.clips import SyntheticClips

    return isinstance(frame_source(source), SyntheticClips)


def _synthetic(source: Any) -> Any:
    """The SyntheticClips behind `source`, or a ConfigError naming the data that has a truth."""
    inner = frame_source(source)
    if not is_synthetic(inner):
        raise ConfigError(f"metric 'reenact_truth' needs synthetic people, whose exact reenactment can be rendered; "
                          f"the evaluation data is {getattr(inner, 'info', inner)}: use data.source = "
                          "'video_pairs:synthetic_clips:...' (configs/reenact_fomm_synthetic.py) or drop the metric")
    return inner


def truth_pairs(source: Any, max_pairs: int = 0) -> list[tuple[int, int]]:
    """(video_x, video_y) pairs of a synthetic source: each clip with the same-numbered clip of the next person.

    max_pairs > 0 keeps that many, sources taken person by person in turn (`turns`).
    """
    inner = _synthetic(source)
    labels = [inner.video_label(v) for v in range(inner.num_videos)]
    pairs = next_identity_pairs(labels)
    return [pairs[i] for i in turns(labels)[:max_pairs or None]]


def _quality(output: np.ndarray, truth: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame PSNR (dB, capped at 100 by train.losses' MSE floor) and SSIM of uint8 clips."""
    import jax.numpy as jnp

    from train import losses

    x, y = jnp.asarray(output, jnp.float32) / 255.0, jnp.asarray(truth, jnp.float32) / 255.0
    return np.asarray(losses.psnr(x, y)), np.asarray(losses.ssim(x, y, filter_size=window))


def truth(animate: Animate, source: Any, pairs: Sequence[tuple[int, int]] | None = None, *, max_frames: int = 0,
          ssim_window: int = SSIM_WINDOW) -> dict[str, float]:
    """PSNR/SSIM of X's first frame animated by Y's clip (relative mode) against the rendered truth.

    source is a `SyntheticClips` (or a VideoPairs over one); pairs are (video_x, video_y) of it,
    default `truth_pairs(source)`; max_frames > 0 animates the first that many frames of each clip.
    Frames 1.. are scored (num_frames counts them): frame 0 of the relative truth is the source frame
    itself, whose PSNR, capped at 100 dB, would swamp a per-frame mean for the copy baseline.
    `truth/*` is against `reenact_truth` (Y's expression and pose, X's source light), `truth/rel_*`
    against `relative_truth`; the SSIM window is min(ssim_window, size), stated under truth/ssim_window.
    """
    synth = _synthetic(source)
    pairs = truth_pairs(synth) if pairs is None else [(int(x), int(y)) for x, y in pairs]
    if not pairs:
        raise DataError("reenact_truth: no pairs to score")
    window = min(int(ssim_window), synth.size)
    parts = {"model": _Scores(), COPY: _Scores(), DRIVING: _Scores()}
    frames = 0
    for vx, vy in pairs:
        x = synth.video_label(vx)
        if x == synth.video_label(vy):
            raise DataError(f"reenact_truth pair {(vx, vy)}: both clips show person {x}; pair different people")
        take_y = synth.clip_indices(vy)[:max_frames or None]
        if len(take_y) < 2:
            raise DataError(f"reenact_truth: max_frames={max_frames}; need at least 2 frames (frame 0 drives nothing)")
        source_frame = _read(synth, synth.clip_indices(vx)[:1])[0]
        driving = _read(synth, take_y)[0]
        references = {tag: truth_frames(synth, x, vx, vy, mode)[:len(take_y)]
                      for tag, mode in (("", "absolute"), ("rel_", "relative"))}
        outputs = {"model": animated(animate, source_frame[0], driving, "relative"),
                   COPY: np.broadcast_to(source_frame, driving.shape), DRIVING: driving}
        for name, output in outputs.items():
            for tag, reference in references.items():
                psnr, ssim = _quality(output[1:], reference[1:], window)
                parts[name].add(f"{tag}psnr", psnr)
                parts[name].add(f"{tag}ssim", ssim)
        frames += len(take_y) - 1
    common = {"num_pairs": float(len(pairs)), "num_frames": float(frames), "size_px": float(synth.size),
              "ssim_window": float(window)}
    return _finish("truth", parts, common)


def host_evaluator(kind: str, make_animate: Callable[[Any], Animate], *, max_clips: int = DEFAULT_MAX_CLIPS,
                   max_frames: int = DEFAULT_MAX_FRAMES, faces: FaceFn | None = None
                   ) -> Callable[[Any, Any, int], dict[str, float]]:
    """A family host evaluator `(state, source, num_examples) -> dict` for `--metrics reenact` or `reenact_truth`.

    make_animate(state) gives the animate callable (the family builds it from zoo.animate). "reenact" is
    `reconstruction` and `cross_identity` on `clips_of(source)`; "reenact_truth" is `truth` on
    `truth_pairs(source)`. At most max_clips clips (pairs for reenact_truth) of max_frames frames are
    scored, and num_examples > 0 lowers the clip (pair) count to it: the host-evaluator convention's
    "first N examples" counted in clips, as a clip is this protocol's example.
    """
    if kind not in KINDS:
        raise ConfigError(f"reenactment host evaluator {kind!r} is not one of {', '.join(KINDS)}")

    def evaluate(state: Any, source: Any, num_examples: int) -> dict[str, float]:
        caps = [v for v in (max_clips, num_examples) if v > 0]
        limit = min(caps) if caps else 0
        animate = make_animate(state)
        if kind == "reenact_truth":
            return truth(animate, source, truth_pairs(source, limit), max_frames=max_frames)
        clips = clips_of(source, max_clips=limit, max_frames=max_frames)
        shared = DlibFaces() if faces is None else faces
        out = reconstruction(animate, clips, faces=shared)
        if len({c.label for c in clips}) > 1:
            out |= cross_identity(animate, clips, faces=shared)
        return out

    return evaluate
