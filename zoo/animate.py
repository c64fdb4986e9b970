"""Animating a still face by a driving video with a reenactment model (`zoo.reenact`'s fomm and tpsmm): inference only.

- `relative_keypoints`: FOMM's relative motion transfer (its `normalize_kp`). The driving frame's
  keypoints are moved onto the source: value = kp_source + (kp_driving - kp_driving_initial) * s,
  jacobian = J_driving inv(J_driving_initial) J_source, with s = sqrt(hull area of the source's
  keypoints / hull area of the initial driving frame's) under `adapt_scale`, else 1. Absolute mode
  (the driving keypoints as they are) makes the source take the driving face's shape, which FOMM's
  README says "usually leads to poor performance" across identities; relative mode keeps the
  source's shape and transfers only the motion, if the source's pose matches the first driving frame.
- `hull_area`: the convex-hull area of keypoint sets, in JAX (gift wrapping in N fixed-shape steps, so
  it runs under jit and vmap; O(N^3), nothing at N = 10, TPSMM's 50 or dlib's 68): FOMM computes it
  with scipy's ConvexHull on the host, for the first sample of the batch only; here every sample gets
  its own. A degenerate initial hull (area 0: keypoints on a line) gives s = 1 instead of FOMM's
  division by zero.
- `animate_clip`: a uint8 source image animated by a uint8 driving clip, in batches of frames padded
  to `batch_size` (the last frame repeated) so that one compiled program serves the whole clip and
  every clip of that model and settings; the source's and the first driving frame's keypoints are
  computed in the same program call as the batch's, so relative mode with a still clip gives exactly
  the source's keypoints. tpsmm's keypoints are its TPS control points, and relative motion moves
  all of them (TPSMM's demo). Its background affine: in absolute mode predicted from (source, driving
  frame) as TPSMM's `reconstruction.py` does (the same-video protocol); in relative mode the identity,
  as TPSMM's `demo.py` animates (it passes no background motion in any mode), since an affine between
  two different people says nothing about the camera. `background=True/False` overrides either.
- `clip_keypoints` (the model's keypoints of many frames) and `find_best_frame` (FOMM's demo: the
  driving frame whose normalised landmarks are nearest the source's; `python -m train.animate
  --find-best-frame` animates forwards and backwards from it).

Images are uint8 [H, W, C] at the model's `image_shape`; `train.animate` reads and resizes files.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import repeat

from zoo.errors import ConfigError, DataError

Array = jax.Array

__all__ = ["MODES", "animate_clip", "clip_keypoints", "find_best_frame", "hull_area", "normalise_landmarks",
           "relative_keypoints"]

MODES = ("relative", "absolute")
_KEYS = ("value", "jacobian")  # what `Reenactor.animate` reads of a keypoint dict
_HULL_TOL = 1e-6  # collinearity tolerance of the hull march, relative to the squared diameter


def hull_area(points: Array) -> Array:
    """Area of the convex hull of points [..., N, 2] -> [...]; 0 for points on one line.

    Gift wrapping (Jarvis's march), N steps of fixed shape so it traces under jit and vmap: from the
    lowest-x point, each step moves to the point with no other point to its right (within a tolerance
    of 1e-6 of the squared diameter), the farthest such when several are collinear, and adds that
    edge's x_i y_j - x_j y_i (the shoelace formula) until it reaches a point it has visited.
    Decisions compare cross products against the tolerance, never floats for equality, since XLA
    contracts the products differently under jit (an exact all-pairs edge test failed that way).
    Orientation-free: (x, y) in image axes gives the same area.
    """
    p = jnp.asarray(points, jnp.float32)
    lead, n = p.shape[:-2], p.shape[-2]
    if n < 3:
        return jnp.zeros(lead, jnp.float32)
    flat = p.reshape(-1, n, 2)
    return jax.vmap(_hull_area_one)(flat).reshape(lead)


def _hull_area_one(p: Array) -> Array:
    """`hull_area` of one set [N, 2]."""
    n = p.shape[0]
    offsets = p[None, :, :] - p[:, None, :]  # [c, q] = q - c
    tol = _HULL_TOL * jnp.max(jnp.sum(offsets**2, axis=-1)) + 1e-30
    first = jnp.lexsort((p[:, 1], p[:, 0]))[0]

    def step(_, carry):
        current, area, done, visited = carry
        d = offsets[current]  # [q, 2]: every point relative to the current one
        cross = d[:, None, 0] * d[None, :, 1] - d[:, None, 1] * d[None, :, 0]  # [q, k]: k's side of current -> q
        valid = jnp.all(cross >= -tol, axis=1) & (jnp.arange(n) != current)
        nxt = jnp.argmax(jnp.where(valid, jnp.sum(d**2, axis=-1), -1.0))
        term = p[current, 0] * p[nxt, 1] - p[nxt, 0] * p[current, 1]
        area = area + jnp.where(done, 0.0, term)
        return nxt, area, done | visited[nxt], visited.at[nxt].set(True)

    visited = jnp.zeros(n, bool).at[first].set(True)
    _, area, _, _ = jax.lax.fori_loop(0, n, step, (first, jnp.float32(0), jnp.bool_(False), visited))
    return jnp.abs(0.5 * area)


def _movement_scale(kp_source: Array, kp_driving_initial: Array) -> Array:
    """sqrt(source hull area / initial driving hull area) per sample [...]: 1 where the driving hull is degenerate."""
    source, driving = hull_area(kp_source), hull_area(kp_driving_initial)
    ok = driving > 0
    return jnp.where(ok, jnp.sqrt(source / jnp.where(ok, driving, 1.0)), 1.0)


def relative_keypoints(kp_source: Mapping[str, Array], kp_driving: Mapping[str, Array],
                       kp_driving_initial: Mapping[str, Array], *, adapt_scale: bool,
                       use_relative_movement: bool = True, use_relative_jacobian: bool = True) -> dict[str, Array]:
    """FOMM's keypoints for animating the source by a driving frame: its relative motion since the initial frame.

    Dicts as `Reenactor.keypoints` returns ({"value": [B, N, 2], "jacobian": [B, N, 2, 2] (fomm)});
    kp_source and kp_driving_initial may have batch 1 (broadcast). Without `use_relative_movement`,
    kp_driving itself (absolute mode); the Jacobian is made relative only with both flags and when
    every dict has one. Traceable: runs under jit and vmap.
    """
    out = dict(kp_driving)
    if not use_relative_movement:
        return out
    value_s = jnp.asarray(kp_source["value"], jnp.float32)
    value_d = jnp.asarray(kp_driving["value"], jnp.float32)
    value_0 = jnp.asarray(kp_driving_initial["value"], jnp.float32)
    scale = _movement_scale(value_s, value_0)[..., None, None] if adapt_scale else 1.0
    out["value"] = value_s + (value_d - value_0) * scale
    if use_relative_jacobian and all("jacobian" in kp for kp in (kp_source, kp_driving, kp_driving_initial)):
        jac_d = jnp.asarray(kp_driving["jacobian"], jnp.float32)
        jac_0 = jnp.asarray(kp_driving_initial["jacobian"], jnp.float32)
        out["jacobian"] = (jac_d @ jnp.linalg.inv(jac_0)) @ jnp.asarray(kp_source["jacobian"], jnp.float32)
    return out


def _variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """`module.apply`'s variables: a {"params": ..., "batch_stats": ...} dict, or bare params."""
    return dict(variables) if "params" in variables else {"params": variables}


def _check_frames(model: nn.Module, array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """The array if it is uint8 of the model's image shape ([T, ...] for ndim 4), else DataError saying how to fix it."""
    array = np.asarray(array)
    shape = tuple(getattr(model, "image_shape", ()))
    if len(shape) != 3 or not hasattr(model, "keypoints"):
        raise ConfigError(f"{type(model).__name__} is not a reenactment model (zoo.reenact's fomm or tpsmm); "
                          "animate with one of those")
    if array.dtype != np.uint8 or array.ndim != ndim or tuple(array.shape[-3:]) != shape:
        lead = "T, " if ndim == 4 else ""
        raise DataError(f"{name} must be uint8 [{lead}{', '.join(map(str, shape))}] (the model's image_shape), got "
                        f"{array.dtype} {array.shape}; resize the frames to the model (train.animate does)")
    if ndim == 4 and not len(array):
        raise DataError(f"{name} has no frames; pass a clip of at least one frame")
    return array


def _batches(frames: np.ndarray, size: int):
    """(batch padded to `size` by repeating its last frame, real count) over frames [T, ...]."""
    if size < 1:
        raise ConfigError(f"batch_size {size} must be >= 1")
    for start in range(0, len(frames), size):
        chunk = frames[start:start + size]
        pad = size - len(chunk)
        yield (np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk), len(chunk)


def _to_unit(x: Array) -> Array:
    return x.astype(jnp.float32) / 255.0


def _to_uint8(x: Array) -> Array:
    """[0, 1] floats as uint8 by `data.provenance.to_uint8`'s rule: round half to even, clip."""
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)


def _keypoints(module: nn.Module, images: Array) -> dict[str, Array]:
    kp = module.keypoints(images)
    return {k: v for k, v in kp.items() if k in _KEYS}


def _animate_batch(module: nn.Module, source: Array, initial: Array, frames: Array, *, relative: bool,
                   adapt_scale: bool, background: bool) -> Array:
    """uint8 source [1, ...], initial driving frame [1, ...], frames [B, ...] -> uint8 predictions [B, ...]."""
    b = frames.shape[0]
    kp = _keypoints(module, _to_unit(jnp.concatenate([source, initial, frames])))
    kp_s = {k: jnp.broadcast_to(v[:1], (b, *v.shape[1:])) for k, v in kp.items()}
    kp_0 = {k: jnp.broadcast_to(v[1:2], (b, *v.shape[1:])) for k, v in kp.items()}
    kp_d = {k: v[2:] for k, v in kp.items()}
    kp_n = relative_keypoints(kp_s, kp_d, kp_0, adapt_scale=adapt_scale) if relative else kp_d
    src = repeat(_to_unit(source)[0], "h w c -> b h w c", b=b)
    bg = module.background(src, _to_unit(frames)) if background else None
    return _to_uint8(module.animate(src, kp_s, kp_n, bg_param=bg)["prediction"])


@functools.lru_cache(maxsize=32)
def _batch_program(model: nn.Module, relative: bool, adapt_scale: bool, background: bool) -> Callable[..., Array]:
    """The compiled `_animate_batch` of one model and setting (jit retraces only for a new batch shape)."""
    fn = functools.partial(_animate_batch, relative=relative, adapt_scale=adapt_scale, background=background)
    return jax.jit(lambda variables, *images: model.apply(variables, *images, method=fn))


@functools.lru_cache(maxsize=32)
def _keypoint_program(model: nn.Module) -> Callable[..., Array]:
    return jax.jit(lambda variables, frames: model.apply(variables, _to_unit(frames), method=_keypoints)["value"])


def _uses_background(model: nn.Module, mode: str, background: bool | None) -> bool:
    """Whether a predicted background affine goes in: only tps with a predictor (see the module docstring)."""
    has = getattr(model, "motion", "fomm") == "tps" and bool(getattr(model, "background_affine", False))
    if background and not has:
        raise ConfigError(f"background=True, but {getattr(model, 'registered_name', type(model).__name__)} has no "
                          "background predictor (tpsmm with background_affine); leave background unset")
    return has and (mode == "absolute" if background is None else bool(background))


def animate_clip(model: nn.Module, variables: Mapping[str, Any], source: np.ndarray, driving: np.ndarray, *,
                 mode: str = "relative", adapt_scale: bool = False, batch_size: int = 16,
                 background: bool | None = None) -> np.ndarray:
    """The source (uint8 [H, W, C]) animated by the driving clip (uint8 [T, H, W, C]) -> uint8 [T, H, W, C].

    mode "relative" (FOMM's relative motion anchored on driving frame 0; `adapt_scale` scales it by the
    keypoint hulls) or "absolute" (the driving keypoints as they are). `variables`: what `module.apply`
    takes (`zoo.pretrained.load(...).variables`, params plus batch_stats), evaluation mode.
    `background`: tpsmm's background affine, None for the mode's default (module docstring).
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    source = _check_frames(model, source, "source", 3)
    driving = _check_frames(model, driving, "driving", 4)
    program = _batch_program(model, mode == "relative", bool(adapt_scale), _uses_background(model, mode, background))
    variables = _variables(variables)
    src, initial = jnp.asarray(source[None]), jnp.asarray(driving[:1])
    out = [np.asarray(program(variables, src, initial, batch))[:n] for batch, n in _batches(driving, batch_size)]
    return np.concatenate(out)


def clip_keypoints(model: nn.Module, variables: Mapping[str, Any], frames: np.ndarray,
                   batch_size: int = 16) -> np.ndarray:
    """The model's keypoint values of uint8 frames [T, H, W, C] -> float32 [T, N, 2] ((x, y) in [-1, 1])."""
    frames = _check_frames(model, frames, "frames", 4)
    program, variables = _keypoint_program(model), _variables(variables)
    return np.concatenate([np.asarray(program(variables, batch))[:n] for batch, n in _batches(frames, batch_size)])


def normalise_landmarks(points: np.ndarray) -> np.ndarray:
    """Landmarks [..., N, 2] centred on their mean and divided by the sqrt of their hull area (FOMM's demo).

    Position and size drop out, so frames compare by face shape and pose; a degenerate hull is left unscaled.
    """
    points = np.asarray(points, np.float64)
    centred = points - points.mean(axis=-2, keepdims=True)
    area = np.asarray(jax.jit(hull_area)(centred), np.float64)
    size = np.where(area > 0, np.sqrt(np.where(area > 0, area, 1.0)), 1.0)
    return centred / size[..., None, None]


def find_best_frame(source_landmarks: np.ndarray, driving_landmarks: np.ndarray) -> int:
    """The index of the driving frame whose normalised landmarks are nearest the source's (sum of squares).

    source_landmarks [N, 2]; driving_landmarks [T, N, 2], a frame whose landmarks were not found given
    as NaN (it is skipped). Ties go to the earliest frame, as FOMM's demo's strict comparison does.
    """
    source = np.asarray(source_landmarks, np.float64)
    driving = np.asarray(driving_landmarks, np.float64)
    if source.ndim != 2 or source.shape[-1] != 2 or driving.ndim != 3 or driving.shape[1:] != source.shape:
        raise DataError(f"landmarks must be source [N, 2] and driving [T, N, 2] of the same N; got {source.shape} "
                        f"and {driving.shape}")
    if not np.all(np.isfinite(source)):
        raise DataError("the source's landmarks are not all finite (no face found in the source?); pass a source "
                        "image showing a face")
    found = np.all(np.isfinite(driving), axis=(1, 2))
    if not found.any():
        raise DataError(f"no landmarks in any of the {len(driving)} driving frames; pass a driving video showing a "
                        "face, or animate without --find-best-frame")
    distance = np.full(len(driving), np.inf)
    distance[found] = np.sum((normalise_landmarks(driving[found]) - normalise_landmarks(source)) ** 2, axis=(1, 2))
    return int(np.argmin(distance))
