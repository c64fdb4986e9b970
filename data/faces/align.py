"""Face alignment: a similarity transform (Umeyama) of a face's 68 landmarks onto the canonical template.

Coordinates are pixels, x right and y down, with pixel centres at integer coordinates (OpenCV's
convention): a 2x3 matrix M maps frame point p to M @ [p, 1], exactly what `cv2.warpAffine(frame, M,
(size, size))` samples, so `warp_face` and `transform_points` agree to floating-point precision.

The template (`template(face_type)`) gives the 68 landmarks in unit coordinates of the aligned crop:
in a crop of S pixels landmark k sits at `template(face_type)[k] * S` pixels, i.e. unit coordinate u is
pixel u * S (the crop's pixels cover u in [-0.5/S, 1 - 0.5/S]; the half-pixel asymmetry is the price of
the simple rule and is the same for every face).

Canonical shape: `template_68.json`, the zoo's own generalised Procrustes mean of dlib 68-point landmarks
over the six GRID videos (every 3rd frame, 150 faces) and the Olivetti faces (394 of 400 found after 4x
upscaling), made upright and left-right symmetric (`data.faces.template`). Normalised, its landmark box
(jaw end to jaw end across, 1.0; brow top to chin down, 0.94) is centred on (0, 0) with larger side 1.

Face types: each is a square crop of side `scale` (in normalised-shape units) whose centre sits `offset`
above the landmark box centre, so template = shape / scale + (0.5, 0.5 + offset / scale):

    face type    scale  offset  the crop covers (normalised units; brow top -0.47, chin +0.47, jaw ends +-0.5)
    full_face    1.25   0.00    x +-0.625, y -0.625..+0.625: brow to chin, ~0.15 margin for an open mouth (DFL FULL)
    whole_face   1.60   0.15    x +-0.80, y -0.95..+0.65: the forehead up to the hairline, ~0.5 above the brows
                                (DFL WHOLE_FACE)
    head         2.20   0.35    x +-1.10, y -1.45..+0.75: the whole head with its hair and some neck (DFL HEAD)

(Checked by eye on GRID frames; by the thirds rule the forehead is about half the brow-to-chin height.)

Alignment fits landmarks 17-47 (brows, nose, eyes) only. The jaw (0-16) and mouth (48-67) move with
speech and expression, so fitting them makes the crop follow the talking mouth: on four GRID clips (75
frames each, whole_face at 256 px) the rigid points (eye corners, nose) of the aligned faces spread with a
standard deviation of 0.81 px over a clip when all 68 points are fitted, 0.75 px without the jaw, and
0.62 px with 17-47 (DeepFaceLab's subset 17-48 + 54: 0.63; nose and eyes alone: 0.62). The 31 upper-face
points are nearly rigid and enough to average out dlib's whole-pixel landmarks.
"""
from __future__ import annotations

import functools

import numpy as np

FACE_TYPES = ("full_face", "whole_face", "head")
CROPS = {"full_face": (1.25, 0.00), "whole_face": (1.60, 0.15), "head": (2.20, 0.35)}  # (scale, offset)
ALIGN_POINTS = np.arange(17, 48)


def check_face_type(face_type: str) -> str:
    """The face type itself, or a ValueError naming the choices."""
    if face_type not in FACE_TYPES:
        raise ValueError(f"face_type {face_type!r} is not one of {', '.join(FACE_TYPES)}")
    return face_type


@functools.cache
def _mean_shape() -> np.ndarray:
    from data.faces import template as template_file

    shape = template_file.load()
    shape.flags.writeable = False
    return shape


def template(face_type: str) -> np.ndarray:
    """The canonical landmarks [68, 2] float64 in unit coordinates of the face type's aligned crop."""
    scale, offset = CROPS[check_face_type(face_type)]
    return _mean_shape() / scale + np.array([0.5, 0.5 + offset / scale])


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity [2, 3] (rotation, uniform scale, translation) mapping src [N, 2] onto dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns":
    closed form from the SVD of the cross-covariance, with the reflection case excluded.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"src and dst must be matching [N, 2] arrays with N >= 2; got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("src or dst holds NaN or inf")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = np.mean(np.sum(s * s, axis=1))
    if var_s < 1e-12:
        raise ValueError("src points all coincide; no similarity is defined")
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / var_s
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be [68, 2] (dlib's 68 points, x and y); got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks hold NaN or inf")
    return points


def alignment_matrix(landmarks: np.ndarray, face_type: str, size: int) -> np.ndarray:
    """The [2, 3] float64 matrix mapping frame pixels to pixels of the size x size aligned crop of the face."""
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    points = _check_landmarks(landmarks)
    return umeyama(points[ALIGN_POINTS], template(face_type)[ALIGN_POINTS] * int(size))


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse [2, 3] of an invertible affine [2, 3] (aligned-crop pixels back to frame pixels)."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must be [2, 3]; got {m.shape}")
    linear = np.linalg.inv(m[:, :2])
    return np.hstack([linear, -linear @ m[:, 2:]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """points [N, 2] mapped by the affine [2, 3]: M @ [p, 1] for each p."""
    p, m = np.asarray(points, np.float64), np.asarray(matrix, np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or m.shape != (2, 3):
        raise ValueError(f"points must be [N, 2] and matrix [2, 3]; got {p.shape} and {m.shape}")
    return p @ m[:, :2].T + m[:, 2]


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The size x size uint8 aligned crop: cv2.warpAffine, bilinear, borders replicated."""
    import cv2

    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
        raise ValueError(f"frame must be uint8 H x W x 3; got {getattr(frame, 'dtype', type(frame))} "
                         f"{getattr(frame, 'shape', '')}")
    m = np.asarray(matrix, np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must be [2, 3]; got {m.shape}")
    return cv2.warpAffine(frame, m, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def source_extent(matrix: np.ndarray, size: int) -> float:
    """How many frame pixels the crop's side spans: under `size`, the face was upscaled to fill the crop."""
    m = np.asarray(matrix, np.float64)
    return float(size) / float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
