"""Merging swapped faces back into their frames: blend mask, colour matching, inverse warp, alpha or seamless blend.

Pure numpy/OpenCV on one frame at a time; `train.merge` runs it over a video. The behaviour follows
DeepFaceLab's merger (MergeMasked) and faceswap's convert step as described in
docs/references/faceswap-and-deepfacelab.md (both GPL-3.0: no code was copied):

* Blend mask (`blend_mask`), built in the aligned crop: the model's predicted mask, the landmark hull
  mask, or their product (`intersect`, DFL's learned-prd*learned-dst). It is processed, as in DFL, at
  `MASK_SUBRES` (4) times the model's resolution: erode E is an elliptical kernel E px wide (E < 0
  dilates with a -E px kernel), so the edge moves E/2 of those px, E/8 crop px; blur B is a Gaussian of
  kernel width B px (made odd; sigma by OpenCV's rule for that width), first clearing a band B/2 px wide
  along the crop's edge so the fade reaches zero inside the crop. Amounts are therefore DFL's numbers
  (erode -400..400, blur 0..400) and scale with the face: one unit is 1 / (MASK_SUBRES * s) frame
  pixels, where s = sqrt|det A| (A the 2x2 part of the alignment matrix) is crop pixels per frame
  pixel. A 128 px model whose crop spans 256 frame px (s = 0.5) turns erode 40 into an edge moved
  40 / 2 / (4 * 0.5) = 10 frame px inward.
* Colour (`match_color`): `data.augment`'s rct, lct or sot (or none) from the swapped face towards the
  destination's aligned face, statistics taken inside the face (the un-eroded mask >= 0.5) of both, DFL's
  `-m` variants; the map applies to the whole crop.
* Warp back and blend (`paste`): the face and the mask are warped into the frame by the inverse of the
  alignment matrix (cv2.warpAffine with WARP_INVERSE_MAP, bilinear; face edges replicated, mask zero
  outside the crop), only over the bounding box of the crop's image in the frame. `alpha` is
  frame + m * (face - frame) in float32, rounded; `seamless` first Poisson-clones the face into the
  frame (cv2.seamlessClone, NORMAL_CLONE, over the mask > 0, centred on that region's bounding box)
  and then alpha-blends that result by m, as DFL's seamless mode does. seamlessClone rewrites the
  whole bounding box of its mask (outside the mask only approximately keeping the frame), so its
  output is used only where m > 0. In both modes every pixel where the warped mask is exactly 0 is
  the input frame's bytes (a `np.where`, not arithmetic that happens to round back).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import cv2
import numpy as np

from data import augment
from zoo.errors import ConfigError

MASK_MODES = ("predicted", "hull", "intersect")
COLOR_MODES = ("rct", "lct", "sot", "none")
BLEND_MODES = ("alpha", "seamless")
MASK_SUBRES = 4
"""The blend mask is eroded and blurred at this multiple of the crop size (DFL's mask sub-resolution)."""
MIN_COLOR_PIXELS = 16
"""Fewer face pixels than this leave the colour as it is: statistics of a handful of pixels are noise."""


class FaceLike(Protocol):
    """What merging needs of a detected face (`data.faces.extract.Face` has it)."""

    matrix: np.ndarray  # [2, 3] frame px -> aligned-crop px
    image: np.ndarray  # uint8 [S, S, 3] the destination's aligned face
    mask: np.ndarray  # uint8 [S, S, 1] landmark hull, 255 inside


@dataclasses.dataclass(frozen=True)
class MergeOptions:
    """How faces are merged: mask source, erode/blur in DFL units (module docstring), colour transfer, blend."""

    mask: str = "intersect"
    erode: int = 0
    blur: int = 0
    color: str = "rct"
    blend: str = "alpha"

    def __post_init__(self) -> None:
        for name, choices in (("mask", MASK_MODES), ("color", COLOR_MODES), ("blend", BLEND_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"merge {name}={getattr(self, name)!r}: choose one of {', '.join(choices)}")
        if not -400 <= self.erode <= 400 or not 0 <= self.blur <= 400:
            raise ConfigError(f"merge erode={self.erode}, blur={self.blur}: erode must be in -400..400 and blur in "
                              "0..400 (DeepFaceLab's ranges, in pixels of the mask at 4x the model resolution)")


def scale_matrix(matrix: np.ndarray, factor: float) -> np.ndarray:
    """The alignment matrix for a crop `factor` times larger, pixel centres kept: p' = factor * p + (factor - 1) / 2."""
    matrix = np.asarray(matrix, np.float64)
    return np.concatenate([matrix[:, :2] * factor, matrix[:, 2:] * factor + (factor - 1) / 2], axis=1)


def crop_scale(matrix: np.ndarray) -> float:
    """Crop pixels per frame pixel of a similarity transform: sqrt|det A|."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def face_mask(predicted: np.ndarray | None, hull: np.ndarray | None, mode: str) -> np.ndarray:
    """The raw mask in the crop, float32 [S, S] in [0, 1]: predicted, hull, or their product (intersect)."""
    if mode not in MASK_MODES:
        raise ConfigError(f"mask mode {mode!r}: choose one of {', '.join(MASK_MODES)}")
    parts = []
    if mode in ("predicted", "intersect"):
        if predicted is None:
            raise ValueError(f"mask mode {mode!r} needs the model's predicted mask")
        parts.append(np.clip(np.asarray(predicted, np.float32).reshape(predicted.shape[:2]), 0.0, 1.0))
    if mode in ("hull", "intersect"):
        if hull is None:
            raise ValueError(f"mask mode {mode!r} needs the landmark hull mask")
        hull = np.asarray(hull)
        scale = 255.0 if hull.dtype == np.uint8 else 1.0
        parts.append(np.clip(hull.reshape(hull.shape[:2]).astype(np.float32) / scale, 0.0, 1.0))
    if len(parts) == 2 and parts[0].shape != parts[1].shape:
        raise ValueError(f"predicted mask {parts[0].shape} and hull mask {parts[1].shape} differ in size")
    return parts[0] * parts[1] if len(parts) == 2 else parts[0]


def blend_mask(raw: np.ndarray, erode: int = 0, blur: int = 0, subres: int = MASK_SUBRES) -> np.ndarray:
    """`raw` [S, S] at `subres` x its size, eroded (dilated if negative) and blurred: float32 [S*subres]^2 in [0, 1].

    Units as in the module docstring: an elliptical kernel `erode` px wide and a Gaussian `blur` px wide,
    at the sub-resolution. Outside the crop counts as empty, so a mask touching the crop's edge erodes
    from it too, and the blur is confined to the crop.
    """
    raw = np.asarray(raw, np.float32)
    size = raw.shape[0] * subres
    mask = cv2.resize(raw, (size, size), interpolation=cv2.INTER_LINEAR) if subres != 1 else raw.copy()
    if erode:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(erode), abs(erode)))
        op = cv2.erode if erode > 0 else cv2.dilate
        mask = op(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if blur:
        band = blur // 2
        if band:
            mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = 0, 0, 0, 0
        width = blur + 1 - blur % 2
        mask = cv2.GaussianBlur(mask, (width, width), 0, borderType=cv2.BORDER_CONSTANT)
    return np.clip(mask, 0.0, 1.0)


def match_color(face: np.ndarray, target: np.ndarray, region: np.ndarray, mode: str) -> np.ndarray:
    """`face` (float [S, S, 3] in [0, 1]) colour-matched to `target` (the destination crop) inside `region` [S, S] bool.

    sot runs with a fixed seed, so a merge is reproducible. With fewer than MIN_COLOR_PIXELS face pixels
    the face is returned as it is.
    """
    if mode not in COLOR_MODES:
        raise ConfigError(f"colour mode {mode!r}: choose one of {', '.join(COLOR_MODES)}")
    face = np.clip(np.asarray(face, np.float32), 0.0, 1.0)
    region = np.asarray(region, bool)
    if mode == "none" or region.sum() < MIN_COLOR_PIXELS:
        return face
    rng = np.random.default_rng(0) if mode == "sot" else None
    return augment.color_transfer(mode, face, np.asarray(target), rng, source_mask=region, target_mask=region)


def _roi(matrix: np.ndarray, size: int, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the frame box holding the crop's image, one pixel of margin, clipped; None if off-frame."""
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]])
    points = corners @ inverse.T
    height, width = frame_shape[:2]
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def _shifted(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The matrix applied to ROI coordinates: frame point (x0 + u, y0 + v) for ROI point (u, v)."""
    matrix = np.asarray(matrix, np.float64).copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return matrix


def warp_to_frame(crop: np.ndarray, matrix: np.ndarray, box: tuple[int, int, int, int], *, is_mask: bool) -> np.ndarray:
    """A crop (face [S, S, 3] or mask [S', S']) warped into the frame box (x0, y0, x1, y1) through `matrix`'s inverse.

    `matrix` maps frame pixels to this crop's pixels (use `scale_matrix` for a sub-resolution mask).
    """
    x0, y0, x1, y1 = box
    border = cv2.BORDER_CONSTANT if is_mask else cv2.BORDER_REPLICATE
    return cv2.warpAffine(np.asarray(crop, np.float32), _shifted(matrix, x0, y0), (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0)


def _alpha(background: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """background + mask * (face - background), rounded to uint8; exactly `background` where mask == 0."""
    base = background.astype(np.float32)
    mixed = np.rint(base + mask[..., None] * (face - base))
    return np.where(mask[..., None] > 0, np.clip(mixed, 0, 255).astype(np.uint8), background)


def _seamless(background: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone (NORMAL_CLONE) of `face` into `background` over mask > 0, centred on its bounding box."""
    inside = (mask > 0).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(inside)
    if w < 3 or h < 3:  # seamlessClone zeroes a 1 px border of the mask: nothing would be left to clone
        return background
    source = np.clip(np.rint(face), 0, 255).astype(np.uint8)
    return cv2.seamlessClone(source, background, inside, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)


def paste(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
          blend: str = "alpha") -> tuple[np.ndarray, np.ndarray]:
    """One face (float [S, S, 3] in [0, 1]) and its blend mask (float [S*k, S*k]) put into a copy of `frame`.

    Returns (frame uint8 [H, W, 3], the mask warped into the frame, float32 [H, W]). Pixels where that
    mask is 0 are the input's bytes.
    """
    if blend not in BLEND_MODES:
        raise ConfigError(f"blend mode {blend!r}: choose one of {', '.join(BLEND_MODES)}")
    out = np.array(frame, np.uint8, copy=True)
    frame_mask = np.zeros(out.shape[:2], np.float32)
    size = face.shape[0]
    box = _roi(matrix, size, out.shape)
    if box is None:
        return out, frame_mask
    x0, y0, x1, y1 = box
    warped_face = warp_to_frame(np.asarray(face, np.float32) * 255.0, matrix, box, is_mask=False)
    warped_mask = np.clip(warp_to_frame(mask, scale_matrix(matrix, mask.shape[0] / size), box, is_mask=True), 0, 1)
    region = out[y0:y1, x0:x1]
    if blend == "seamless" and warped_mask.any():
        warped_face = _seamless(region, warped_face, warped_mask).astype(np.float32)
    out[y0:y1, x0:x1] = _alpha(region, warped_face, warped_mask)
    frame_mask[y0:y1, x0:x1] = warped_mask
    return out, frame_mask


def merge_face(frame: np.ndarray, face: FaceLike, swapped: np.ndarray, swapped_mask: np.ndarray | None,
               options: MergeOptions) -> tuple[np.ndarray, np.ndarray]:
    """One swapped face (float [S, S, 3], its predicted mask [S, S, 1]) merged into a copy of `frame`."""
    raw = face_mask(swapped_mask, face.mask, options.mask)
    colored = match_color(swapped, face.image, raw >= 0.5, options.color)
    return paste(frame, colored, blend_mask(raw, options.erode, options.blur), face.matrix, options.blend)


def merge_frame(frame: np.ndarray, faces: Sequence[FaceLike], swapped: np.ndarray, swapped_masks: np.ndarray,
                options: MergeOptions) -> tuple[np.ndarray, np.ndarray]:
    """Every face of one frame merged in turn: (merged uint8 [H, W, 3], blend mask in the frame [H, W], their max).

    `swapped` [N, S, S, 3] and `swapped_masks` [N, S, S, 1] are the model's outputs for `faces` (floats in
    [0, 1]); a frame with no faces comes back unchanged with an empty mask.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if len(swapped) != len(faces) or len(swapped_masks) != len(faces):
        raise ValueError(f"{len(faces)} faces but {len(swapped)} swapped faces and {len(swapped_masks)} masks")
    merged, total = frame.copy(), np.zeros(frame.shape[:2], np.float32)
    for face, rgb, predicted in zip(faces, swapped, swapped_masks):
        if rgb.shape[:2] != face.image.shape[:2]:
            raise ValueError(f"swapped face is {rgb.shape[:2]} but the aligned face is {face.image.shape[:2]}: "
                             "align at the model's resolution")
        merged, mask = merge_face(merged, face, rgb, predicted, options)
        np.maximum(total, mask, out=total)
    return merged, total
