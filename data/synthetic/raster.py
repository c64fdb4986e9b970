"""Anti-aliased coverage of implicit shapes and the pose frame: the pixel-level tools faces and masks are drawn with.

Every shape is a signed distance of the pixel centre whose edge is smoothstepped over one pixel, so a
face looks the same at any size; the frame maps pixel centres into the posed face's own coordinates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from data.synthetic.params import Pose

_HEAD_Y = -0.08  # the head centre sits this far above the image centre, leaving room for neck and shirt


def rgb(r: float, g: float, b: float) -> np.ndarray:
    """A fixed colour shaped [3,1,1,1] to broadcast over planar images."""
    return np.asarray([r, g, b], np.float32).reshape(3, 1, 1, 1)


def column(values: np.ndarray) -> np.ndarray:
    """Per-image values as [N,1,1] float32 so they broadcast over [N,H,W] pixel arrays."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def edge_cover(inside: np.ndarray, inv_aa: np.ndarray) -> np.ndarray:
    """Coverage of pixels whose centres lie `inside` units within an edge: smoothstep across one pixel."""
    t = inside * inv_aa
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    t2 = t * t
    t *= -2.0
    t += 3.0
    t *= t2
    return t


def band(v: np.ndarray, lo: Any, hi: Any, inv_aa: np.ndarray) -> np.ndarray:
    """Coverage of lo < v < hi (lo <= hi): a band that keeps its area however thin, so strokes survive any size."""
    return edge_cover(hi - v, inv_aa) - edge_cover(lo - v, inv_aa)


def ellipse(x: np.ndarray, y: np.ndarray, rx: Any, ry: Any) -> np.ndarray:
    """Approximate signed distance inside an axis-aligned ellipse (f/|grad f|): exact enough at the edge."""
    ax = x / rx
    ay = y / ry
    k0 = ax * ax
    k0 += ay * ay
    ax /= rx
    ay /= ry
    ax *= ax
    ay *= ay
    ax += ay
    np.sqrt(ax, out=ax)
    ax *= 2.0
    ax += 1e-9
    np.subtract(1.0, k0, out=k0)
    k0 /= ax
    return k0


def disc(x: np.ndarray, y: np.ndarray, r: Any) -> np.ndarray:
    """Exact signed distance inside a circle of radius r at the origin."""
    return r - np.sqrt(x * x + y * y)


def blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint `colour` [3,...] over planar `img` [3,N,h,w] with coverage [N,h,w]; alpha 1 gives exactly the colour."""
    img *= 1.0 - alpha
    img += alpha * colour


class Frame:
    """Per-image inverse pose: maps image pixel centres into the face frame, whole or cropped to a box."""

    def __init__(self, pose: Pose, size: int, crop: bool):
        self.size = size
        self.crop = crop
        self.grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
        roll = np.deg2rad(pose.roll.astype(np.float64))
        self.cos, self.sin = np.cos(roll), np.sin(roll)
        self.scale = pose.scale.astype(np.float64)
        self.tx = pose.shift_x.astype(np.float64)
        self.ty = pose.shift_y.astype(np.float64) + _HEAD_Y
        self.inv_aa = column(self.scale * size / 2.0)
        s, c, si = (column(v) for v in (self.scale, self.cos, self.sin))
        dx = self.grid.reshape(1, 1, -1) - column(self.tx)
        dy = self.grid.reshape(1, -1, 1) - column(self.ty)
        self.x = (c * dx + si * dy) / s
        self.y = (c * dy - si * dx) / s

    def _to_image(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face-frame points [N, k] to image coordinates, for cropping boxes."""
        s, c, si = self.scale[:, None], self.cos[:, None], self.sin[:, None]
        return s * (c * x - si * y) + self.tx[:, None], s * (si * x + c * y) + self.ty[:, None]

    def coords(
        self, box: tuple[Any, Any, Any, Any] | None = None
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Face-frame x, y [N,h,w] of pixels covering face box (x0, x1, y0, y1) in all images; None if off-image."""
        ys = xs = slice(0, self.size)
        if self.crop and box is not None:
            n = len(self.scale)
            x0, x1, y0, y1 = (np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), (n,)) for b in box)
            qx, qy = self._to_image(np.stack([x0, x1, x0, x1], 1), np.stack([y0, y0, y1, y1], 1))
            half = self.size / 2.0
            j0, j1 = math.floor((qx.min() + 1) * half - 0.5) - 2, math.ceil((qx.max() + 1) * half - 0.5) + 3
            i0, i1 = math.floor((qy.min() + 1) * half - 0.5) - 2, math.ceil((qy.max() + 1) * half - 0.5) + 3
            xs, ys = slice(max(j0, 0), min(j1, self.size)), slice(max(i0, 0), min(i1, self.size))
            if xs.start >= xs.stop or ys.start >= ys.stop:
                return None
        return ys, xs, self.x[:, ys, xs], self.y[:, ys, xs]
