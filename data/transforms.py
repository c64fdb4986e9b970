"""Per-example deterministic transforms the pipeline applies before batching."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an HxWxC uint8 image to a square, then resize to size x size (antialiased).

    Square outputs let sources of any aspect ratio (CelebA's 218x178, video frames) batch at a
    config's resolution; Pillow's Lanczos filter avoids the aliasing of strided subsampling.
    """
    if size <= 0:
        raise ValueError(f"resolution must be positive, got {size}")
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    grey = square.shape[-1] == 1
    pil = Image.fromarray(square[..., 0] if grey else square)
    out = np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS))
    return out[..., None] if grey else out


class Resize:
    """Example transform: `image` -> centre-cropped square of `size` pixels (picklable for workers)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        return dict(example, image=center_crop_resize(example["image"], self.size))


class Resized:
    """A source viewed at another resolution: random access stays random access, info is updated."""

    def __init__(self, source: Any, size: int) -> None:
        import dataclasses

        self.source, self.resize = source, Resize(size)
        self.info = dataclasses.replace(source.info, image_shape=(size, size, source.info.image_shape[-1]))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.resize(self.source[index])
