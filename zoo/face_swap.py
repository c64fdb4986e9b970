"""Swapping faces with a trained swap autoencoder: one compiled, batched call.

    from zoo import face_swap, pretrained
    loaded = pretrained.load("runs/swap_df/export.safetensors")
    swap = face_swap.make_swap(loaded.module)
    faces_as_b, masks = swap(loaded.params, faces_of_a, direction="a2b")

Faces are aligned crops at the model's resolution, uint8 or float in [0, 1], [N, res, res, 3]. The
batch is cut into fixed-size chunks (the last one padded), so any N reuses one compiled program.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SwapFn = Callable[..., tuple[np.ndarray, np.ndarray]]


def make_swap(model: Any, chunk: int = 32) -> SwapFn:
    """`swap(params, faces, direction="a2b") -> (faces, masks)` for a swap model (`zoo.swap`).

    "a2b" renders A faces as B (A's expression and pose, B's identity); "b2a" is DeepFaceLab's swap,
    dst faces as src. Returns float32 faces [N, res, res, 3] and masks [N, res, res, 1] in [0, 1].
    """
    if not hasattr(model, "swap") or not hasattr(model, "resolution"):
        raise TypeError(f"{type(model).__name__} is not a swap model; load one of zoo.list_models('swap_*')")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")

    @functools.partial(jax.jit, static_argnames="direction")
    def run(params: Any, x: jax.Array, direction: str) -> tuple[jax.Array, jax.Array]:
        return model.apply({"params": params}, x, direction, method=model.swap)

    def swap(params: Any, faces: Any, direction: str = "a2b") -> tuple[np.ndarray, np.ndarray]:
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction {direction!r}: choose 'a2b' (A as B) or 'b2a' (B as A, DeepFaceLab's swap)")
        x = _as_unit_float(np.asarray(faces), model.resolution)
        n = len(x)
        size = min(chunk, max(n, 1))
        padded = np.concatenate([x, np.zeros((-n % size,) + x.shape[1:], np.float32)])
        out = [run(params, jnp.asarray(padded[i:i + size]), direction) for i in range(0, len(padded), size)]
        rgb = np.concatenate([np.asarray(o[0]) for o in out])[:n] if out else np.zeros_like(x)
        masks = np.concatenate([np.asarray(o[1]) for o in out])[:n] if out else np.zeros(x.shape[:-1] + (1,))
        return rgb.astype(np.float32), masks.astype(np.float32)

    return swap


def _as_unit_float(faces: np.ndarray, resolution: int) -> np.ndarray:
    """Faces as float32 [N, res, res, 3] in [0, 1], or an error that says what to change."""
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[1:] != (resolution, resolution, 3):
        raise ValueError(
            f"faces have shape {faces.shape}; this model takes [N, {resolution}, {resolution}, 3] aligned RGB crops "
            "(resize with data.transforms.center_crop_resize or extract them with the face pipeline)"
        )
    if faces.dtype == np.uint8:
        return faces.astype(np.float32) / 255.0
    if not np.issubdtype(faces.dtype, np.floating):
        raise TypeError(f"faces must be uint8 or float in [0, 1], got {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() > 1):
        raise ValueError(f"float faces must be in [0, 1] (got {faces.min():.3g}..{faces.max():.3g}); divide by 255")
    return faces.astype(np.float32)
