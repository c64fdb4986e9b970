"""Merge quality of a swap model on a held-out destination clip, beside the copy baseline (issue 13, item 5).

    python -m benchmarks merge_quality --export runs/swap_df_faces/export/MODEL-STEP.safetensors \\
        --dest ../shared/data/grid/bbaf2n.mpg --dest-frames 50:75 \\
        --target-ref ../shared/data/grid/bbaf2n.mpg --target-frames 0:50 \\
        --source-ref ../shared/data/grid/lbax4n.mpg \\
        [--direction b2a] [--merge-option color=rct --merge-option blend=seamless] [--json merge_quality.json]

(--workdir W instead of --export merges with W's newest checkpoint, --step N with another.)

The destination clip (--dest, a video or a folder of frames, cut to --dest-frames START:STOP) is
merged by `train.merge` with the model's --direction swap (b2a, DeepFaceLab's: destination faces
rendered as the source person). Every metric of `train.metrics.merge` is then computed twice
through the same function: for the merged frames (before any video encoding) and for the copy
baseline, the destination unchanged with the same blend masks. The source and target identities
are the mean dlib embeddings of --ref-count evenly spaced frames of --source-ref and --target-ref
(the destination's own person); the target reference must not overlap the destination clip, which
the benchmark refuses when both come from one file.

The README's run (done with this module): two GRID speakers, the source lbax4n and the destination
bbaf2n, each extracted with `python -m data.faces extract` from frames the merge never sees (for the
destination, its first 50 frames: extract a copy cut with `ffmpeg -i bbaf2n.mpg -frames:v 50 -c copy`,
written outside the repository), DF-UD at 128 px trained on the two aligned sets, then the command
above on the held-out frames 50-74 with the run's export. Nothing made from these people's faces is
committed: the JSON carries numbers only, and a merged video is kept only where --keep names a folder.

JSON: `metrics` maps each metric to {"merge": x, "copy": y}; non-finite values (background PSNR of an
untouched background is inf) are written as JSON's Infinity/NaN extensions, which Python reads back.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time
from typing import Any, NamedTuple

import numpy as np

from benchmarks.common import emit, machine
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


class Merged(NamedTuple):
    """A merged clip as `train.merge` produced it, before any video encoding."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # float32 [T, H, W]: the blend mask each frame was merged with (0 where untouched)
    info: dict[str, Any]  # what the merge reports: options, faces found, frames/s, ...


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


def load_clip(path: str | os.PathLike[str], frames: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """The frames (uint8 [T, H, W, 3]) of a video or a folder of images, cut to `frames`, with their numbers."""
    from data import media

    path = pathlib.Path(path)
    if path.is_dir():
        source = media.FolderSource(path, strict=True)
        numbers = np.arange(len(source))[frames]
        clip = np.stack([source[int(i)]["image"] for i in numbers]) if len(numbers) else np.zeros((0, 1, 1, 3), np.uint8)
    else:
        source = media.VideoSource(path, strict=True, max_frames=frames.stop)
        numbers = np.arange(len(source))[frames]
        clip = source.images[numbers]
    if len(numbers) == 0:
        raise DataError(f"{path}: no frames in range {frames.start}:{frames.stop} (it has {len(source)}); pass another range")
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise DataError(f"{path}: frames must be RGB; got shape {list(clip.shape[1:])}")
    return np.ascontiguousarray(clip), numbers


def reference_frames(clip: np.ndarray, count: int) -> np.ndarray:
    """`count` evenly spaced frames of a clip (all when it is shorter)."""
    if count < 1:
        raise ConfigError(f"--ref-count {count}: pass at least 1")
    index = np.unique(np.linspace(0, len(clip) - 1, min(count, len(clip))).round().astype(int))
    return clip[index]


def check_held_out(dest: tuple[str, slice, np.ndarray], target: tuple[str, slice, np.ndarray]) -> None:
    """Refuse a target reference that shares frames with the destination clip (same file, overlapping numbers)."""
    (dest_path, _, dest_numbers), (target_path, _, target_numbers) = dest, target
    if pathlib.Path(dest_path).resolve() != pathlib.Path(target_path).resolve():
        return
    shared = np.intersect1d(dest_numbers, target_numbers)
    if len(shared):
        raise ConfigError(
            f"--target-ref {target_path} shares {len(shared)} frames ({shared[0]}..{shared[-1]}) with the destination "
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


def merge_clip(model: dict[str, Any], frames: np.ndarray, direction: str, options: dict[str, Any],
               out_dir: pathlib.Path) -> Merged:
    """The one call into `train.merge`: the clip merged with the model, its blend masks and the merge's report.

    out_dir is where the merge may write files (its video); a temporary folder unless --keep names one.
    """
    try:
        from train import merge
    except ImportError as e:
        raise ImportError(f"benchmarks.merge_quality needs train.merge, the merge verb of issue 13 ({e})") from e
    raise NotImplementedError(f"train.merge has no frame-level entry point this benchmark knows yet ({merge.__name__})")


def compare(dest: np.ndarray, merged: Merged, source_centroid: np.ndarray, target_centroid: np.ndarray,
            analyzer: Any, dilate: int, upsample: int) -> dict[str, dict[str, float]]:
    """Every metric for the merge and for the copy baseline (the destination unchanged, same masks)."""
    dest_faces = metrics.analyze_frames(dest, analyzer, upsample=upsample)
    rows = {}
    for name, frames in (("merge", merged.frames), ("copy", dest)):
        rows[name] = metrics.merge_metrics(dest, frames, merged.masks, source_centroid, target_centroid, analyzer,
                                           dilate=dilate, upsample=upsample, dest_faces=dest_faces)
    return {key: {name: rows[name][key] for name in rows} for key in rows["merge"]}


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
                        help="passed to the merge (mask, erode, blur, color, blend); repeatable")
    parser.add_argument("--dilate", type=int, default=metrics.DEFAULT_DILATE, help="background margin in pixels")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling")
    parser.add_argument("--keep", default=None, help="folder to keep the merged video in (default: none kept)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from data.faces.dlib_models import FaceAnalyzer

    start = time.time()
    ranges = {"dest": parse_range(args.dest_frames), "source": parse_range(args.source_frames),
              "target": parse_range(args.target_frames)}
    paths = {"dest": args.dest, "source": args.source_ref, "target": args.target_ref}
    clips = {name: load_clip(paths[name], ranges[name]) for name in paths}
    check_held_out(*((paths[n], ranges[n], clips[n][1]) for n in ("dest", "target")))
    options = parse_options(args.merge_option)
    analyzer = FaceAnalyzer()
    refs = {name: reference_frames(clips[name][0], args.ref_count) for name in ("source", "target")}
    centroids = {name: metrics.identity_centroid(frames, analyzer, upsample=args.upsample)
                 for name, frames in refs.items()}
    dest = clips["dest"][0]
    model_ref = {"export": args.export} if args.export else {"workdir": args.workdir, "step": args.step}
    with tempfile.TemporaryDirectory() as tmp:
        merge_start = time.time()
        merged = merge_clip(model_ref, dest, args.direction, options, pathlib.Path(args.keep or tmp))
        merge_seconds = time.time() - merge_start
    metric_start = time.time()
    table = compare(dest, merged, centroids["source"], centroids["target"], analyzer, args.dilate, args.upsample)

    def clip_info(name: str) -> dict[str, Any]:
        numbers = clips[name][1]
        return {"path": str(paths[name]), "frames": f"{numbers[0]}:{numbers[-1] + 1}", "count": len(numbers)}

    emit({"benchmark": "merge_quality", "machine": machine(), "model": model_ref, "direction": args.direction,
          "merge_options": options, "merge": merged.info,
          "dest": clip_info("dest") | {"size": list(dest.shape[1:3])},
          "source_ref": clip_info("source") | {"used": len(refs["source"])},
          "target_ref": clip_info("target") | {"used": len(refs["target"])},
          "centroid_l2_source_target": float(np.linalg.norm(centroids["source"] - centroids["target"])),
          "protocol": PROTOCOL, "metrics": table,
          "seconds": {"merge": round(merge_seconds, 1), "merge_frames_per_s": round(len(dest) / merge_seconds, 2),
                      "metrics": round(time.time() - metric_start, 1), "total": round(time.time() - start, 1)}},
         args.json)


if __name__ == "__main__":
    main()
