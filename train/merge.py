"""`python -m train.merge --export F.safetensors | --workdir W --input DST --output OUT.mp4|DIR`: swap faces in footage.

    python -m train.merge --export runs/swap/export/swap_df-1000.safetensors \\
        --input dst.mp4 --output swapped.mp4 [--direction b2a] [--face-type whole_face] \\
        [--mask predicted|hull|intersect] [--erode PX] [--blur PX] [--color rct|lct|sot|none] \\
        [--blend alpha|seamless] [--extraction DIR] [--batch 16] [--crf 18]

For every frame of a video (or every image of a folder, in name order): the faces are found and aligned
at the model's resolution (`data.faces.extract.find_faces`, dlib), or read from an extraction's
index.jsonl (`--extraction`, the same alignment without detecting again); the faces of `--batch` frames
are swapped in one call of one compiled program (`zoo.face_swap.make_swap`, the faces padded to a
multiple of the batch so every call has one shape); each face is merged back (`data.faces.merge`) and
the frame written (`data.faces.video_out`): an MP4 with the input's frame count, rate, size and audio, or
a folder of PNGs. Frames with no face pass through unchanged and are counted. Every output carries
provenance (container title and comment, a `<output>.json` manifest with the source and model sha256s,
or PNG text chunks). The summary line gives frames/s for the whole run (decode, detect, swap including
its compilation, merge, encode).

Bad input (an export that is not a swap model, an extraction at another resolution or of other footage,
a truncated or unreadable video, footage without any face, an output folder that does not exist) is one
line naming the file and the fix, exit status 2, and leaves no output behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import logging
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from data.faces import merge as merging
from data.faces import video_out
from train import cli
from zoo import face_swap, pretrained
from zoo.errors import ConfigError, DataError, WeightsError

log = logging.getLogger(__name__)

DIRECTIONS = ("b2a", "a2b")
DEFAULT_FACE_TYPE = "whole_face"
LISTED = 20  # frames without a face named in the summary


@dataclasses.dataclass(frozen=True)
class SwapModel:
    """A loaded swap model: module and params, its registry name and config, and the export it came from."""

    module: Any
    params: Any
    name: str
    model_config: dict[str, Any]
    sha256: str
    origin: str
    face_type: str | None = None  # the aligned faces it trained on, as its export records (None: not recorded)


def load_swap_model(export: str | None = None, workdir: str | None = None, step: int | None = None) -> SwapModel:
    """The swap model in an export file, or in a workdir's newest (or `step`) checkpoint, exported on the way.

    A workdir goes through `train.export` into a temporary file, so both routes read the same format and
    the provenance names the sha256 of exactly the params that made the video.
    """
    if workdir is not None:
        from train.export import export_run

        with tempfile.TemporaryDirectory() as tmp:
            return _read_swap_model(export_run(workdir, step, pathlib.Path(tmp) / "model.safetensors"), workdir)
    if export is None:
        raise ConfigError("pass --export FILE.safetensors or --workdir W (a swap run)")
    return _read_swap_model(pathlib.Path(export), export)


def _read_swap_model(path: pathlib.Path, origin: str) -> SwapModel:
    loaded = pretrained.load(path)
    module, name = loaded.module, loaded.config["model"]
    if not hasattr(module, "swap") or not hasattr(module, "resolution"):
        raise WeightsError(f"{origin} holds model {name!r}, which is not a face-swap model; export a swap run "
                           "(configs/swap_*.py) with `python -m train.export` and pass that")
    step = loaded.config["metadata"].get("step")
    return SwapModel(module, loaded.params, name, loaded.config["model_config"], pretrained.sha256(path),
                     f"{origin} (step {step})" if step is not None else str(origin),
                     loaded.config["metadata"].get("face_type"))


def wanted_face_type(asked: str | None, model: SwapModel) -> str | None:
    """The face type to align with: --face-type, else the one the model's export records; a conflict is an error.

    Aligning new footage with another crop than the training faces' gives a silently misplaced swap.
    """
    if asked and model.face_type and asked != model.face_type:
        raise ConfigError(f"--face-type {asked}, but {model.origin} was trained on {model.face_type} faces (its "
                          f"export records it): drop --face-type, or merge with a model trained on {asked} faces")
    return asked or model.face_type


class Footage(NamedTuple):
    """The input: frames (read lazily), their names, rate, where its audio is, the files behind it."""

    kind: str  # "video" or "folder"
    frames: Iterator[np.ndarray]
    names: list[str]
    fps: float
    audio_from: pathlib.Path | None
    files: list[pathlib.Path]
    keys: list[tuple[str, int]]  # (source file name, frame) of each frame, to look faces up in an extraction


def open_footage(path: pathlib.Path, fps: float) -> Footage:
    """A video file (frames and audio) or a folder of images (name order, at `fps`); DataError for anything else."""
    from data import media

    if not path.exists():
        raise DataError(f"--input {path} does not exist; pass a video file or a folder of images")
    if path.is_file():
        info = video_out.probe(path)
        names = [f"{path.stem}_{i:06d}" for i in range(info.frames)]
        keys = [(path.name, i) for i in range(info.frames)]
        return Footage("video", video_out.read_frames(path, info.frames), names, info.fps,
                       path if info.has_audio else None, [path], keys)
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in media.IMAGE_EXTENSIONS
                    and not p.name.startswith("."))
    if not images:
        raise DataError(f"--input {path} holds no images ({' '.join(media.IMAGE_EXTENSIONS)}); pass a folder of "
                        "frames or a video file")
    return Footage("folder", _read_images(images), [p.stem for p in images], fps, None, images,
                   [(p.name, 0) for p in images])


def _read_images(paths: Sequence[pathlib.Path]) -> Iterator[np.ndarray]:
    from PIL import Image

    from data import media

    for path in paths:
        try:
            with Image.open(path) as image:
                yield media.to_rgb_array(image)
        except OSError as error:
            raise DataError(f"{path} is not a readable image ({error}); remove it from the folder") from error


class FaceRecord(NamedTuple):
    """A face rebuilt from an extraction record: what `data.faces.merge` needs."""

    matrix: np.ndarray
    image: np.ndarray
    mask: np.ndarray


def extraction_lookup(directory: pathlib.Path, footage: Footage, size: int,
                      face_type: str | None) -> tuple[Callable[[int, np.ndarray], list[Any]], str]:
    """A frame -> faces function over an extraction of this footage at the model's `size`, and its face type."""
    from data.faces import extract

    records = extract.read_index(directory)
    if not records:
        raise DataError(f"extraction {directory} holds no faces; extract {footage.files[0].name} again, or merge "
                        "without --extraction to detect the faces")
    sizes = sorted({int(r["size"]) for r in records})
    if sizes != [size]:
        raise DataError(f"extraction {directory} holds {'/'.join(map(str, sizes))} px faces but the model takes "
                        f"{size} px: extract again with --size {size}")
    types = sorted({r["face_type"] for r in records})
    if face_type is not None and types != [face_type]:
        raise ConfigError(f"extraction {directory} holds {', '.join(types)} faces but the model wants {face_type} "
                          f"faces (--face-type, or what its export records): extract again with --face-type "
                          f"{face_type}")
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rec in records:  # an image's record is found by its file name, a video frame's by name and number
        frame = int(rec["frame"]) if footage.kind == "video" else 0
        by_key.setdefault((pathlib.Path(rec["source"]).name, frame), []).append(rec)
    if not any(key in by_key for key in footage.keys):
        sources = sorted({pathlib.Path(r["source"]).name for r in records})
        raise DataError(f"extraction {directory} has no faces of {footage.files[0].name} (it was made from "
                        f"{', '.join(sources[:3])}{'...' if len(sources) > 3 else ''}); extract this input first")

    def lookup(index: int, frame: np.ndarray) -> list[Any]:
        found = sorted(by_key.get(footage.keys[index], []), key=lambda r: int(r["face"]))
        return [_face_from_record(directory, rec, frame) for rec in found]

    return lookup, types[0]


def _face_from_record(directory: pathlib.Path, rec: dict[str, Any], frame: np.ndarray) -> FaceRecord:
    """The aligned face cut from this frame by the record's matrix, and its hull mask (masks/ PNG, else redrawn)."""
    from PIL import Image

    from data.faces import align, masks

    matrix, size = np.asarray(rec["matrix"], np.float64), int(rec["size"])
    mask_file = directory / "masks" / rec["file"]
    if mask_file.is_file():
        with Image.open(mask_file) as image:
            mask = np.asarray(image.convert("L"))[..., None]
    else:
        mask = masks.hull_mask(np.asarray(rec["landmarks_aligned"]), size, rec["face_type"])
    return FaceRecord(matrix, align.warp_face(frame, matrix, size), mask)


def detector_lookup(face_type: str, size: int, all_faces: bool) -> Callable[[int, np.ndarray], list[Any]]:
    """A frame -> faces function that detects and aligns with dlib (the largest face, or all)."""
    from data.faces import extract
    from data.faces.dlib_models import FaceAnalyzer

    analyzer = FaceAnalyzer()
    return lambda index, frame: extract.find_faces(analyzer, frame, face_type, size, all_faces=all_faces)


@dataclasses.dataclass
class Stats:
    """What the summary reports: counts, frames without a face, and where the time went."""

    frames: int = 0
    faces: int = 0
    no_face: list[int] = dataclasses.field(default_factory=list)
    detect_s: float = 0.0
    swap_s: float = 0.0
    first_swap_s: float = 0.0
    merge_s: float = 0.0


class MergedFrame(NamedTuple):
    """A merged frame and the blend mask it was merged with, in frame coordinates."""

    frame: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # float32 [H, W] in [0, 1], the max over the frame's faces; 0 where the input's bytes are kept


def merged_frames_with_masks(footage: Footage, find: Callable[[int, np.ndarray], list[Any]], model: SwapModel,
                             direction: str, options: merging.MergeOptions, batch: int,
                             stats: Stats) -> Iterator[MergedFrame]:
    """Each input frame with its faces swapped and merged, and its blend mask; DataError at the end if none had one.

    The mask is what the background and temporal merge metrics (`train.metrics.merge`) score against; a
    frame without a face comes with an all-zero mask.
    """
    swap = face_swap.make_swap(model.module, chunk=batch)
    indexed = enumerate(footage.frames)
    while chunk := list(itertools.islice(indexed, batch)):
        start = time.perf_counter()
        found = [find(index, frame) for index, frame in chunk]
        detected = time.perf_counter()
        crops = [face.image for faces in found for face in faces]
        if crops:
            padded = np.concatenate([np.stack(crops), np.zeros((-len(crops) % batch, *crops[0].shape), np.uint8)])
            rgb, masks = swap(model.params, padded, direction)
            swapped = time.perf_counter()
            stats.first_swap_s = stats.first_swap_s or swapped - detected
            stats.swap_s += swapped - detected
        at = 0
        for (index, frame), faces in zip(chunk, found):
            began = time.perf_counter()
            if faces:
                frame, mask = merging.merge_frame(frame, faces, rgb[at:at + len(faces)], masks[at:at + len(faces)],
                                                  options)
                at += len(faces)
            else:
                mask = np.zeros(frame.shape[:2], np.float32)
                stats.no_face.append(index)
            stats.faces += len(faces)
            stats.frames += 1
            stats.merge_s += time.perf_counter() - began
            yield MergedFrame(frame, mask)
        stats.detect_s += detected - start
    if stats.frames and not stats.faces:
        where = footage.files[0] if footage.kind == "video" else footage.files[0].parent
        raise DataError(f"no face found in any of the {stats.frames} frames of {where}; pass footage that shows a "
                        "face (frontal, at least ~80 px across), or an --extraction of it")


def merged_frames(footage: Footage, find: Callable[[int, np.ndarray], list[Any]], model: SwapModel,
                  direction: str, options: merging.MergeOptions, batch: int, stats: Stats) -> Iterator[np.ndarray]:
    """The frames of `merged_frames_with_masks` alone: what the video or PNG writer takes."""
    for merged in merged_frames_with_masks(footage, find, model, direction, options, batch, stats):
        yield merged.frame


def provenance_record(args: argparse.Namespace, model: SwapModel, footage: Footage, options: merging.MergeOptions,
                      face_type: str) -> dict[str, Any]:
    """The manifest: sources and their sha256, the model and its export's sha256, the settings, the date."""
    return {
        "Sources": [{"file": str(p), "sha256": pretrained.sha256(p)} for p in footage.files],
        "Model": model.name,
        "Model sha256": model.sha256,
        "Model origin": model.origin,
        "Model config": model.model_config,
        "Merge": {"direction": args.direction, "face_type": face_type, "extraction": args.extraction,
                  "crf": args.crf, **dataclasses.asdict(options)},
        "Date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def merge(args: argparse.Namespace) -> tuple[video_out.Written, Stats, float]:
    """Run one merge from parsed arguments; returns what was written, the counts and the wall time."""
    output = pathlib.Path(args.output)
    to_video = output.suffix.lower() == ".mp4"
    if output.suffix and not to_video:
        raise ConfigError(f"--output {output}: write an .mp4 file or a folder of PNGs (a name without a suffix)")
    video_out.check_output(output, suffixes=(".mp4",) if to_video else ())
    if not to_video and output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} exists and is not an empty folder; pass a new folder name")
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch} must be >= 1")
    options = merging.MergeOptions(mask=args.mask, erode=args.erode, blur=args.blur, color=args.color,
                                   blend=args.blend)
    footage = open_footage(pathlib.Path(args.input), args.fps)
    model = load_swap_model(args.export, args.workdir, args.step)
    size = int(model.module.resolution)
    wanted = wanted_face_type(args.face_type, model)
    if args.extraction:
        find, face_type = extraction_lookup(pathlib.Path(args.extraction), footage, size, wanted)
    else:
        face_type = wanted or DEFAULT_FACE_TYPE
        find = detector_lookup(face_type, size, args.all_faces)
    record = provenance_record(args, model, footage, options, face_type)
    stats = Stats()
    frames = merged_frames(footage, find, model, args.direction, options, args.batch, stats)
    start = time.perf_counter()
    if to_video:
        title = f"Face swap of {pathlib.Path(args.input).name} by {model.name} (deepfake-zoo)"
        written = video_out.write_mp4(output, frames, fps=footage.fps, audio_from=footage.audio_from, crf=args.crf,
                                      title=title, manifest=lambda: {**record, "Faces": stats.faces,
                                                                     "Frames without a face": stats.no_face})
    else:
        chunks = {"Model": model.name, "Model sha256": model.sha256, "Sources": json.dumps(record["Sources"]),
                  "Merge": json.dumps(record["Merge"]), "Date": record["Date"]}
        written = video_out.write_pngs(output, zip(footage.names, frames), chunks)
    return written, stats, time.perf_counter() - start


def summary(written: video_out.Written, stats: Stats, seconds: float) -> str:
    """The lines printed at the end: counts, audio, frames/s and where the time went."""
    rate = stats.frames / seconds if seconds > 0 else float("nan")
    steady = stats.frames / (seconds - stats.first_swap_s) if seconds > stats.first_swap_s else float("nan")
    lines = [f"merged {stats.frames} frames -> {written.path} (audio: {written.audio}): {stats.faces} faces swapped, "
             f"{len(stats.no_face)} frames without a face passed through; {rate:.2f} frames/s ({steady:.2f} without "
             "the first swap call, which compiles)",
             f"time: {seconds:.1f} s total; detect/align {stats.detect_s:.1f} s, swap {stats.swap_s:.1f} s (first "
             f"call with compilation {stats.first_swap_s:.1f} s), merge {stats.merge_s:.1f} s, the rest decoding "
             "and encoding"]
    if stats.no_face:
        shown = ", ".join(map(str, stats.no_face[:LISTED])) + (" ..." if len(stats.no_face) > LISTED else "")
        lines.append(f"frames without a face: {shown}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.merge", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", help="a swap training run: its newest checkpoint (or --step)")
    model.add_argument("--export", help="a swap model's .safetensors export (python -m train.export)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step with --workdir (default: newest)")
    p.add_argument("--input", required=True, help="destination video, or a folder of frames")
    p.add_argument("--output", required=True, help="OUT.mp4, or a new folder for PNG frames")
    p.add_argument("--direction", choices=DIRECTIONS, default="b2a",
                   help="b2a: the input shows B (dst), rendered as A (src), DeepFaceLab's swap; a2b the reverse")
    p.add_argument("--face-type", default=None, help=f"face type the model was trained on (default: the one its "
                   f"export records, else the extraction's, else {DEFAULT_FACE_TYPE})")
    p.add_argument("--mask", choices=merging.MASK_MODES, default="intersect",
                   help="blend mask: the model's, the landmark hull, or their product")
    p.add_argument("--erode", type=int, default=0, help="erode the mask (negative: dilate), DFL units -400..400: "
                   "px at 4x the model resolution")
    p.add_argument("--blur", type=int, default=0, help="blur the mask edge, DFL units 0..400")
    p.add_argument("--color", choices=merging.COLOR_MODES, default="rct", help="colour transfer to the destination")
    p.add_argument("--blend", choices=merging.BLEND_MODES, default="alpha", help="alpha, or Poisson (seamless) clone")
    p.add_argument("--extraction", default=None, help="reuse this extraction's alignment instead of detecting")
    p.add_argument("--all-faces", action="store_true", help="swap every detected face, not only the largest")
    p.add_argument("--batch", type=int, default=16, help="frames whose faces are swapped in one call")
    p.add_argument("--crf", type=int, default=18, help="libx264 quality, 0 (lossless) .. 51; 18 looks lossless")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of an MP4 made from a folder of frames")
    return cli.add_debug_flag(p)


def run(args: argparse.Namespace) -> str:
    """Merge and return the summary line."""
    return summary(*merge(args))


main = cli.argparse_main(parser, run)


if __name__ == "__main__":
    cli.prepare_process()
    sys.exit(main())
