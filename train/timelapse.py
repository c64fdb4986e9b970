"""A run's preview grids as one video: `python -m train.timelapse --workdir W [--output W/timelapse.mp4|.gif]`.

Reads `<workdir>/previews/<step>.png` in step order and writes an MP4 (H.264 through imageio-ffmpeg)
or a GIF (Pillow), each frame captioned with its step, so a run's progress can be judged at a glance
(DeepFaceLab users watch training this way). Like every file the zoo writes, the video says it is
synthetic: a container comment, and a JSON sidecar manifest (`<output>.json`). The video is written
under a temporary name and renamed when complete, so no half-written file ever has the final name.
"""
from __future__ import annotations

import contextlib
import pathlib
from typing import Iterator, Sequence

import numpy as np
from absl import flags
from PIL import Image, ImageDraw, ImageFont

from data import provenance
from train import cli
from zoo.errors import WorkdirError

FORMATS = (".mp4", ".gif")
CAPTION_PX = 14  # height of the white strip above each frame that carries "step N"
COMMENT = provenance.NOTICE.replace("image", "video") + " Timelapse of training previews."


def preview_files(workdir: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    """The run's previews as (step, path), in step order; WorkdirError when there are none to show."""
    if not workdir.is_dir():
        raise WorkdirError(f"workdir {workdir} does not exist or is not a directory; "
                           "pass the --workdir that `python -m train` wrote")
    folder = workdir / "previews"
    found = sorted((int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit()) if folder.is_dir() else []
    if not found:
        raise WorkdirError(f"no previews in {folder} (expected <step>.png files); "
                           "train with config.preview_every > 0 first")
    return found


def read_frame(path: pathlib.Path) -> np.ndarray:
    """One preview PNG as HxWx3 uint8 (grey grids become RGB, so every frame has one layout)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise WorkdirError(f"cannot read preview {path} ({error}); delete it or re-run training") from error


def caption(frame: np.ndarray, step: int) -> np.ndarray:
    """The frame under a white strip that reads `step N`: which point of training each frame shows."""
    strip = Image.new("RGB", (frame.shape[1], CAPTION_PX), "white")
    ImageDraw.Draw(strip).text((1, 0), f"step {step}", fill="black", font=ImageFont.load_default())
    return np.concatenate([np.asarray(strip), frame])


def pad_even(frame: np.ndarray) -> np.ndarray:
    """Pad the bottom and right edges with white to even sizes: H.264 in yuv420p needs them."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


def frames(files: Sequence[tuple[int, pathlib.Path]], with_caption: bool) -> Iterator[np.ndarray]:
    """Each preview as a video frame; WorkdirError naming the first file whose size differs from the first's."""
    size = None
    for step, path in files:
        frame = read_frame(path)
        if size is None:
            size = frame.shape
        elif frame.shape != size:
            raise WorkdirError(f"preview {path} is {frame.shape[1]}x{frame.shape[0]} but earlier previews are "
                               f"{size[1]}x{size[0]}; a timelapse needs one size (move the odd file away)")
        yield caption(frame, step) if with_caption else frame


def write_mp4(path: pathlib.Path, images: Iterator[np.ndarray], fps: float) -> int:
    """Write frames as H.264 MP4 with the synthetic notice as the container comment; return the frame count."""
    import imageio.v2 as imageio

    count = 0
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                quality=8, macro_block_size=1, output_params=["-metadata", f"comment={COMMENT}"])
    with contextlib.closing(writer):  # imageio's own `with` leaves ffmpeg running after an error
        for frame in images:
            writer.append_data(pad_even(frame))
            count += 1
    return count


def write_gif(path: pathlib.Path, images: Iterator[np.ndarray], fps: float) -> int:
    """Write frames as a looping GIF with the synthetic notice as its comment; return the frame count."""
    pictures = [Image.fromarray(frame) for frame in images]
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=round(1000 / fps), comment=COMMENT)
    return len(pictures)


def timelapse(workdir: str | pathlib.Path, output: str | pathlib.Path | None = None, fps: float = 10.0,
              with_caption: bool = True) -> pathlib.Path:
    """Write the run's previews as `output` (default <workdir>/timelapse.mp4) plus its manifest; return the path."""
    workdir = pathlib.Path(workdir)
    output = pathlib.Path(output) if output else workdir / "timelapse.mp4"
    if output.suffix.lower() not in FORMATS:
        raise WorkdirError(f"--output {output} must end in one of {', '.join(FORMATS)}")
    if not fps > 0:
        raise WorkdirError(f"--fps must be positive, got {fps}")
    files = preview_files(workdir)
    cli.check_writable(output.parent, "pass --output PATH to write the video elsewhere")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.partial{output.suffix}")  # ffmpeg picks the container by suffix
    write = write_gif if output.suffix.lower() == ".gif" else write_mp4
    try:
        count = write(tmp, frames(files, with_caption), fps)
        tmp.replace(output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    meta = provenance.read_provenance(files[0][1])
    provenance.write_manifest(output, {
        "Description": COMMENT, "Model": meta.get("Model", "unknown"), "Run": str(workdir),
        "Frames": count, "fps": fps, "Steps": [step for step, _ in files],
        "Sources": [str(path.relative_to(workdir)) for _, path in files]})
    return output


def main(argv: Sequence[str]) -> None:
    del argv
    f = cli.run_flags()
    print(timelapse(f.workdir, f.output, f.fps, f.caption), flush=True)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir whose previews/ to animate.")
    flags.DEFINE_string("output", None, "Video to write, .mp4 or .gif (default: <workdir>/timelapse.mp4).")
    flags.DEFINE_float("fps", 10.0, "Frames per second.")
    flags.DEFINE_bool("caption", True, "Caption every frame with its training step.")
    cli.run(main)
