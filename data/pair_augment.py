"""FOMM's video augmentation on (source, driving) frame pairs: horizontal flip and colour jitter.

The First Order Motion Model augments each sampled clip (vox-256.yaml's `augmentation_params`: flip_param
horizontal_flip and time_flip, jitter_param brightness, contrast, saturation and hue 0.1), each drawn once
per clip, so both frames of a pair change alike and the motion between them is kept: a mirror of both,
one recolouring of both. Its time flip (which frame is the source) needs nothing here: `data.video_pairs`
already hashes the two frame positions in either order. With few people (GRID's four training speakers)
the mirror and the colours are what might stop the generator from learning those faces instead of the warp.

The jitter follows torchvision's ColorJitter on float images in [0, 1], clamped after each op: brightness
x * f, contrast f * x + (1 - f) * mean(grey(x)), saturation f * x + (1 - f) * grey(x) (grey = ITU-R 601
luma, 0.299 R + 0.587 G + 0.114 B), f ~ U[1 - s, 1 + s] each, and hue rotated by U[-h, h] turns in HSV,
the four in a random order. Grey frames (C = 1) get brightness and contrast only.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from data import augment
from zoo.errors import ConfigError, DataError

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def grey(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of float RGB [..., 3], keeping a channel axis [..., 1]."""
    return (x @ LUMA)[..., None]


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] [..., 3] to HSV [..., 3], hue in turns [0, 1) (colorsys's convention, vectorised)."""
    r, g, b = np.moveaxis(x, -1, 0)
    hi, lo = x.max(-1), x.min(-1)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    rc, gc, bc = (hi - r) / safe, (hi - g) / safe, (hi - b) / safe
    h = np.where(r == hi, bc - gc, np.where(g == hi, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(span > 0, (h / 6.0) % 1.0, 0.0)
    s = np.where(hi > 0, span / np.where(hi > 0, hi, 1.0), 0.0)
    return np.stack([h, s, hi], axis=-1).astype(x.dtype)


def hsv_to_rgb(x: np.ndarray) -> np.ndarray:
    """HSV [..., 3] (hue in turns) back to float RGB [..., 3]."""
    h, s, v = np.moveaxis(x, -1, 0)
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    sector = i.astype(np.int64) % 6
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(x.dtype)


def jitter(frames: np.ndarray, factors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Float frames [..., H, W, C] in [0, 1] recoloured by (brightness, contrast, saturation, hue) in `order`.

    The contrast mean is each frame's own (torchvision's, per image); one set of factors serves every frame.
    """
    x = frames
    for op in order:
        if op == 0:
            x = x * factors[0]
        elif op == 1:
            luma = grey(x) if x.shape[-1] == 3 else x
            x = factors[1] * x + (1.0 - factors[1]) * luma.mean(axis=(-3, -2, -1), keepdims=True)
        elif x.shape[-1] != 3:
            continue
        elif op == 2:
            x = factors[2] * x + (1.0 - factors[2]) * grey(x)
        else:
            hsv = rgb_to_hsv(x)
            hsv[..., 0] = (hsv[..., 0] + factors[3]) % 1.0
            x = hsv_to_rgb(hsv)
        x = np.clip(x, 0.0, 1.0)
    return x


@dataclasses.dataclass(frozen=True)
class PairAugment(grain.transforms.RandomMap):
    """The reenact family's training augmentation of one video_pairs example (FOMM's, see the module doc).

    Every call draws the same numbers from `rng` whatever is switched on, so a grain pipeline (which
    seeds it per example from the run's seed and position) reproduces each example exactly on resume.
    `jitter` holds the brightness, contrast, saturation and hue strengths; () or zeros switch it off.
    """

    horizontal_flip: bool = True
    jitter: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1)

    def __post_init__(self) -> None:
        strengths = tuple(float(v) for v in self.jitter)
        if strengths and (len(strengths) != 4 or min(strengths) < 0 or max(strengths[:3]) >= 1 or strengths[3] > 0.5):
            raise ConfigError(f"reenact.jitter={self.jitter}: give (brightness, contrast, saturation, hue) with the "
                              "first three in [0, 1) and hue in [0, 0.5] (FOMM: 0.1 each), or () for none")
        object.__setattr__(self, "jitter", strengths)

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        """The example with both frames mirrored and recoloured alike; every other field passes through."""
        u_mirror = rng.random()
        draws, order = rng.uniform(-1.0, 1.0, 4), rng.permutation(4)
        source, driving = example["source_image"], example["driving_image"]
        if source.shape != driving.shape or source.dtype != np.uint8 or source.ndim != 3:
            raise DataError(f"PairAugment needs two uint8 HxWxC frames of one size; got {source.dtype} "
                            f"{list(source.shape)} and {driving.dtype} {list(driving.shape)}")
        pair = np.stack([source, driving])
        if self.horizontal_flip and u_mirror < 0.5:
            pair = pair[:, :, ::-1]
        if any(self.jitter):
            strengths = np.asarray(self.jitter, np.float32)
            factors = np.concatenate([1.0 + strengths[:3] * draws[:3], strengths[3:] * draws[3:]]).astype(np.float32)
            pair = augment.from_unit_float(jitter(augment.to_unit_float(pair), factors, order), pair)
        return {**example, "source_image": np.ascontiguousarray(pair[0]),
                "driving_image": np.ascontiguousarray(pair[1])}
