"""Synthetic cartoon faces with known identity, expression and pose, so face swaps have a ground truth.

A real swap (person B's face driven by person A's frame) has no true answer to compare against; here
it does: `swap_ground_truth(id_b, (expression_a, pose_a), size)` renders B with A's expression and pose.

Geometry lives in normalised units: the image spans [-1, 1] on both axes (x right, y down, pixel
centres at (j + 0.5) * 2 / size - 1), and the face is drawn in a face frame (head centre at 0, y down)
that the pose rolls, scales and shifts into the image. Every shape is an implicit function of the
pixel centre whose edge is smoothstepped over one pixel, so a face looks the same at any size
(32..256 px) up to resampling, and a 2x render area-averaged down matches the 1x render.

Parameter vectors (float32, in this order), as the `SyntheticFaces` source yields them:
  expression = EXPRESSION_FIELDS = (mouth_open 0..1, smile -1..1, eye_open 0..1, brow_raise -1..1)
  pose       = POSE_FIELDS = (roll degrees, yaw -1..1, shift_x, shift_y (image units), scale,
                              light_angle degrees, light_strength 0..0.3)
`Expression.from_vector` / `Pose.from_vector` turn such rows back into parameters for `render`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, ClassVar, Sequence

import numpy as np

from data.base import SourceInfo
from zoo.errors import DataError

__all__ = [
    "EXPRESSION_FIELDS",
    "HAIR_STYLES",
    "POSE_FIELDS",
    "Expression",
    "Identity",
    "Pose",
    "SyntheticFaces",
    "eyes_mouth_mask",
    "face_mask",
    "from_spec",
    "identity",
    "random_expression_pose",
    "render",
    "swap_ground_truth",
]

Colour = tuple[float, float, float]

HAIR_STYLES = ("short", "long", "fringe", "bald", "afro", "bob")
EXPRESSION_FIELDS = ("mouth_open", "smile", "eye_open", "brow_raise")
POSE_FIELDS = ("roll", "yaw", "shift_x", "shift_y", "scale", "light_angle", "light_strength")

_HEAD_Y = -0.08
_PIXELS_PER_CHUNK = 1 << 17


@dataclasses.dataclass(frozen=True)
class Identity:
    """One person's fixed look, in face-frame units (head centre 0, y down), so a swap can hold it fixed.

    Lengths are half-extents unless named otherwise; colours are RGB 0..255; `brow_angle` is in
    degrees (positive raises the inner ends); `hair_style` indexes HAIR_STYLES.
    """

    head_width: float
    head_height: float
    jaw: float
    skin: Colour
    eye_y: float
    eye_spacing: float
    eye_width: float
    eye_height: float
    iris: Colour
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    lips: Colour
    brow_gap: float
    brow_thickness: float
    brow_angle: float
    brow_arch: float
    brow_colour: Colour
    hair_style: int
    hair_colour: Colour
    hair_thickness: float
    hairline: float
    background: Colour
    shirt: Colour


class _ParamBatch:
    """Per-image parameters as equal-length float32 arrays, so a batch renders in one vectorised pass."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        """Fields become 1-D float32 arrays broadcast to one length, so scalars mean 'the same for all'."""
        values = [np.atleast_1d(np.asarray(getattr(self, f), dtype=np.float32)) for f in self.FIELDS]
        if any(v.ndim != 1 for v in values):
            raise ValueError(f"{type(self).__name__} fields must be scalars or 1-D arrays")
        for f, v in zip(self.FIELDS, np.broadcast_arrays(*values)):
            object.__setattr__(self, f, np.ascontiguousarray(v))

    def __len__(self) -> int:
        return len(getattr(self, self.FIELDS[0]))

    def __getitem__(self, index: Any) -> Any:
        """The parameters of a subset of images (int, slice or index array), keeping the batch axis."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return type(self)(**{f: getattr(self, f)[index] for f in self.FIELDS})

    def vector(self) -> np.ndarray:
        """[N, len(FIELDS)] float32 rows in FIELDS order, the form the source yields and models consume."""
        return np.stack([getattr(self, f) for f in self.FIELDS], axis=-1)

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> Any:
        """Parameters from [N, len(FIELDS)] (or one [len(FIELDS)]) rows, inverse of `vector`."""
        v = np.asarray(vector, dtype=np.float32)
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] != len(cls.FIELDS):
            raise ValueError(
                f"{cls.__name__} vectors have shape [N, {len(cls.FIELDS)}] ({', '.join(cls.FIELDS)}); got {v.shape}"
            )
        return cls(*(v[:, k] for k in range(len(cls.FIELDS))))

    @classmethod
    def concatenate(cls, parts: Sequence[Any]) -> Any:
        """One batch holding several batches' images in order."""
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, {', '.join(self.FIELDS)})"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Expression(_ParamBatch):
    """Per-image facial expression: what the swap must carry over from the driving face."""

    FIELDS: ClassVar[tuple[str, ...]] = EXPRESSION_FIELDS
    mouth_open: np.ndarray
    smile: np.ndarray
    eye_open: np.ndarray
    brow_raise: np.ndarray

    @classmethod
    def neutral(cls, n: int = 1) -> Expression:
        """Closed mouth, no smile, open eyes, resting brows: a reference expression for tests and demos."""
        return cls(np.zeros(n), 0.0, 1.0, 0.0)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Pose(_ParamBatch):
    """Per-image head pose and lighting: the other half of what a swap must carry over."""

    FIELDS: ClassVar[tuple[str, ...]] = POSE_FIELDS
    roll: np.ndarray
    yaw: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    scale: np.ndarray
    light_angle: np.ndarray
    light_strength: np.ndarray

    @classmethod
    def neutral(cls, n: int = 1) -> Pose:
        """Upright, centred, unit scale, unlit: a reference pose for tests and demos."""
        return cls(np.zeros(n), 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)


# --- seeded, version-stable randomness -------------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    """splitmix64's finaliser on a Python int: a stable 64-bit hash that no numpy release can change."""
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _key(*parts: int) -> int:
    """One 64-bit key from several ints, so distinct (purpose, seed, split) tuples get distinct streams."""
    h = 0
    for p in parts:
        h = _mix(h ^ (int(p) & _M64))
    return h


def _uniform(key: int, counters: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats hashed from (key, counter): random access by index, independent of batching."""
    z = np.asarray(counters, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


_TAG_IDENTITY, _TAG_EXPRESSION_POSE = 0x1D, 0xE7
_SPLIT_CODES = {"train": 1, "test": 2}

_SKIN = ((255, 224, 198), (240, 196, 160), (222, 170, 128), (196, 136, 96), (160, 106, 72), (122, 80, 54), (90, 58, 40))
_HAIR = (
    (30, 26, 26),
    (78, 50, 32),
    (130, 88, 52),
    (150, 62, 34),
    (232, 204, 128),
    (214, 116, 52),
    (178, 178, 184),
    (70, 96, 180),
)
_IRIS = ((96, 58, 30), (70, 130, 200), (70, 140, 80), (120, 130, 140), (150, 110, 50), (40, 30, 30))
_BACKGROUND = (
    (178, 202, 228),
    (198, 226, 200),
    (208, 196, 232),
    (214, 214, 214),
    (120, 172, 172),
    (88, 104, 132),
    (152, 162, 108),
    (224, 186, 192),
    (52, 62, 104),
    (228, 212, 168),
)
_SHIRT = (
    (200, 40, 40),
    (40, 150, 70),
    (40, 70, 190),
    (230, 200, 40),
    (130, 60, 160),
    (240, 130, 30),
    (245, 245, 245),
    (35, 35, 40),
    (20, 140, 150),
    (200, 40, 140),
    (110, 80, 50),
)


def _palette(palette: Sequence[Sequence[int]], seed: int, step: int, jitter: np.ndarray) -> Colour:
    """A palette colour picked by seed*step (consecutive seeds never share one), plus a small jitter."""
    base = np.asarray(palette[(seed * step) % len(palette)], dtype=np.float64)
    return tuple(float(c) for c in np.clip(base + (jitter - 0.5) * 16.0, 0.0, 255.0))


def identity(seed: int) -> Identity:
    """The person with this seed: stable across runs and numpy versions, and visibly distinct from its neighbours.

    Palette attributes (hair style, skin, hair, iris, background and shirt colours) step through
    their palettes with the seed, so consecutive seeds differ in all of them; shapes are drawn
    uniformly from wide ranges with a seed-keyed hash.
    """
    seed = int(seed)
    u = _uniform(_key(_TAG_IDENTITY, seed), np.arange(40))
    lerp = lambda k, lo, hi: float(lo + (hi - lo) * u[k])
    head_width = lerp(0, 0.48, 0.62)
    head_height = lerp(1, 0.64, 0.76)
    eye_width = head_width * lerp(2, 0.17, 0.23)
    hair = _palette(_HAIR, seed, 3, u[30:33])
    skin = _palette(_SKIN, seed, 3, u[33:36])
    skin_arr = np.asarray(skin)
    lips = tuple(float(c) for c in np.clip(0.55 * skin_arr + 0.45 * np.array([190.0, 70.0, 80.0]) - 15.0, 0, 255))
    eye_y = head_height * lerp(3, -0.12, 0.02)
    mouth_y = head_height * lerp(4, 0.42, 0.54)
    brow_mix = lerp(5, 0.45, 0.85)
    brow_colour = tuple(float(c) for c in brow_mix * np.asarray(hair) + (1 - brow_mix) * 20.0)
    return Identity(
        head_width=head_width,
        head_height=head_height,
        jaw=lerp(6, 0.0, 0.38),
        skin=skin,
        eye_y=eye_y,
        eye_spacing=2.0 * head_width * lerp(7, 0.36, 0.46),
        eye_width=eye_width,
        eye_height=eye_width * lerp(8, 0.42, 0.7),
        iris=_palette(_IRIS, seed, 5, u[36:39]),
        nose_length=(mouth_y - eye_y) * lerp(9, 0.45, 0.68),
        nose_width=head_width * lerp(10, 0.14, 0.26),
        mouth_y=mouth_y,
        mouth_width=head_width * lerp(11, 0.22, 0.36),
        lip_thickness=lerp(12, 0.012, 0.032),
        lips=lips,
        brow_gap=lerp(13, 0.045, 0.08),
        brow_thickness=lerp(14, 0.018, 0.05),
        brow_angle=lerp(15, -16.0, 16.0),
        brow_arch=lerp(16, 0.0, 0.035),
        brow_colour=brow_colour,
        hair_style=seed % len(HAIR_STYLES),
        hair_colour=hair,
        hair_thickness=lerp(18, 0.04, 0.1),
        hairline=head_height * lerp(19, -0.62, -0.42),
        background=_palette(_BACKGROUND, seed, 7, u[20:23]),
        shirt=_palette(_SHIRT, seed, 4, u[23:26]),
    )


_EP_UNIFORMS = len(EXPRESSION_FIELDS) + len(POSE_FIELDS)


def _expression_pose_from_uniform(u: np.ndarray) -> tuple[Expression, Pose]:
    """Expression and pose from [N, 11] uniforms: a third of mouths closed, about one blink in nine."""
    u = np.asarray(u, dtype=np.float64)
    blink = u[:, 2] < 0.11
    eye_open = np.where(blink, u[:, 2] / 0.11 * 0.15, 0.55 + 0.45 * (u[:, 2] - 0.11) / 0.89)
    expression = Expression(
        mouth_open=np.clip(1.5 * u[:, 0] - 0.5, 0.0, 1.0),
        smile=2.0 * u[:, 1] - 1.0,
        eye_open=eye_open,
        brow_raise=2.0 * u[:, 3] - 1.0,
    )
    pose = Pose(
        roll=(2.0 * u[:, 4] - 1.0) * 10.0,
        yaw=2.0 * u[:, 5] - 1.0,
        shift_x=(2.0 * u[:, 6] - 1.0) * 0.08,
        shift_y=(2.0 * u[:, 7] - 1.0) * 0.06,
        scale=0.9 + 0.2 * u[:, 8],
        light_angle=360.0 * u[:, 9],
        light_strength=0.3 * u[:, 10],
    )
    return expression, pose


def random_expression_pose(rng: np.random.Generator, n: int) -> tuple[Expression, Pose]:
    """n random expressions and poses from `rng`, from the same distribution the source draws."""
    return _expression_pose_from_uniform(rng.random((n, _EP_UNIFORMS)))


def _indexed_expression_pose(seed: int, split: str, indices: np.ndarray) -> tuple[Expression, Pose]:
    """The expression and pose of examples by (seed, split, index), hashed so any subset draws the same."""
    key = _key(_TAG_EXPRESSION_POSE, seed, _SPLIT_CODES[split])
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    counters = idx * np.uint64(_EP_UNIFORMS) + np.arange(_EP_UNIFORMS, dtype=np.uint64)
    return _expression_pose_from_uniform(_uniform(key, counters))


# --- rasteriser ------------------------------------------------------------------------------------

_COLOUR_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(Identity)
    if f.name in {"skin", "iris", "lips", "brow_colour", "hair_colour", "background", "shirt"}
)


def _identity_arrays(identities: Sequence[Identity]) -> dict[str, np.ndarray]:
    """Identity fields stacked to [N,1,1] (colours planar, [3,N,1,1]) float32, ready to broadcast over pixels."""
    out = {}
    for f in dataclasses.fields(Identity):
        values = np.asarray([getattr(i, f.name) for i in identities], dtype=np.float32)
        out[f.name] = (
            np.ascontiguousarray(values.T.reshape(3, -1, 1, 1))
            if f.name in _COLOUR_FIELDS
            else values.reshape(-1, 1, 1)
        )
    out["hair_style"] = out["hair_style"].astype(np.int64)
    return out


def _take(p: dict[str, np.ndarray], sel: Any) -> dict[str, np.ndarray]:
    """Identity arrays of a subset of images (colours are indexed on their image axis, 1)."""
    return {k: (v[:, sel] if k in _COLOUR_FIELDS else v[sel]) for k, v in p.items()}


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    """A fixed colour shaped [3,1,1,1] to broadcast over planar images."""
    return np.asarray([r, g, b], np.float32).reshape(3, 1, 1, 1)


def _column(values: np.ndarray) -> np.ndarray:
    """Per-image values as [N,1,1] float32 so they broadcast over [N,H,W] pixel arrays."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _cover(inside: np.ndarray, inv_aa: np.ndarray) -> np.ndarray:
    """Coverage of pixels whose centres lie `inside` units within an edge: smoothstep across one pixel."""
    t = inside * inv_aa
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    t2 = t * t
    t *= -2.0
    t += 3.0
    t *= t2
    return t


def _interval(v: np.ndarray, lo: Any, hi: Any, inv_aa: np.ndarray) -> np.ndarray:
    """Coverage of lo < v < hi (lo <= hi): a band that keeps its area however thin, so strokes survive any size."""
    return _cover(hi - v, inv_aa) - _cover(lo - v, inv_aa)


def _ellipse(x: np.ndarray, y: np.ndarray, rx: Any, ry: Any) -> np.ndarray:
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


def _disc(x: np.ndarray, y: np.ndarray, r: Any) -> np.ndarray:
    """Exact signed distance inside a circle of radius r at the origin."""
    return r - np.sqrt(x * x + y * y)


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint `colour` [3,...] over planar `img` [3,N,h,w] with coverage [N,h,w]; alpha 1 gives exactly the colour."""
    img *= 1.0 - alpha
    img += alpha * colour


class _Frame:
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
        self.inv_aa = _column(self.scale * size / 2.0)
        s, c, si = (_column(v) for v in (self.scale, self.cos, self.sin))
        dx = self.grid.reshape(1, 1, -1) - _column(self.tx)
        dy = self.grid.reshape(1, -1, 1) - _column(self.ty)
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


def _head_inside(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance inside the head outline: an ellipse whose lower half narrows by `jaw` into a chin."""
    rx, ry = p["head_width"], p["head_height"]
    t = np.clip(y / ry, 0.0, 1.0)
    taper = 1.0 - p["jaw"] * t * t
    return _ellipse(x / taper, y, rx, ry)


def _hair_cover(
    p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, inv_aa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hair coverage behind the head and in front of the face, per image by its hair style."""
    back, front = np.zeros(x.shape, np.float32), np.zeros(x.shape, np.float32)
    styles = p["hair_style"].reshape(-1)
    for style in np.unique(styles):
        idx = np.flatnonzero(styles == style)
        if len(idx) == len(styles):
            return _hair_style_cover(HAIR_STYLES[int(style)], p, x, y, inv_aa)
        back[idx], front[idx] = _hair_style_cover(HAIR_STYLES[int(style)], _take(p, idx), x[idx], y[idx], inv_aa[idx])
    return back, front


def _hair_style_cover(
    style: str, p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, ia: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One hair style's (back, front) coverage, for images sharing that style."""
    rx, ry, t, hl = p["head_width"], p["head_height"], p["hair_thickness"], p["hairline"]
    outer = _cover(_ellipse(x, y + 0.03, rx + t, ry + t), ia)
    xr = x / rx
    temples = hl + 0.32 * ry * xr * xr
    brow_top = p["eye_y"] - p["eye_height"] - p["brow_gap"]
    if style in ("short", "afro"):
        front = outer * _cover(temples - y, ia)
    elif style == "long":
        front = outer * _cover(temples + 0.05 * xr - y, ia)
    elif style == "fringe":
        line = brow_top - 0.09 + 0.018 * np.sin(30.0 * x) - 0.06 * xr + 0.25 * ry * xr**4
        front = outer * _cover(np.minimum(line, temples + 0.25) - y, ia)
    elif style == "bob":
        front = outer * _cover(brow_top - 0.1 + 0.3 * ry * xr**4 - y, ia)
    else:
        front = outer * _cover(_ellipse(np.abs(x) - 0.97 * rx, y + 0.2 * ry, 0.15 * rx, 0.3 * ry), ia)
    if style in ("short", "fringe"):
        back = outer * _cover(0.1 - y, ia)
    elif style in ("long", "bob"):
        bottom = 0.85 if style == "long" else 0.35
        body = _cover(_ellipse(x, y - 0.1, rx + t + 0.1, ry + 0.28), ia) * _cover(bottom - y, ia)
        back = np.maximum(outer * _cover(0.2 - y, ia), body)
    elif style == "afro":
        back = _cover(_ellipse(x, y + 0.12, rx + t + 0.2, ry + t + 0.06), ia)
    else:
        back = np.zeros(x.shape, np.float32)
    return back, front


def _eye_geometry(p: dict[str, np.ndarray], e: Expression, q: Pose, side: int) -> dict[str, np.ndarray]:
    """Centre, size and lid opening of one eye (side -1 left, +1 right of the image); yaw narrows the far eye."""
    yaw = _column(q.yaw)
    return {
        "cx": side * p["eye_spacing"] / 2 + 0.1 * yaw,
        "cy": p["eye_y"],
        "w": p["eye_width"] * (1.0 - 0.18 * yaw * side),
        "h": p["eye_height"],
        "open": _column(e.eye_open),
        "gaze": 0.3 * yaw * p["eye_width"],
    }


def _mouth_geometry(p: dict[str, np.ndarray], e: Expression, q: Pose) -> dict[str, np.ndarray]:
    """Centre, half-width, smile curvature and opening of the mouth."""
    smile = _column(e.smile)
    return {
        "cx": 0.12 * _column(q.yaw),
        "cy": p["mouth_y"],
        "w": p["mouth_width"] * (1.0 + 0.15 * smile),
        "curve": 0.05 * smile,
        "open": 0.15 * _column(e.mouth_open),
        "lip": p["lip_thickness"],
    }


def _paint_eye(
    img: np.ndarray, head: np.ndarray, frame: _Frame, p: dict[str, np.ndarray], g: dict[str, np.ndarray], ia: np.ndarray
) -> None:
    """White, iris, pupil, highlight and lash line of one eye, the lids closing with eye_open."""
    box = (g["cx"] - g["w"] * 1.1, g["cx"] + g["w"] * 1.1, g["cy"] - g["h"] * 1.1, g["cy"] + g["h"])
    got = frame.coords(box)
    if got is None:
        return
    ys, xs, x, y = got
    ex, ey = x - g["cx"], y - g["cy"]
    w, h = g["w"], g["h"]
    prof = np.sqrt(np.clip(1.0 - (ex / w) ** 2, 0.0, 1.0))
    upper = h * prof * (0.8 - 1.8 * g["open"])
    lower = 0.8 * h * prof
    hmask = head[:, ys, xs]
    white = _interval(ey, upper, lower, ia) * _cover(w - np.abs(ex), ia) * hmask
    target = img[:, :, ys, xs]
    _blend(target, white, _rgb(246, 246, 240))
    ri = np.minimum(0.85 * h, 0.6 * w)
    gx = ex - g["gaze"]
    dist = np.sqrt(gx * gx + ey * ey)
    _blend(target, _cover(ri - dist, ia) * white, p["iris"])
    _blend(target, _cover(0.45 * ri - dist, ia) * white, _rgb(18, 16, 20))
    _blend(target, _cover(_disc(gx - 0.35 * ri, ey + 0.35 * ri, 0.22 * ri), ia) * white, _rgb(255, 255, 255))
    lash = _interval(ey, upper - 0.016, upper + 0.006, ia) * _cover(1.06 * w - np.abs(ex), ia) * hmask
    _blend(target, lash, _rgb(34, 24, 24))


def _paint_brow(
    img: np.ndarray,
    head: np.ndarray,
    frame: _Frame,
    p: dict[str, np.ndarray],
    e: Expression,
    g: dict[str, np.ndarray],
    side: int,
    ia: np.ndarray,
) -> None:
    """A tapered, arched brow over one eye; brow_raise lifts it and tilts the inner end."""
    length = 1.15 * g["w"]
    raise_ = _column(e.brow_raise)
    by = g["cy"] - g["h"] - p["brow_gap"] - 0.045 * raise_
    slope = np.tan(np.deg2rad(p["brow_angle"])) + 0.25 * raise_
    reach = 0.07 + p["brow_thickness"] + p["brow_arch"]
    box = (g["cx"] - length, g["cx"] + length, by - reach - 0.3 * length, by + 0.3 * length + p["brow_thickness"])
    got = frame.coords(box)
    if got is None:
        return
    ys, xs, x, y = got
    u = -side * (x - g["cx"])
    r = u / length
    centre = by - slope * u - p["brow_arch"] * (1.0 - r * r)
    hw = 0.5 * p["brow_thickness"] * (1.0 - 0.45 * r * r)
    cover = _interval(y, centre - hw, centre + hw, ia) * _cover(length - np.abs(u), ia) * head[:, ys, xs]
    target = img[:, :, ys, xs]
    _blend(target, cover, p["brow_colour"])


def _paint_nose(
    img: np.ndarray, head: np.ndarray, frame: _Frame, p: dict[str, np.ndarray], q: Pose, ia: np.ndarray
) -> None:
    """A soft shaded nose with a lit tip and two nostrils, shifted sideways by yaw."""
    cx = 0.14 * _column(q.yaw)
    top = p["eye_y"] + 0.03
    bottom = top + p["nose_length"]
    w = p["nose_width"]
    got = frame.coords((cx - w, cx + w, top - 0.02, bottom + 0.03))
    if got is None:
        return
    ys, xs, x, y = got
    hmask = head[:, ys, xs]
    skin = p["skin"]
    target = img[:, :, ys, xs]
    nx = x - cx
    _blend(
        target,
        0.45 * _cover(_ellipse(nx, y - 0.5 * (top + bottom), 0.5 * w, 0.5 * p["nose_length"]), ia) * hmask,
        skin * 0.8,
    )
    _blend(
        target,
        0.5 * _cover(_ellipse(nx, y - bottom + 0.04, 0.3 * w, 0.025), ia) * hmask,
        np.minimum(skin * 1.15, 255.0),
    )
    nostrils = _cover(_ellipse(np.abs(nx) - 0.35 * w, y - bottom + 0.012, 0.022, 0.012), ia) * hmask
    _blend(target, 0.75 * nostrils, skin * 0.5)


def _paint_mouth(
    img: np.ndarray, head: np.ndarray, frame: _Frame, p: dict[str, np.ndarray], e: Expression, q: Pose, ia: np.ndarray
) -> None:
    """Lips curved by smile, opening to a dark interior with teeth; smiling also blushes the cheeks."""
    m = _mouth_geometry(p, e, q)
    w, h, lip = m["w"], m["open"], m["lip"]
    cheeks = 0.4 * np.maximum(_column(e.smile), 0.0)
    if np.any(cheeks > 0):
        cx = p["eye_spacing"] / 2
        cy = p["eye_y"] + 0.2 * p["head_height"]
        got = frame.coords((-cx - 0.1 + m["cx"], cx + 0.1 + m["cx"], cy - 0.06, cy + 0.06))
        if got is not None:
            ys, xs, x, y = got
            blush = _cover(_ellipse(np.abs(x - m["cx"]) - cx, y - cy, 0.075, 0.045), ia) * cheeks * head[:, ys, xs]
            target = img[:, :, ys, xs]
            _blend(target, blush, _rgb(235, 110, 120))
    reach = 0.5 * np.abs(m["curve"]) + lip + 0.01
    got = frame.coords((m["cx"] - w - 0.02, m["cx"] + w + 0.02, m["cy"] - reach - 0.3 * h, m["cy"] + reach + 0.7 * h))
    if got is None:
        return
    ys, xs, x, y = got
    mx = x - m["cx"]
    r = mx / w
    prof = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    mid = m["cy"] + m["curve"] * (0.5 - r * r)
    upper = mid - 0.3 * h * prof
    lower = mid + 0.7 * h * prof
    thick = lip * (0.35 + 0.65 * prof)
    span = _cover(w - np.abs(mx), ia) * head[:, ys, xs]
    target = img[:, :, ys, xs]
    lips = (_interval(y, upper - 0.8 * thick, upper, ia) + _interval(y, lower, lower + thick, ia)) * span
    _blend(target, lips, p["lips"])
    line = _interval(y, mid - 0.007, mid + 0.007, ia) * _cover(1.02 * w - np.abs(mx), ia) * head[:, ys, xs]
    _blend(target, line, p["lips"] * 0.5)
    _blend(target, _interval(y, upper, lower, ia) * span, _rgb(72, 18, 30))
    teeth = (
        _interval(y, upper, upper + np.minimum(0.35 * h, 0.03) * prof, ia)
        * _cover(0.7 * w - np.abs(mx), ia)
        * head[:, ys, xs]
    )
    _blend(target, teeth, _rgb(242, 240, 230))


def _render_chunk(p: dict[str, np.ndarray], e: Expression, q: Pose, size: int, crop: bool) -> np.ndarray:
    """Float planar [3,N,size,size] images of one chunk, painted back to front."""
    n = len(q)
    frame = _Frame(q, size, crop)
    ia = frame.inv_aa
    rx, ry = p["head_width"], p["head_height"]
    shade_y = 1.06 - 0.12 * (frame.grid + 1.0) / 2.0
    img = np.ascontiguousarray(np.broadcast_to(p["background"] * shade_y.reshape(1, 1, -1, 1), (3, n, size, size)))

    got = frame.coords((-1.8 * rx, 1.8 * rx, 0.3 * ry, 3.0))
    if got is not None:
        ys, xs, x, y = got
        target = img[:, :, ys, xs]
        _blend(target, _cover(0.36 * rx - np.abs(x), ia) * _cover(y, ia), p["skin"] * 0.78)
        _blend(target, _cover(_ellipse(x, y - ry - 0.62, 1.7 * rx, 0.5), ia), p["shirt"])

    reach = rx + p["hair_thickness"] + 0.32
    hair = frame.coords((-reach, reach, -ry - p["hair_thickness"] - 0.3, 0.9))
    if hair is not None:
        hair_ys, hair_xs, x, y = hair
        back, hair_front = _hair_cover(p, x, y, ia)
        _blend(img[:, :, hair_ys, hair_xs], back, p["hair_colour"] * 0.82)

    yaw = _column(q.yaw)
    ear_x = rx - 0.015
    got = frame.coords((-ear_x - 0.12, ear_x + 0.12, p["eye_y"] - 0.07, p["eye_y"] + 0.2))
    if got is not None:
        ys, xs, x, y = got
        target = img[:, :, ys, xs]
        ex = np.abs(x + 0.04 * yaw) - ear_x
        ey = y - p["eye_y"] - 0.06
        _blend(target, _cover(_ellipse(ex, ey, 0.075, 0.115), ia), p["skin"] * 0.93)
        _blend(target, 0.8 * _cover(_ellipse(ex - 0.02, ey, 0.035, 0.07), ia), p["skin"] * 0.72)

    head = np.zeros((n, size, size), np.float32)
    got = frame.coords((-rx, rx, -ry, ry))
    if got is not None:
        ys, xs, x, y = got
        cover = _cover(_head_inside(p, x, y), ia)
        head[:, ys, xs] = cover
        angle = np.deg2rad(_column(q.light_angle))
        nx, ny = x / rx, y / ry
        shade = (
            1.04 + _column(q.light_strength) * (np.cos(angle) * nx + np.sin(angle) * ny) - 0.13 * (nx * nx + ny * ny)
        )
        target = img[:, :, ys, xs]
        target *= 1.0 - cover
        shade *= cover
        target += shade * p["skin"]
        np.minimum(target, 255.0, out=target)

    _paint_nose(img, head, frame, p, q, ia)
    _paint_mouth(img, head, frame, p, e, q, ia)
    for side in (-1, 1):
        g = _eye_geometry(p, e, q, side)
        _paint_eye(img, head, frame, p, g, ia)
        _paint_brow(img, head, frame, p, e, g, side, ia)

    got = frame.coords((-reach, reach, -ry - p["hair_thickness"] - 0.1, 0.2))
    if hair is not None and got is not None:
        ys, xs = got[:2]
        rows = slice(ys.start - hair_ys.start, ys.stop - hair_ys.start)
        cols = slice(xs.start - hair_xs.start, xs.stop - hair_xs.start)
        _blend(img[:, :, ys, xs], hair_front[:, rows, cols], p["hair_colour"])
    return img


def _check_batch(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> None:
    """Equal batch lengths and a usable size, with the fix in the message."""
    if not len(identities) == len(expressions) == len(poses):
        raise ValueError(
            f"render got {len(identities)} identities, {len(expressions)} expressions and {len(poses)} poses; "
            "pass one of each per image (e.g. [identity] * n for one person)"
        )
    if int(size) < 8:
        raise ValueError(f"size={size} is too small to draw a face; use 32..256")


def _chunks(n: int, size: int) -> range:
    """Start offsets of render chunks: a few hundred thousand pixels each, so temporaries stay in cache."""
    return range(0, n, max(1, _PIXELS_PER_CHUNK // (size * size)))


def render(
    identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int, *, _crop: bool = True
) -> np.ndarray:
    """uint8 [N,size,size,3] faces, image k being identities[k] with expressions[k] and poses[k]."""
    _check_batch(identities, expressions, poses, size)
    n, size = len(poses), int(size)
    out = np.empty((n, size, size, 3), np.uint8)
    if n == 0:
        return out
    p_all = _identity_arrays(identities)
    step = _chunks(n, size).step
    for start in _chunks(n, size):
        sl = slice(start, start + step)
        p = _take(p_all, sl)
        img = _render_chunk(p, expressions[sl], poses[sl], size, _crop)
        img += 0.5
        np.clip(img, 0.0, 255.0, out=img)
        out[sl] = img.transpose(1, 2, 3, 0)
    return out


def swap_ground_truth(id_b: Identity, expression_pose_of_a: tuple[Expression, Pose], size: int) -> np.ndarray:
    """Identity B wearing A's expressions and poses: the image a perfect A->B swap would produce."""
    expressions, poses = expression_pose_of_a
    return render([id_b] * len(poses), expressions, poses, size)


def _masks(
    identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Face (visible head skin and features) and eyes-and-mouth coverage, from render's geometry."""
    _check_batch(identities, expressions, poses, size)
    p = _identity_arrays(identities)
    frame = _Frame(poses, int(size), crop=False)
    ia = frame.inv_aa
    _, _, x, y = frame.coords()
    face = _cover(_head_inside(p, x, y), ia) * (1.0 - _hair_cover(p, x, y, ia)[1])
    regions = np.zeros_like(face)
    for side in (-1, 1):
        g = _eye_geometry(p, expressions, poses, side)
        eye = _cover(_ellipse(x - g["cx"], y - g["cy"] + 0.1 * g["h"], 1.2 * g["w"] + 0.02, 1.3 * g["h"] + 0.02), ia)
        np.maximum(regions, eye, out=regions)
    m = _mouth_geometry(p, expressions, poses)
    reach = 0.5 * np.abs(m["curve"]) + m["lip"] + 0.03
    mouth = _cover(m["w"] + 0.03 - np.abs(x - m["cx"]), ia) * _interval(
        y, m["cy"] - reach - 0.3 * m["open"], m["cy"] + reach + 0.7 * m["open"], ia
    )
    np.maximum(regions, mouth, out=regions)
    return face, regions * face


def face_mask(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> np.ndarray:
    """float32 [N,size,size] in [0,1]: the head's visible skin and features, without hair, ears or background."""
    return _masks(identities, expressions, poses, size)[0]


def eyes_mouth_mask(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> np.ndarray:
    """float32 [N,size,size] in [0,1], at most face_mask: eyes (lids included) and mouth, for priority losses."""
    return _masks(identities, expressions, poses, size)[1]


# --- source ----------------------------------------------------------------------------------------


class SyntheticFaces:
    """A random-access source of rendered faces with labels and the parameters to re-render any swap.

    Example i of a split shows identity index i // num_per_identity (its "label", the position in
    `identities`), with an expression and pose hashed from (seed, split, i): the same for every
    run, chunking and process, and drawn independently for "train" and "test" ("all" is train
    followed by test). Each example is {"image": uint8 [size,size,3], "label": int64,
    "expression": float32 [4], "pose": float32 [7]} (vector orders: EXPRESSION_FIELDS, POSE_FIELDS).
    With `masks=True` it also holds "mask" (the face, `face_mask`) and "em_mask" (eyes and mouth,
    `eyes_mouth_mask`), each uint8 [size,size,1] with 255 = inside: what masked swap training needs.

    When every image fits in `cache_bytes` they are rendered a chunk at a time on first use and kept;
    otherwise each read renders just what it asks for (`gather` a whole batch in one vectorised pass).
    """

    def __init__(
        self,
        identities: Sequence[int],
        num_per_identity: int,
        size: int,
        seed: int = 0,
        split: str = "train",
        *,
        masks: bool = False,
        cache_bytes: int = 512 << 20,
    ):
        seeds = tuple(int(i) for i in identities)
        if not seeds:
            raise DataError("SyntheticFaces needs at least one identity seed")
        if len(set(seeds)) != len(seeds):
            raise DataError(f"identity seeds {seeds} repeat; each label must be a different person")
        if int(num_per_identity) < 1:
            raise DataError(f"num_per_identity={num_per_identity}; need at least 1 image per identity")
        if int(size) < 8:
            raise DataError(f"size={size} is too small to draw a face; use 32..256")
        if split not in ("train", "test", "all"):
            raise DataError(f"split {split!r} is not supported; use train, test or all")
        self.identity_seeds = seeds
        self.identities = tuple(identity(s) for s in seeds)
        self.num_per_identity = int(num_per_identity)
        self.size = int(size)
        self.seed = int(seed)
        self.split = split
        self.masks = bool(masks)
        self._per_split = len(seeds) * self.num_per_identity
        total = self._per_split * (2 if split == "all" else 1)
        self.info = SourceInfo(
            name="synthetic_faces", image_shape=(self.size, self.size, 3), num_classes=len(seeds), num_examples=total
        )
        self._cached = total * self.size * self.size * (5 if self.masks else 3) <= cache_bytes
        self._chunk = max(8, min(256, (4 << 20) // (self.size * self.size * 3)))
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.info.num_examples

    def __repr__(self) -> str:
        return (
            f"SyntheticFaces(ids={list(self.identity_seeds)}, n={self.num_per_identity}, size={self.size}, "
            f"seed={self.seed}, split={self.split!r}{', masks=True' if self.masks else ''})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the cache or lock, so worker processes start light and render their own."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _indices(self, indices: Any) -> np.ndarray:
        """Validated non-negative int64 indices (negative ones count from the end)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"index out of range for a source of {n} examples")
        return idx

    def labels(self, indices: Any) -> np.ndarray:
        """int64 identity positions of examples."""
        return (self._indices(indices) % self._per_split) // self.num_per_identity

    def expression_pose(self, indices: Any) -> tuple[Expression, Pose]:
        """The expression and pose of examples, for re-rendering them or their swaps."""
        idx = self._indices(indices)
        if self.split != "all":
            return _indexed_expression_pose(self.seed, self.split, idx)
        is_test = idx >= self._per_split
        parts = [
            _indexed_expression_pose(self.seed, s, idx[m] % self._per_split)
            for s, m in (("train", ~is_test), ("test", is_test))
        ]
        order = np.concatenate([np.flatnonzero(~is_test), np.flatnonzero(is_test)])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        e = Expression.concatenate([p[0] for p in parts])[inverse]
        q = Pose.concatenate([p[1] for p in parts])[inverse]
        return e, q

    def swap(self, indices: Any, label: int) -> np.ndarray:
        """uint8 [N,size,size,3]: identity `label` with the expressions and poses of examples `indices`."""
        return swap_ground_truth(self.identities[int(label)], self.expression_pose(indices), self.size)

    def _render(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Examples rendered now, as a batch."""
        e, q = self.expression_pose(idx)
        labels = self.labels(idx)
        people = [self.identities[k] for k in labels]
        out = {"image": render(people, e, q, self.size), "label": labels, "expression": e.vector(), "pose": q.vector()}
        if self.masks:
            face, regions = _masks(people, e, q, self.size)
            out["mask"] = _to_uint8(face)[..., None]
            out["em_mask"] = _to_uint8(regions)[..., None]
        return out

    def _chunk_batch(self, c: int) -> dict[str, np.ndarray]:
        """Examples of chunk c, rendered once and kept (read-only)."""
        batch = self._cache.get(c)
        if batch is None:
            with self._lock:
                batch = self._cache.get(c)
                if batch is None:
                    start = c * self._chunk
                    batch = self._render(np.arange(start, min(start + self._chunk, len(self))))
                    for array in batch.values():
                        array.flags.writeable = False
                    self._cache[c] = batch
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self._indices([int(index)])[0])
        if not self._cached:
            return {k: v[0] for k, v in self._render(np.array([i])).items()}
        c, row = divmod(i, self._chunk)
        return {k: v[row].copy() for k, v in self._chunk_batch(c).items()}

    def gather(self, indices: Any) -> dict[str, np.ndarray]:
        """The examples at `indices` as one batch: the pipeline's fast path, one vectorised render for misses."""
        idx = self._indices(indices)
        if not self._cached:
            return self._render(idx)
        chunks, rows = np.divmod(idx, self._chunk)
        unique = np.unique(chunks)
        if len(unique) == 1:
            return {k: v[rows] for k, v in self._chunk_batch(int(unique[0])).items()}
        parts = {int(c): self._chunk_batch(int(c)) for c in unique}
        out = {k: np.empty((len(idx), *v.shape[1:]), v.dtype) for k, v in parts[int(unique[0])].items()}
        for c, batch in parts.items():
            where = np.flatnonzero(chunks == c)
            for k, v in batch.items():
                out[k][where] = v[rows[where]]
        return out


def _to_uint8(coverage: np.ndarray) -> np.ndarray:
    """[0, 1] coverage to uint8 0..255, rounded."""
    return np.rint(np.clip(coverage, 0.0, 1.0) * 255.0).astype(np.uint8)


_SPEC_DEFAULTS = {"ids": "0,1", "n": "1000", "size": "64", "seed": "0", "masks": "0"}


def _parse_ids(text: str) -> list[int]:
    """Identity seeds from "0,1,5" or ranges "0-9" (inclusive), mixed freely."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        if dash and lo.strip():
            a, b = int(lo), int(hi)
            if b < a:
                raise DataError(f"identity range {part!r} is empty; write low-high")
            ids.extend(range(a, b + 1))
        else:
            ids.append(int(part))
    return ids


def from_spec(rest: str, split: str) -> SyntheticFaces:
    """A SyntheticFaces source from "key=value;..." text, so configs can name synthetic data as a string.

    Keys (all optional): ids = identity seeds, comma-separated, ranges allowed ("0,1", "0-9", "0-4,9"),
    default 0,1; n = images per identity (default 1000); size = image side in pixels (default 64);
    seed = expression/pose seed (default 0); masks = 1 to add face and eyes/mouth masks (default 0).
    Example: "ids=0-9;n=2000;size=128;seed=1;masks=1".
    """
    values = dict(_SPEC_DEFAULTS)
    seen: set[str] = set()
    for item in filter(None, (s.strip() for s in rest.split(";"))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if key not in _SPEC_DEFAULTS:
            raise DataError(
                f"unknown key {key!r} in synthetic_faces spec {rest!r}; valid keys: {', '.join(_SPEC_DEFAULTS)} "
                "(e.g. ids=0,1;n=1000;size=64;seed=0)"
            )
        if not eq or not value:
            raise DataError(f"synthetic_faces spec {rest!r}: {key!r} needs a value, as in {key}={_SPEC_DEFAULTS[key]}")
        if key in seen:
            raise DataError(f"synthetic_faces spec {rest!r} sets {key!r} twice")
        seen.add(key)
        values[key] = value
    try:
        ids = _parse_ids(values["ids"])
        n, size, seed, masks = (int(values[k]) for k in ("n", "size", "seed", "masks"))
    except ValueError as e:
        raise DataError(
            f"synthetic_faces spec {rest!r}: {e}; expected integers, e.g. ids=0-9;n=1000;size=64;seed=0"
        ) from e
    if masks not in (0, 1):
        raise DataError(f"synthetic_faces spec {rest!r}: masks must be 0 or 1, got {masks}")
    return SyntheticFaces(ids, n, size, seed, split, masks=bool(masks))
