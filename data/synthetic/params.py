"""Identity, expression and pose parameters: what a synthetic face is made of, one vocabulary for renders and swaps."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np

Colour = tuple[float, float, float]

HAIR_STYLES = ("short", "long", "fringe", "bald", "afro", "bob")
EXPRESSION_FIELDS = ("mouth_open", "smile", "eye_open", "brow_raise")
POSE_FIELDS = ("roll", "yaw", "shift_x", "shift_y", "scale", "light_angle", "light_strength")


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
