"""Face masks from 68 aligned landmarks: the face hull (forehead extended for whole_face and head) and eyes + mouth.

Both are uint8 [size, size, 1], 255 inside and 0 outside, filled by OpenCV with sub-pixel vertices
(`shift` = 4 fractional bits) in the pixel-centre convention of `data.faces.align`. They are what
`masked_training` and `eyes_mouth_prio` read ("mask" and "em_mask", as data/synthetic yields).

Forehead (whole_face, head): dlib's points stop at the brows, so the hull would cut the forehead off.
As DeepFaceLab does, the brow points (17-26) are copied upward, along the face's own vertical axis (chin
8 to nose bridge 27, so a tilted face gets a tilted forehead), by 0.45 of the brow-to-chin distance at
the middle of the brows, falling to 0.66 of that at their outer ends (an elliptic arc, the forehead's
round top). 0.45 follows the thirds rule (hairline-brow, brow-nose, nose-chin about equal) less a
margin, so the mask stays on skin below a typical hairline; the whole_face crop reaches 0.48 (normalised
units, 0.51 of brow-to-chin) above the brows.

Eyes and mouth: the convex hull of each eye's six points grown by a quarter of that eye's width (the
lids and corners, where a swap's gaze shows), and of the outer lip (48-59) grown by a tenth of the
mouth's width, all clipped to the face hull (so em_mask <= mask, as in data/synthetic).
"""
from __future__ import annotations

import numpy as np

from data.faces.align import check_face_type

_SHIFT = 4  # fractional bits of polygon vertices passed to OpenCV
_FOREHEAD = 0.45
_FOREHEAD_EDGE = 0.75  # the outer brow ends lift by sqrt(1 - 0.75**2) = 0.66 of the middle
_EYE_GROW, _MOUTH_GROW = 0.25, 0.10
_DISC = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                  np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], axis=1)


def _check(landmarks: np.ndarray, size: int) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be [68, 2] aligned-crop pixels; got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks hold NaN or inf")
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    return points


def _fill_hull(mask: np.ndarray, points: np.ndarray) -> None:
    """Fill the convex hull of points (float pixels) into mask with 255, in place."""
    import cv2

    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    hull = cv2.convexHull(fixed.reshape(-1, 1, 2))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=_SHIFT)


def forehead_points(landmarks: np.ndarray) -> np.ndarray:
    """The brow points 17-26 lifted onto the forehead's top [10, 2] (see the module docstring)."""
    points = np.asarray(landmarks, dtype=np.float64)
    brows = points[17:27]
    up = points[27] - points[8]
    up /= max(np.linalg.norm(up), 1e-9)
    across = np.array([-up[1], up[0]])
    height = np.dot(brows.mean(axis=0) - points[8], up)
    along = (brows - brows.mean(axis=0)) @ across
    half = max(np.abs(along).max(), 1e-9)
    lift = _FOREHEAD * height * np.sqrt(np.clip(1.0 - (_FOREHEAD_EDGE * along / half) ** 2, 0.0, None))
    return brows + lift[:, None] * up


def hull_mask(landmarks_aligned: np.ndarray, size: int, face_type: str) -> np.ndarray:
    """uint8 [size, size, 1], 255 inside the landmarks' convex hull (forehead added for whole_face and head)."""
    points = _check(landmarks_aligned, size)
    if check_face_type(face_type) != "full_face":
        points = np.concatenate([points, forehead_points(points)])
    mask = np.zeros((int(size), int(size)), np.uint8)
    _fill_hull(mask, points)
    return mask[..., None]


def _grown(points: np.ndarray, margin: float) -> np.ndarray:
    """Vertices whose convex hull is that of points grown by margin (a 16-gon around each point)."""
    return (points[:, None, :] + margin * _DISC[None]).reshape(-1, 2)


def eyes_mouth_mask(landmarks_aligned: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 1], 255 on both eyes (lids included) and the mouth, within the face hull."""
    points = _check(landmarks_aligned, size)
    regions = np.zeros((int(size), int(size)), np.uint8)
    for eye in (points[36:42], points[42:48]):
        _fill_hull(regions, _grown(eye, _EYE_GROW * np.linalg.norm(eye[3] - eye[0])))
    mouth = points[48:60]
    _fill_hull(regions, _grown(mouth, _MOUTH_GROW * np.linalg.norm(mouth[6] - mouth[0])))
    face = np.zeros_like(regions)
    _fill_hull(face, points)
    return np.minimum(regions, face)[..., None]
