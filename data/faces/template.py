"""The zoo's canonical 68-point face shape: a generalised Procrustes mean of dlib landmarks on faces on hand.

Alignment needs a mean face to fit every detected face onto (DeepFaceLab ships its own, GPL-3.0; the
zoo builds one). `procrustes_mean` is the maths; `canonical` makes the mean upright, left-right symmetric
and unit-sized; `build` measures it on the GRID videos and Olivetti faces in ../shared/data and writes
`template_68.json` (numbers only, with what it was built from), which `data.faces.align` reads:

    python -m data.faces template [--shared ../shared/data] [--every 3] [--output data/faces/template_68.json]

Landmarks follow iBUG's 68-point order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67),
"left"/"right" meaning image left/right of a frontal face.
"""
from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import numpy as np

from zoo.errors import DataError
from zoo.files import atomic_write

TEMPLATE_FILE = pathlib.Path(__file__).with_name("template_68.json")

# Each landmark's mirror partner under a left-right flip of the face (iBUG 68-point numbering).
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)


def _normalised(shape: np.ndarray) -> np.ndarray:
    """The shape centred on its centroid and scaled to unit Frobenius norm."""
    centred = shape - shape.mean(axis=0)
    return centred / np.linalg.norm(centred)


def _rotation_onto(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The proper rotation R (det +1) minimising ||shape @ R - target|| for centred shapes (orthogonal Procrustes)."""
    u, _, vt = np.linalg.svd(shape.T @ target)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, d]) @ vt


def procrustes_mean(shapes: np.ndarray, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """The generalised Procrustes mean [P, 2] of shapes [N, P, 2]: centred, unit Frobenius norm.

    Each shape is centred and scaled to unit norm, then rotated onto the running mean, which is re-averaged
    and re-normalised until it moves less than tol (Gower 1975). The mean's rotation is fixed by the first
    shape's; `canonical` makes it upright.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 2 or len(shapes) < 1:
        raise ValueError(f"shapes must be [N, P, 2] with N >= 1; got {shapes.shape}")
    if not np.all(np.isfinite(shapes)):
        raise ValueError("shapes hold NaN or inf")
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=(1, 2))
    if np.any(norms < 1e-12):
        raise ValueError(f"shape {int(np.argmin(norms))} has all its points at one place")
    unit = centred / norms[:, None, None]
    mean = unit[0]
    for _ in range(max_iter):
        aligned = np.stack([s @ _rotation_onto(s, mean) for s in unit])
        new = _normalised(aligned.mean(axis=0))
        new = new @ _rotation_onto(new, mean)
        if np.linalg.norm(new - mean) < tol:
            return new
        mean = new
    return mean


def canonical(mean: np.ndarray) -> np.ndarray:
    """A 68-point mean shape made upright, mirror-symmetric and normalised: landmark box centred on 0, side 1.

    Upright: the line from the left to the right eye centre is horizontal, the chin below the eyes.
    Symmetric: averaged with its own mirror image about the vertical line through its centroid (x -> -x,
    landmarks renumbered by MIRROR_68), which keeps the eye line horizontal, because a frontal template
    should not carry the yaw bias of the few faces it was measured on.
    Normalised: the box around all 68 points (jaw ends across, brow top to chin down) is centred on (0, 0)
    and its larger side is 1.
    """
    shape = _normalised(np.asarray(mean, dtype=np.float64))
    eyes = shape[RIGHT_EYE].mean(axis=0) - shape[LEFT_EYE].mean(axis=0)
    angle = np.arctan2(eyes[1], eyes[0])
    c, s = np.cos(-angle), np.sin(-angle)
    shape = shape @ np.array([[c, s], [-s, c]])
    if shape[8, 1] < shape[LEFT_EYE, 1].mean():  # chin above the eyes: the shape is upside down
        shape = shape * np.array([-1.0, -1.0])
    shape = shape - shape.mean(axis=0)
    shape = 0.5 * (shape + (shape * np.array([-1.0, 1.0]))[MIRROR_68])
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    return (shape - 0.5 * (lo + hi)) / float(np.max(hi - lo))


def load(path: str | pathlib.Path = TEMPLATE_FILE) -> np.ndarray:
    """The normalised mean shape [68, 2] float64 stored in a template file (see `canonical`)."""
    path = pathlib.Path(path)
    try:
        record = json.loads(path.read_text())
        points = np.asarray(record["mean_shape"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: not a readable face template ({type(e).__name__}: {e}); regenerate it with "
            "`python -m data.faces template` or reinstall the package"
        ) from e
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise DataError(f"{path}: mean_shape must be 68 finite (x, y) pairs; got shape {points.shape}")
    return points


# ----------------------------------------------------------------------------------------------
# Measuring the template on faces on hand


def _grid_shapes(analyzer: Any, grid_dir: pathlib.Path, every: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Landmarks of the largest face in every `every`-th frame of each GRID video, with counts per file."""
    from data.media import VIDEO_EXTENSIONS, _ffmpeg_reader

    shapes, used = [], {}
    for video in sorted(p for p in grid_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS):
        reader = _ffmpeg_reader(video)
        found = tried = 0
        try:
            for k, frame in enumerate(reader):
                if k % every:
                    continue
                tried += 1
                frame = np.ascontiguousarray(frame)
                box = analyzer.largest_face(frame)
                if box is not None:
                    shapes.append(analyzer.landmarks(frame, box))
                    found += 1
        finally:
            reader.close()
        used[video.name] = {"frames_tried": tried, "faces": found}
    return shapes, used


def _olivetti_shapes(analyzer: Any, mat: pathlib.Path, upscale: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Landmarks of the Olivetti faces (64 x 64 grey, upscaled) on which dlib's HOG detector finds a face."""
    import cv2
    import scipy.io

    faces = scipy.io.loadmat(mat)["faces"]
    shapes = []
    for column in faces.T:
        grey = np.asarray(column.reshape(64, 64, order="F"), dtype=np.uint8)
        big = cv2.resize(grey, (64 * upscale, 64 * upscale), interpolation=cv2.INTER_CUBIC)
        image = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=2))
        box = analyzer.largest_face(image)
        if box is not None:
            shapes.append(analyzer.landmarks(image, box) / upscale)
    return shapes, {"images_tried": int(faces.shape[1]), "faces": len(shapes), "upscale": upscale}


def build(shared: str | pathlib.Path, output: str | pathlib.Path = TEMPLATE_FILE, every: int = 3,
          olivetti_upscale: int = 4) -> dict[str, Any]:
    """Measure the canonical shape on ../shared/data's GRID videos and Olivetti faces and write it as JSON.

    Each face counts once; the GPA runs on all 68 points. Returns the record written.
    """
    from data.faces.dlib_models import FaceAnalyzer
    from data.provenance import package_versions

    shared = pathlib.Path(shared)
    grid_dir, mat = shared / "grid", shared / "olivetti" / "olivettifaces.mat"
    if not grid_dir.is_dir() or not mat.is_file():
        raise DataError(f"{shared}: needs grid/ (GRID videos) and olivetti/olivettifaces.mat; pass --shared DIR")
    analyzer = FaceAnalyzer()
    grid_shapes, grid_used = _grid_shapes(analyzer, grid_dir, every)
    olivetti_shapes, olivetti_used = _olivetti_shapes(analyzer, mat, olivetti_upscale)
    shapes = np.stack(grid_shapes + olivetti_shapes).astype(np.float64)
    mean = canonical(procrustes_mean(shapes))
    residual = [float(np.linalg.norm(_normalised(s) @ _rotation_onto(_normalised(s), _normalised(mean))
                                     - _normalised(mean))) for s in shapes]
    record = {
        "description": "Canonical 68-point face shape (iBUG order): the generalised Procrustes mean of dlib "
        "68-point landmarks, made upright and left-right symmetric; its landmark box is centred on (0, 0) "
        "with larger side 1 (x right, y down). Numbers only; no image is stored.",
        "mean_shape": np.round(mean, 8).tolist(),
        "faces": len(shapes),
        "built_from": {
            "grid": {"directory": "../shared/data/grid", "every": every, "files": grid_used},
            "olivetti": {"file": "../shared/data/olivetti/olivettifaces.mat", **olivetti_used},
        },
        "procrustes_residual": {"mean": float(np.mean(residual)), "max": float(np.max(residual)),
                                "unit": "Frobenius distance between unit-norm shapes"},
        "landmarker": "dlib shape_predictor_68_face_landmarks (face_recognition_models), HOG detector",
        "versions": package_versions("dlib-bin", "dlib", "face-recognition-models", "numpy"),
        "command": f"python -m data.faces template --shared {shared} --every {every}",
        "date": datetime.date.today().isoformat(),
    }
    output = pathlib.Path(output)
    with atomic_write(output) as tmp:
        tmp.write_text(_dumps(record))
    return record


def _dumps(record: dict[str, Any]) -> str:
    """The record as indented JSON with one landmark per line, so the file reads and diffs as a table."""
    placeholder = "@@mean_shape@@"
    text = json.dumps({**record, "mean_shape": placeholder}, indent=1)
    points = ",\n".join(f"  [{x:.8f}, {y:.8f}]" for x, y in record["mean_shape"])
    return text.replace(f'"{placeholder}"', "[\n" + points + "\n ]") + "\n"
