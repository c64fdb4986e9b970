"""`python -m train.animate --export F --source IMAGE --driving VIDEO --output OUT.mp4`: animate a face by a video.

    python -m train.animate --export runs/reenact/export/fomm-1000.safetensors --source face.png \\
        --driving talk.mp4 --output animated.mp4 [--mode relative|absolute] [--adapt-scale] \\
        [--find-best-frame] [--size N] [--batch 16] [--crf 18] [--no-audio]

The source image and every driving frame are fitted to the model's image size (centre crop to its
aspect ratio, then a bicubic resize, as FOMM's demo resizes whole frames): the model was trained on
face crops, so pass a source and a driving video framed like its training data (a face filling most
of the frame; crop beforehand, as FOMM's `crop-video.py` does). `zoo.animate.animate_clip` animates
the source, in batches of `--batch` frames through one compiled program:

- `--mode relative` (default; FOMM's and TPSMM's recommendation): the driving clip's motion since its
  first frame moves the source's own keypoints, so the first driving frame should show the pose the
  source has; `--adapt-scale` scales that motion by the keypoint hulls' sizes. `--mode absolute`: the
  driving keypoints as they are (the source takes the driving face's shape).
- `--find-best-frame` (FOMM's demo): the driving frame whose face shape and pose are nearest the
  source's (68 dlib landmarks, centred and scaled by their hull's size, `zoo.animate.find_best_frame`)
  becomes the anchor, and the clip is animated forwards and backwards from it. Without the faces extra
  (dlib), the model's own keypoints stand in, with a warning. dlib reads each frame fitted at
  max(model size, 256) px; a frame where its detector finds no face gives landmarks for the whole frame.

The output is an MP4 with the driving video's frame count, rate and audio (`--no-audio` drops it),
`--size N` px high (bicubic from the model's size; default the model's size but at least 256 px), and
carries provenance as every video the zoo writes (`data.faces.video_out.write_mp4`): the invisible
watermark in every frame, container title and comment, and an `<output>.json` manifest naming both
inputs and the model with their sha256s. Why at least 256 px: the watermark holds one copy of its
64 bits per 64x64 px (data/watermark.py), and through H.264 at crf 18 a 32 px animation carried no
mark, a 64 px one was read in 5 of 9 frames (13-15 of 64 bits wrong; 14 is the limit) and a 128 px
one in 9 of 9 (6-8 wrong). A smaller --size is written with a warning.

Bad input (a missing or unreadable source image or driving video, an export that is not a
reenactment model, an output that is not an .mp4 or in a missing folder) is one line naming the file
and the fix, exit status 2, and leaves no output behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import pathlib
import sys
import time
from typing import Any

import numpy as np

from data.faces import video_out
from train import cli
from zoo import animate as animation
from zoo import pretrained
from zoo.errors import ConfigError, DataError, WeightsError

log = logging.getLogger(__name__)

LANDMARK_SIDE = 256  # dlib's 68-point model reads faces of roughly this size and up
DEFAULT_MIN_SIZE = 256  # the default output height at least: the watermark survives H.264 (module docstring)
SAFE_MARK_SIZE = 128  # below this height the mark may not survive H.264


@dataclasses.dataclass(frozen=True)
class ReenactModel:
    """A loaded reenactment model: module and variables, its registry name and config, and the export it came from."""

    module: Any
    variables: dict[str, Any]
    name: str
    model_config: dict[str, Any]
    sha256: str
    origin: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.module.image_shape)  # type: ignore[return-value]


def load_reenact_model(export: str) -> ReenactModel:
    """The reenactment model in an export file (or a catalogue name); WeightsError naming the fix for anything else."""
    from zoo.reenact import Reenactor

    path = pathlib.Path(export)
    if not path.is_file() and export not in pretrained.REGISTRY:
        raise WeightsError(f"--export {export} does not exist; pass a reenactment model's .safetensors export "
                           "(python -m train.export --workdir RUN of a configs/reenact_*.py run)")
    loaded = pretrained.load(export)
    name = loaded.config["model"]
    if not isinstance(loaded.module, Reenactor):
        raise WeightsError(f"{export} holds model {name!r}, which is not a reenactment model (fomm or tpsmm); export "
                           "a reenactment run (configs/reenact_*.py) with `python -m train.export` and pass that")
    file = path if path.is_file() else pretrained.fetch(export, pretrained.REGISTRY[export])
    step = loaded.config["metadata"].get("step")
    return ReenactModel(loaded.module, loaded.variables, name, loaded.config["model_config"],
                        pretrained.sha256(file), f"{export} (step {step})" if step is not None else str(export))


def fit(image: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """An RGB uint8 image centre-cropped to width/height's aspect and resized (bicubic) -> uint8 [height, width, C]."""
    from PIL import Image

    h, w = image.shape[:2]
    if w * height > h * width:  # too wide: keep the height
        crop_w, crop_h = max(1, round(h * width / height)), h
    else:
        crop_w, crop_h = w, max(1, round(w * height / width))
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    picture = Image.fromarray(image[top:top + crop_h, left:left + crop_w])
    if (crop_w, crop_h) != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    if channels == 1:
        return np.asarray(picture.convert("L"))[..., None]
    return np.asarray(picture.convert("RGB"))


def read_source(path: pathlib.Path) -> np.ndarray:
    """The source image as RGB uint8 [H, W, 3]; DataError naming the file and the fix."""
    from PIL import Image

    from data import media

    if not path.exists():
        raise DataError(f"--source {path} does not exist; pass an image file ({' '.join(media.IMAGE_EXTENSIONS)})")
    if not path.is_file():
        raise DataError(f"--source {path} is not a file; pass one image ({' '.join(media.IMAGE_EXTENSIONS)})")
    try:
        with Image.open(path) as image:
            return media.to_rgb_array(image)
    except OSError as error:
        raise DataError(f"--source {path} is not a readable image ({error}); pass a PNG or JPEG of a face") from error


@dataclasses.dataclass
class Driving:
    """The driving clip fitted to the model, what the video holds, and (with --find-best-frame) dlib's landmarks."""

    frames: np.ndarray  # uint8 [T, H, W, C] at the model's size
    info: video_out.VideoInfo
    landmarks: np.ndarray | None = None  # float32 [T, 68, 2]


def read_driving(path: pathlib.Path, shape: tuple[int, int, int], analyzer: Any = None) -> Driving:
    """Every frame of the driving video fitted to `shape` (and its landmarks when given dlib's analyzer)."""
    if not path.exists():
        raise DataError(f"--driving {path} does not exist; pass a video file (.mp4 .mpg .avi ...)")
    if not path.is_file():
        raise DataError(f"--driving {path} is not a file; pass a video file (.mp4 .mpg .avi ...)")
    try:
        info = video_out.probe(path)
    except DataError as error:
        said = str(error).split("; ")[0]
        raise DataError(f"--driving {path} cannot be read as a video ({said}); pass a video file (.mp4 .mpg .avi "
                        "...) of the face that drives the animation") from error
    if info.frames < 1:
        raise DataError(f"--driving {path} holds no video frames; pass a video of the face that drives the animation")
    height, width, channels = shape
    frames, landmarks = [], []
    for frame in video_out.read_frames(path, info.frames):
        frames.append(fit(frame, height, width, channels))
        if analyzer is not None:
            landmarks.append(face_landmarks(analyzer, frame, height, width))
    return Driving(np.stack(frames), info, np.stack(landmarks) if analyzer is not None else None)


def face_landmarks(analyzer: Any, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """dlib's 68 landmarks [68, 2] of the largest face in the image fitted to the model's aspect at >= 256 px.

    With no face detected, the whole frame is the face box (the model's frames are face crops).
    """
    scale = max(1.0, LANDMARK_SIDE / min(height, width))
    fitted = np.ascontiguousarray(fit(image, round(height * scale), round(width * scale)))
    return analyzer.landmarks(fitted, analyzer.largest_face(fitted))


def landmark_analyzer() -> Any:
    """dlib's FaceAnalyzer for --find-best-frame, or None (with a warning) when the faces extra is missing."""
    from data.faces import dlib_models

    try:
        return dlib_models.FaceAnalyzer()
    except ImportError as error:
        log.warning("--find-best-frame: dlib is not available (%s); the model's own keypoints pick the frame "
                    "instead of face landmarks", error)
        return None


@dataclasses.dataclass
class Result:
    """What the summary reports."""

    frames: int = 0
    best_frame: int | None = None
    best_frame_by: str | None = None
    animate_s: float = 0.0


def best_frame(model: ReenactModel, source: np.ndarray, driving: Driving, analyzer: Any, batch: int,
               source_image: np.ndarray) -> tuple[int, str]:
    """The driving frame to anchor on, and by what it was chosen ("dlib landmarks" or "model keypoints")."""
    if analyzer is not None and driving.landmarks is not None:
        height, width, _ = model.shape
        found = face_landmarks(analyzer, source_image, height, width)
        return animation.find_best_frame(found, driving.landmarks), "dlib 68 landmarks"
    kp_source = animation.clip_keypoints(model.module, model.variables, source[None], batch)[0]
    kp_driving = animation.clip_keypoints(model.module, model.variables, driving.frames, batch)
    return animation.find_best_frame(kp_source, kp_driving), "the model's keypoints"


def animated_frames(model: ReenactModel, source: np.ndarray, driving: np.ndarray, args: argparse.Namespace,
                    anchor: int | None) -> np.ndarray:
    """The source animated by the whole clip; from `anchor` forwards and backwards when given (FOMM's demo)."""
    def run(clip: np.ndarray) -> np.ndarray:
        return animation.animate_clip(model.module, model.variables, source, clip, mode=args.mode,
                                      adapt_scale=args.adapt_scale, batch_size=args.batch)

    if anchor is None:
        return run(driving)
    forward = run(driving[anchor:])
    backward = run(driving[:anchor + 1][::-1])
    return np.concatenate([backward[::-1], forward[1:]])


def output_frames(frames: np.ndarray, size: int | None):
    """The frames as RGB at `size` px high (width by the aspect ratio), bicubic; unchanged without a size."""
    from PIL import Image

    for frame in frames:
        if frame.shape[-1] == 1:
            frame = np.repeat(frame, 3, axis=-1)
        if size and size != frame.shape[0]:
            width = max(1, round(size * frame.shape[1] / frame.shape[0]))
            frame = np.asarray(Image.fromarray(frame).resize((width, size), Image.Resampling.BICUBIC))
        yield frame


def provenance_record(args: argparse.Namespace, model: ReenactModel, result: Result, size: int) -> dict[str, Any]:
    """The manifest: both inputs and their sha256, the model and its export's sha256, the settings, the date."""
    return {
        "Sources": [{"file": str(p), "sha256": pretrained.sha256(p), "role": role}
                    for p, role in ((args.source, "source image"), (args.driving, "driving video"))],
        "Model": model.name,
        "Model sha256": model.sha256,
        "Model origin": model.origin,
        "Model config": model.model_config,
        "Animate": {"mode": args.mode, "adapt_scale": args.adapt_scale, "find_best_frame": args.find_best_frame,
                    "best_frame": result.best_frame, "best_frame_by": result.best_frame_by, "size": size,
                    "batch": args.batch, "crf": args.crf},
        "Date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def animate(args: argparse.Namespace) -> tuple[video_out.Written, Result, float]:
    """Run one animation from parsed arguments; returns what was written, the result and the wall time."""
    output = pathlib.Path(args.output)
    if output.suffix.lower() != ".mp4":
        raise ConfigError(f"--output {output}: write an .mp4 file (name it OUT.mp4)")
    video_out.check_output(output)
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch} must be >= 1")
    if args.size is not None and args.size < 2:
        raise ConfigError(f"--size {args.size} must be >= 2 (pixels of the output's height)")
    args.source, args.driving = pathlib.Path(args.source), pathlib.Path(args.driving)
    source_image = read_source(args.source)
    model = load_reenact_model(args.export)
    height, width, channels = model.shape
    source = fit(source_image, height, width, channels)
    analyzer = landmark_analyzer() if args.find_best_frame else None
    driving = read_driving(args.driving, model.shape, analyzer)
    result = Result(frames=len(driving.frames))
    start = time.perf_counter()
    if args.find_best_frame:
        result.best_frame, result.best_frame_by = best_frame(model, source, driving, analyzer, args.batch, source_image)
    frames = animated_frames(model, source, driving.frames, args, result.best_frame)
    result.animate_s = time.perf_counter() - start
    size = args.size or max(height, DEFAULT_MIN_SIZE)
    if size < SAFE_MARK_SIZE:
        log.warning("--size %d: below %d px the invisible watermark may not survive H.264; the container metadata "
                    "and the manifest still say what the video is", size, SAFE_MARK_SIZE)
    record = provenance_record(args, model, result, size)
    title = f"Reenactment of {args.source.name} driven by {args.driving.name} by {model.name} (deepfake-zoo)"
    audio = args.driving if driving.info.has_audio and not args.no_audio else None
    written = video_out.write_mp4(output, output_frames(frames, size), fps=driving.info.fps or 25.0,
                                  audio_from=audio, crf=args.crf, title=title, manifest=record)
    return written, result, time.perf_counter() - start


def summary(written: video_out.Written, result: Result, seconds: float, args: argparse.Namespace) -> str:
    """The line printed at the end: what was written, how, and how fast."""
    how = f"mode {args.mode}" + (", adapt-scale" if args.adapt_scale else "")
    if result.best_frame is not None:
        how += f", from driving frame {result.best_frame} (best by {result.best_frame_by}) forwards and backwards"
    rate = result.frames / result.animate_s if result.animate_s > 0 else float("nan")
    return (f"animated {result.frames} frames -> {written.path} (audio: {written.audio}); {how}; "
            f"{rate:.2f} frames/s animating (compilation included), {seconds:.1f} s with encoding")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.animate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, help="a reenactment model's .safetensors export (python -m train.export)")
    p.add_argument("--source", required=True, help="image of the face to animate")
    p.add_argument("--driving", required=True, help="video whose motion drives the face")
    p.add_argument("--output", required=True, help="OUT.mp4")
    p.add_argument("--mode", choices=animation.MODES, default="relative",
                   help="relative: the driving motion since its first frame moves the source's keypoints (FOMM); "
                   "absolute: the driving keypoints themselves")
    p.add_argument("--adapt-scale", action="store_true", help="scale relative motion by the keypoint hull areas")
    p.add_argument("--find-best-frame", action="store_true",
                   help="anchor on the driving frame nearest the source's pose (dlib landmarks), animate both ways")
    p.add_argument("--size", type=int, default=None, help=f"output height in px (default: the model's image size, "
                   f"at least {DEFAULT_MIN_SIZE} so the watermark survives H.264)")
    p.add_argument("--batch", type=int, default=16, help="frames animated in one call of the compiled program")
    p.add_argument("--crf", type=int, default=18, help="libx264 quality, 0 (lossless) .. 51; 18 looks lossless")
    p.add_argument("--no-audio", action="store_true", help="leave out the driving video's audio")
    return cli.add_debug_flag(p)


def run(args: argparse.Namespace) -> str:
    """Animate and return the summary line."""
    return summary(*animate(args), args)


main = cli.argparse_main(parser, run)


if __name__ == "__main__":
    cli.prepare_process()
    sys.exit(main())
