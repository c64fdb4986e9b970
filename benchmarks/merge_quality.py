"""Merge quality of a swap model on a held-out destination clip, beside the copy baseline (issue 13, item 5).

    python -m benchmarks merge_quality --export runs/grid_aligned/export.safetensors \\
        --dest ../shared/data/grid/lbax4n.mpg --dest-frames 50:75 \\
        --target-ref ../shared/data/grid/lbax4n.mpg --target-frames 0:50 \\
        --source-ref ../shared/data/grid/bbaf2n.mpg \\
        [--direction b2a] [--merge-option color=rct --merge-option blend=seamless] [--json merge_quality.json]

(--workdir W instead of --export merges with W's newest checkpoint, --step N with another.)

The destination clip (--dest, a video or a folder of frames, cut to --dest-frames START:STOP) is
merged in memory by `train.merge.merged_frames_with_masks` (dlib detection, the model's --direction
swap: b2a, DeepFaceLab's, renders the destination's faces as the source person; --merge-option takes
train.merge's mask, erode, blur, color, blend, face_type and batch), which yields each merged frame
with the blend mask it was merged with. Every metric of `train.metrics.merge` is then computed through
the same function for four clips against the destination frames, with those masks:
- merge: the merged frames as the merge made them, before any encoding (background must be exact: inf);
- copy: the baseline, the destination unchanged;
- merge_encoded, copy_encoded: both after a libx264 round trip at --crf (train.merge's encoder and
  default), what a viewer of the video gets; the copy's row is the codec's own floor (--no-encode skips them).
The source and target identities are the mean dlib embeddings of --ref-count evenly spaced frames of
--source-ref and --target-ref (the destination's own person); the target reference must not share
frames with the destination clip, which the benchmark refuses when both come from one file.

The README's run (done with this module, the command above): two GRID speakers, the source bbaf2n (A, all
75 frames) and the destination lbax4n (B, its first 50 frames: a copy cut with ffmpeg's
`select=lt(n\\,50)`, written outside the repository), each extracted with `python -m data.faces extract`,
DF-UD at 128 px trained on the two aligned sets (`configs/swap_df_grid.py` with the two `aligned:DIR`
sources), then the merge of lbax4n's held-out frames 50-74, b2a (rendered as bbaf2n). Nothing made from
these people's faces is committed: the JSON carries numbers only, and the merged video is kept only where
--keep names a file (outside the repository; it carries train.merge's provenance: container comment and a
JSON manifest).

JSON: `metrics` maps each metric to {row: value} for the rows above; non-finite values (background PSNR of an
untouched background is inf) are written as JSON's Infinity/NaN extensions, which Python reads back.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import tempfile
import time
from typing import Any, NamedTuple

import numpy as np

from benchmarks.common import emit, entry, machine
from train.metrics import merge as metrics
from zoo.errors import ConfigError, DataError

PROTOCOL = (
    "dlib HOG detector (largest face per frame) and 68-point landmarks; identity: dlib ResNet 128-D embeddings, "
    "L2 to the mean embedding of each reference set, retrieval = fraction of merged faces nearer the source; "
    "landmark error: mean over the 68 points over the destination's distance between the outer eye corners "
    "(0-based 36 and 45); temporal change: mean |frame t+1 - frame t| in uint8 levels over the union of the two "
    "frames' blend masks, pooled over the clip; background: PSNR (peak 255) over pixels farther than dilate_px "
    "from the blend mask, one MSE pooled over all such pixels and channels of the clip"
)
DEFAULT_FPS = 25.0


class Clip(NamedTuple):
    """Frames of one file, with their numbers in it."""

    path: pathlib.Path
    frames: np.ndarray  # uint8 [T, H, W, 3]
    numbers: np.ndarray  # int [T]


class Merged(NamedTuple):
    """A merged clip as `train.merge` produced it, before any video encoding."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # float32 [T, H, W]: the blend mask each frame was merged with (0 where untouched)
    info: dict[str, Any]  # what the merge reports: model, options, faces found, timings


def parse_range(text: str | None) -> slice:
    """'START:STOP' (either may be empty) as a slice of frame indices; None or '' is every frame."""
    if not text:
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ConfigError(f"frame range {text!r}: write START:STOP, e.g. 50:75 (either side may be empty)") from None
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        raise ConfigError(f"frame range {text!r}: frame numbers count from 0 and cannot be negative")
    return slice(start, stop)


def load_clip(path: str | os.PathLike[str], frames: slice = slice(None)) -> Clip:
    """The frames of a video or a folder of images (name order), cut to `frames`."""
    from data import media

    path = pathlib.Path(path)
    if path.is_dir():
        source = media.FolderSource(path, strict=True)
        numbers = np.arange(len(source))[frames]
        images = [source[int(i)]["image"] for i in numbers]
        if len({im.shape for im in images}) > 1:
            raise DataError(f"{path}: the frames differ in size; pass a folder of frames of one video")
        clip = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    else:
        source = media.VideoSource(path, strict=True, max_frames=frames.stop)
        numbers = np.arange(len(source))[frames]
        clip = source.images[numbers]
    if len(numbers) == 0:
        raise DataError(f"{path}: no frames in range {frames.start}:{frames.stop} (it has {len(source)}); "
                        "pass another range")
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise DataError(f"{path}: frames must be RGB; got shape {list(clip.shape[1:])}")
    return Clip(path, np.ascontiguousarray(clip), numbers)


def reference_frames(clip: Clip, count: int) -> np.ndarray:
    """`count` evenly spaced frames of a clip (all when it is shorter)."""
    if count < 1:
        raise ConfigError(f"--ref-count {count}: pass at least 1")
    index = np.unique(np.linspace(0, len(clip.frames) - 1, min(count, len(clip.frames))).round().astype(int))
    return clip.frames[index]


def check_held_out(dest: Clip, target: Clip) -> None:
    """Refuse a target reference that shares frames with the destination clip (same file, overlapping numbers)."""
    if dest.path.resolve() != target.path.resolve():
        return
    shared = np.intersect1d(dest.numbers, target.numbers)
    if len(shared):
        raise ConfigError(
            f"--target-ref {target.path} shares {len(shared)} frames ({shared[0]}..{shared[-1]}) with the destination "
            "clip, so the copy baseline would be scored against its own frames: pass disjoint --dest-frames and "
            "--target-frames (e.g. 50:75 and 0:50)"
        )


def parse_options(items: list[str]) -> dict[str, Any]:
    """--merge-option NAME=VALUE pairs as a dict; values read as JSON where they parse (numbers), else strings."""
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--merge-option {item!r}: write NAME=VALUE, e.g. color=rct or erode=20")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


def merge_clip(model: dict[str, Any], clip: Clip, direction: str, options: dict[str, Any]) -> Merged:
    """The one call into `train.merge`: the clip merged with the model (detected by dlib), and its blend masks.

    options are `data.faces.merge.MergeOptions` fields plus face_type and batch, as `python -m train.merge`
    takes them. The frames are merged in memory, so they are the merge's own bytes, before any encoding.
    """
    from data.faces import merge as merging
    from train import merge

    settings = dict(options)
    face_type = str(settings.pop("face_type", merge.DEFAULT_FACE_TYPE))
    batch = settings.pop("batch", 16)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--merge-option batch={batch!r}: pass a positive whole number")
    fields = {f.name for f in dataclasses.fields(merging.MergeOptions)}
    if set(settings) - fields:
        raise ConfigError(f"--merge-option {', '.join(sorted(set(settings) - fields))}: not a merge option; "
                          f"choose from {', '.join(sorted(fields | {'face_type', 'batch'}))}")
    merge_options = merging.MergeOptions(**settings)
    loaded = merge.load_swap_model(model.get("export"), model.get("workdir"), model.get("step"))
    find = merge.detector_lookup(face_type, int(loaded.module.resolution), all_faces=False)
    footage = merge.Footage("video", iter(clip.frames), [f"{clip.path.stem}_{n:06d}" for n in clip.numbers],
                            DEFAULT_FPS, None, [clip.path], [(clip.path.name, int(n)) for n in clip.numbers])
    stats = merge.Stats()
    start = time.perf_counter()
    merged = list(merge.merged_frames_with_masks(footage, find, loaded, direction, merge_options, batch, stats))
    seconds = time.perf_counter() - start
    info = {"model": loaded.name, "model_sha256": loaded.sha256, "model_origin": loaded.origin,
            "face_type": face_type, "batch": batch, "options": dataclasses.asdict(merge_options),
            "faces": stats.faces, "frames_without_a_face": stats.no_face, "seconds": round(seconds, 2),
            "frames_per_s": round(stats.frames / seconds, 2),
            "seconds_detect": round(stats.detect_s, 2), "seconds_swap": round(stats.swap_s, 2),
            "seconds_first_swap_with_compilation": round(stats.first_swap_s, 2),
            "seconds_merge": round(stats.merge_s, 2)}
    return Merged(np.stack([m.frame for m in merged]), np.stack([m.mask for m in merged]).astype(np.float32),
                  info)


def through_codec(frames: np.ndarray, path: pathlib.Path, crf: int, fps: float, provenance: dict[str, Any]) -> np.ndarray:
    """The frames as a viewer of the merged video gets them: written as train.merge writes (libx264), decoded."""
    from data.faces import video_out

    written = video_out.write_mp4(path, iter(frames), fps=fps, crf=crf, title="merge_quality benchmark",
                                  manifest=provenance)
    decoded = np.stack(list(video_out.read_frames(written.path, written.frames)))
    return np.ascontiguousarray(decoded[:, : frames.shape[1], : frames.shape[2]])  # H.264's even-size padding off


def compare(dest: np.ndarray, rows: dict[str, np.ndarray], masks: np.ndarray, centroids: dict[str, np.ndarray],
            analyzer: Any, dilate: int, upsample: int) -> dict[str, dict[str, float]]:
    """Every metric of each clip in rows against the destination, as {metric: {row: value}}."""
    dest_faces = metrics.analyze_frames(dest, analyzer, upsample=upsample)
    scored = {name: metrics.merge_metrics(dest, frames, masks, centroids["source"], centroids["target"], analyzer,
                                          dilate=dilate, upsample=upsample, dest_faces=dest_faces)
              for name, frames in rows.items()}
    first = next(iter(scored.values()))
    return {key: {name: scored[name][key] for name in scored} for key in first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--export", help="a swap model's safetensors export")
    model.add_argument("--workdir", help="a swap run's workdir (its newest checkpoint, or --step)")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--dest", required=True, help="the destination clip: a video or a folder of frames")
    parser.add_argument("--dest-frames", default=None, help="START:STOP of --dest to merge (default all)")
    parser.add_argument("--source-ref", required=True, help="frames of the source person (the identity merged in)")
    parser.add_argument("--source-frames", default=None, help="START:STOP of --source-ref")
    parser.add_argument("--target-ref", required=True, help="other frames of the destination's person")
    parser.add_argument("--target-frames", default=None, help="START:STOP of --target-ref")
    parser.add_argument("--ref-count", type=int, default=25, help="evenly spaced reference frames per identity")
    parser.add_argument("--direction", default="b2a", choices=("a2b", "b2a"))
    parser.add_argument("--merge-option", action="append", default=[], metavar="NAME=VALUE",
                        help="mask, erode, blur, color, blend, face_type or batch, as train.merge takes them")
    parser.add_argument("--dilate", type=int, default=metrics.DEFAULT_DILATE, help="background margin in pixels")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling")
    parser.add_argument("--crf", type=int, default=18, help="libx264 quality of the encoded rows (train.merge's)")
    parser.add_argument("--no-encode", action="store_true", help="skip the rows scored after video encoding")
    parser.add_argument("--keep", default=None, help="write the merged video here (a new .mp4); default: none kept")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from data.faces import video_out
    from data.faces.dlib_models import FaceAnalyzer

    start = time.time()
    clips = {"dest": load_clip(args.dest, parse_range(args.dest_frames)),
             "source": load_clip(args.source_ref, parse_range(args.source_frames)),
             "target": load_clip(args.target_ref, parse_range(args.target_frames))}
    check_held_out(clips["dest"], clips["target"])
    options = parse_options(args.merge_option)
    analyzer = FaceAnalyzer()
    refs = {name: reference_frames(clips[name], args.ref_count) for name in ("source", "target")}
    centroids = {name: metrics.identity_centroid(frames, analyzer, upsample=args.upsample)
                 for name, frames in refs.items()}
    dest = clips["dest"].frames
    model_ref = {"export": args.export} if args.export else {"workdir": args.workdir, "step": args.step}
    merged = merge_clip(model_ref, clips["dest"], args.direction, options)
    rows = {"merge": merged.frames, "copy": dest}
    if not args.no_encode:
        fps = DEFAULT_FPS if clips["dest"].path.is_dir() else video_out.probe(clips["dest"].path).fps
        record = {"Sources": [str(clips["dest"].path)], "Frames": clips["dest"].numbers.tolist(), **merged.info}
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(args.keep) if args.keep else pathlib.Path(tmp) / "merged.mp4"
            rows["merge_encoded"] = through_codec(merged.frames, out, args.crf, fps, record)
            rows["copy_encoded"] = through_codec(dest, pathlib.Path(tmp) / "copy.mp4", args.crf, fps,
                                                 {"Sources": record["Sources"], "Note": "the destination, unchanged"})
    metric_start = time.time()
    table = compare(dest, rows, merged.masks, centroids, analyzer, args.dilate, args.upsample)

    def clip_info(clip: Clip) -> dict[str, Any]:
        return {"path": str(clip.path), "frames": f"{clip.numbers[0]}:{clip.numbers[-1] + 1}", "count": len(clip.numbers)}

    emit({"benchmark": "merge_quality", "machine": machine(), "model": model_ref, "direction": args.direction,
          "merge": merged.info, "dest": clip_info(clips["dest"]) | {"size": list(dest.shape[1:3])},
          "source_ref": clip_info(clips["source"]) | {"used": len(refs["source"])},
          "target_ref": clip_info(clips["target"]) | {"used": len(refs["target"])},
          "centroid_l2_source_target": float(np.linalg.norm(centroids["source"] - centroids["target"])),
          "protocol": PROTOCOL, "crf": None if args.no_encode else args.crf, "metrics": table,
          "seconds": {"metrics": round(time.time() - metric_start, 1), "total": round(time.time() - start, 1)}},
         args.json)


if __name__ == "__main__":
    entry(main)
