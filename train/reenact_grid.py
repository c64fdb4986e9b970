"""`python -m train.reenact_grid --workdir W --out FIG.png`: an animation grid of a reenact run on held-out people.

    python -m train.reenact_grid --workdir runs/reenact_synthetic --out grid.png [--step N] [--pairs 3]
        [--frames 8] [--mode relative|absolute]

What the metrics average away and a reader checks by eye: does X take Y's motion and keep X's face. For
each of the first `--pairs` cross-identity pairs of the run's evaluation clips (`train.metrics.reenact`'s:
each person's clip with the next person's, people taken in turn), `--frames` frames evenly spaced over Y's
clip, first and last included, in rows:
- `driving`: Y's frames;
- `truth` (synthetic people only): what the model should draw, X rendered with Y's expression and pose
  (absolute mode) or X's source-frame parameters moved by Y's change since Y's first frame (relative);
- `model`: X's first frame animated by Y's whole clip in `--mode`.
The first column is X's first frame, the source, in the `model` row (white above it). The PNG carries the
zoo's provenance (invisible watermark, notice, run, step, layout); frames of real people (GRID) are for
your own inspection: nothing made from a real person is to be published.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data import provenance
from train import cli
from train.metrics import reenact as reenact_metrics
from zoo.animate import MODES
from zoo.errors import ConfigError, DataError

LABEL_PX = 48  # width of the white strip left of each row that names it
PAD = 1


def frame_positions(length: int, frames: int) -> np.ndarray:
    """`frames` indices evenly spaced over a clip of `length` frames, first and last included (fewer if it is short)."""
    if frames < 2:
        raise ConfigError(f"--frames {frames}: need at least 2 (the first frame drives nothing)")
    return np.unique(np.round(np.linspace(0, length - 1, min(frames, length))).astype(int))


def pairs_of(clips: Sequence[reenact_metrics.Clip], count: int) -> list[tuple[int, int]]:
    """The first `count` (source, driving) clip positions: each clip with the next person's, people in turn."""
    labels = [c.label for c in clips]
    pairs = reenact_metrics.next_identity_pairs(labels)
    return [pairs[i] for i in reenact_metrics.turns(labels)[:count]]


def pair_rows(animate: reenact_metrics.Animate, x: reenact_metrics.Clip, y: reenact_metrics.Clip, frames: int,
              mode: str, synth: Any = None) -> dict[str, np.ndarray]:
    """Rows {name: uint8 [frames + 1, H, W, C]} for X animated by Y: column 0 the source in `model`, white elsewhere."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    source, driving = x.frames[0], y.frames
    if source.shape != driving.shape[1:]:
        raise DataError(f"source frame {list(source.shape)} and driving frames {list(driving.shape[1:])} differ in size")
    take = frame_positions(len(driving), frames)
    clips = {"driving": driving}
    if synth is not None:
        clips["truth"] = reenact_metrics.truth_frames(synth, x.label, x.video, y.video, mode)
    clips["model"] = reenact_metrics.animated(animate, source, driving, mode)
    white = np.full_like(source, 255)
    return {name: np.concatenate([(source if name == "model" else white)[None], clip[take]])
            for name, clip in clips.items()}


def labelled(rows: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """One HxWx3 uint8 image: each row's frames side by side after a white strip with the row's name."""
    out = []
    for name, frames in rows:
        frames = frames if frames.shape[-1] == 3 else np.repeat(frames, 3, axis=-1)
        tiles = np.pad(frames, ((0, 0), (0, PAD), (0, PAD), (0, 0)), constant_values=255)
        strip = Image.new("RGB", (LABEL_PX, tiles.shape[1]), "white")
        ImageDraw.Draw(strip).text((2, tiles.shape[1] // 2 - 6), name, fill="black", font=ImageFont.load_default())
        out.append(np.concatenate([np.asarray(strip), np.concatenate(list(tiles), axis=1)], axis=1))
    return np.concatenate(out, axis=0)


def figure(workdir: str, *, step: int | None = None, pairs: int = 3, frames: int = 8, mode: str = "relative"
           ) -> tuple[np.ndarray, dict[str, Any]]:
    """The grid image (uint8) for a reenact run's checkpoint (the newest by default) and its provenance fields."""
    import jax

    from train import runs
    from train.families import reenact

    setup, step, state = runs.load_run(workdir, step, family="reenact")
    model, state = reenact.run_model(setup), jax.device_get(state)
    animate = reenact.animate_callable(model, bool(setup.config.reenact.ema_decay), state)
    source = setup.eval_source
    clips = reenact_metrics.clips_of(source)
    inner = reenact_metrics.frame_source(source)
    synth = inner if reenact_metrics.is_synthetic(inner) else None
    chosen = pairs_of(clips, pairs)
    rows: list[tuple[str, np.ndarray]] = []
    for i, j in chosen:
        rows += list(pair_rows(animate, clips[i], clips[j], frames, mode, synth).items())
    meta = {"Kind": "reenactment animation grid", "Run": str(workdir), "Step": str(step), "Mode": mode,
            "Layout": "per pair: rows " + ", ".join(dict(rows)) + "; column 0 the source frame, then "
                      f"{frames} driving frames evenly spaced",
            "Pairs": "; ".join(f"video {clips[i].video} (label {clips[i].label}) by video {clips[j].video} "
                               f"(label {clips[j].label})" for i, j in chosen)}
    return labelled(rows), meta


def write(out: str | pathlib.Path, image: np.ndarray, meta: dict[str, Any]) -> pathlib.Path:
    """The grid as a PNG with the zoo's provenance: the model's frames make it synthetic, so it is watermarked."""
    out = pathlib.Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the grid is written as PNG; name a .png file")
    out.parent.mkdir(parents=True, exist_ok=True)
    return provenance.save_png(out, image, meta)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.reenact_grid", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a reenact run's directory")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--step", type=int, default=None, help="the checkpoint (default: the newest)")
    p.add_argument("--pairs", type=int, default=3, help="cross-identity pairs, one block of rows each")
    p.add_argument("--frames", type=int, default=8, help="driving frames per row, evenly spaced")
    p.add_argument("--mode", choices=MODES, default="relative", help="motion transfer (train.animate's --mode)")
    return cli.add_debug_flag(p)


def run(args: argparse.Namespace) -> str:
    """Draw and write the grid; return the line that says where and which pairs."""
    image, meta = figure(args.workdir, step=args.step, pairs=args.pairs, frames=args.frames, mode=args.mode)
    path = write(args.out, image, meta)
    return f"wrote {path} ({image.shape[1]}x{image.shape[0]} px): {meta['Pairs']}"


main = cli.argparse_main(parser, run)


if __name__ == "__main__":
    cli.prepare_process()
    sys.exit(main())
