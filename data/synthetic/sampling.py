"""Seeded, version-stable draws of identities, expressions and poses, so every run and process sees the same faces."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data.synthetic.params import EXPRESSION_FIELDS, HAIR_STYLES, POSE_FIELDS, Colour, Expression, Identity, Pose

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


def indexed_expression_pose(seed: int, split: str, indices: np.ndarray) -> tuple[Expression, Pose]:
    """The expression and pose of examples by (seed, split, index), hashed so any subset draws the same."""
    key = _key(_TAG_EXPRESSION_POSE, seed, _SPLIT_CODES[split])
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    counters = idx * np.uint64(_EP_UNIFORMS) + np.arange(_EP_UNIFORMS, dtype=np.uint64)
    return _expression_pose_from_uniform(_uniform(key, counters))


def hashed_uniform(parts: Sequence[int], counters: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats keyed by the ints `parts` and indexed by `counters`, for other seeded index maps.

    The same splitmix64 hashing as every draw here, so a map from (seed, index) to a choice is stable
    across runs, processes and numpy releases, and any subset of indices draws what the whole would.
    """
    return _uniform(_key(*parts), counters)


_TAG_CLIP = 0xC1
POSE_SPACING_FACTOR = 3  # pose keyframes lie this many expression keyframes apart: heads turn slower than faces talk
_LIGHT = [POSE_FIELDS.index("light_angle"), POSE_FIELDS.index("light_strength")]


def keyframes_needed(frames: int, spacing: int) -> int:
    """How many keyframes `ease_through_keys` reads for a clip: one every `spacing` frames, past the last frame."""
    return (int(frames) - 1) // int(spacing) + 2


def ease_through_keys(keys: np.ndarray, frames: int, spacing: int) -> np.ndarray:
    """[frames, F] float64 values passing through keys[k] at frame k * spacing, eased by half a cosine in between.

    Cosine easing keeps every value between its two keyframes (so parameters stay in their ranges, where
    a cubic spline would overshoot) and has zero velocity at each keyframe, so the trajectory is C1:
    the step between frames is at most pi/2 * |key step| / spacing and never jumps at a keyframe.
    """
    keys = np.asarray(keys, np.float64)
    segment, offset = np.divmod(np.arange(int(frames)), int(spacing))
    weight = (1.0 - np.cos(np.pi * offset / spacing)) / 2.0
    return keys[segment] + weight[:, None] * (keys[segment + 1] - keys[segment])


def clip_expression_pose(
    seed: int, split: str, person: int, clip: int, frames: int, spacing: int
) -> tuple[Expression, Pose]:
    """The per-frame expression and pose of clip `clip` of identity seed `person`: a synthetic person talking.

    Keyframes are drawn from the still faces' distribution, hashed from (seed, split, person, clip),
    so train and test clips are different trajectories and a clip does not depend on which other
    people or clips a source holds. Expression keyframes lie `spacing` frames apart, pose keyframes
    POSE_SPACING_FACTOR times further; lighting stays that of the first pose keyframe for the whole
    clip, as one recording has one light.
    """
    n_expression = keyframes_needed(frames, spacing)
    n_pose = keyframes_needed(frames, spacing * POSE_SPACING_FACTOR)
    key = _key(_TAG_CLIP, seed, _SPLIT_CODES[split], person, clip)
    u = _uniform(key, np.arange((n_expression + n_pose) * _EP_UNIFORMS)).reshape(-1, _EP_UNIFORMS)
    expression_keys = _expression_pose_from_uniform(u[:n_expression])[0].vector()
    pose_keys = _expression_pose_from_uniform(u[n_expression:])[1].vector()
    expression = ease_through_keys(expression_keys, frames, spacing)
    pose = ease_through_keys(pose_keys, frames, spacing * POSE_SPACING_FACTOR)
    pose[:, _LIGHT] = pose_keys[0, _LIGHT]
    return Expression.from_vector(expression), Pose.from_vector(pose)
