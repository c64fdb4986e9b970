"""dlib's face models behind one object: HOG detection, 68-point landmarks and 128-D identity embeddings.

The models are the ones `face_recognition_models` ships (no download): the HOG frontal detector
built into dlib, the 68-point and 5-point shape predictors, and the ResNet face-recognition model
whose embeddings lie within L2 0.6 of each other for the same person (dlib's documented threshold).
dlib and the model package are an optional extra, imported only when a `FaceAnalyzer` is built:

    pip install -e '.[faces]'

Images are RGB uint8 H x W x 3 C-contiguous numpy arrays, the only layout dlib's Python binding
reads without a copy or a silent misinterpretation; anything else is refused with a message saying
how to convert. Boxes are (left, top, right, bottom) in pixels, inclusive, as dlib's rectangles are;
a detected box may reach past the image border.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

INSTALL_HINT = "pip install -e '.[faces]'  (dlib-bin + face-recognition-models; the models ship offline)"
EMBEDDING_DIM = 128
NUM_LANDMARKS = 68


class DlibModels(NamedTuple):
    """The loaded dlib objects, shared by every analyzer in the process."""

    detector: Any
    landmarks68: Any
    landmarks5: Any
    encoder: Any


def _import_dlib() -> tuple[Any, Any]:
    """dlib and face_recognition_models, or an ImportError that says how to install them."""
    try:
        import dlib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its pkg_resources import warns about sys.path and itself
            import face_recognition_models
    except ImportError as e:
        raise ImportError(
            f"face analysis needs dlib and face_recognition_models, which are not importable ({e}): {INSTALL_HINT}"
        ) from e
    return dlib, face_recognition_models


@functools.cache
def load_models() -> DlibModels:
    """The detector, both shape predictors and the embedding network, read from disk once per process."""
    dlib, models = _import_dlib()
    return DlibModels(
        detector=dlib.get_frontal_face_detector(),
        landmarks68=dlib.shape_predictor(models.pose_predictor_model_location()),
        landmarks5=dlib.shape_predictor(models.pose_predictor_five_point_model_location()),
        encoder=dlib.face_recognition_model_v1(models.face_recognition_model_location()),
    )


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """The image itself if it is RGB uint8 H x W x 3 C-contiguous, else a ValueError saying how to fix it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (RGB uint8 H x W x 3); got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be RGB H x W x 3; got shape {image.shape} (replicate grayscale to 3 channels)")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 in 0..255; got {image.dtype} (e.g. np.clip(x * 255, 0, 255).astype(np.uint8))"
        )
    if not image.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (a crop or flip is a view); pass np.ascontiguousarray({name})")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


@functools.cache
def load_cnn_detector() -> Any:
    """dlib's CNN (MMOD) face detector from face_recognition_models, read once per process."""
    dlib, models = _import_dlib()
    return dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())


DETECTORS = ("hog", "cnn")


class FaceAnalyzer:
    """Detects faces, places 68 landmarks and computes identity embeddings with dlib's shipped models.

    detector="hog" (default) is dlib's HOG frontal detector; "cnn" is its MMOD CNN detector, which finds
    rotated, profile and poorly lit faces HOG misses, at 20-60x the CPU time (a 360x288 GRID frame here:
    0.6 s without upsampling and 2.5 s with one doubling, against HOG's 0.03 s).
    """

    def __init__(self, detector: str = "hog") -> None:
        """Load (or reuse) the models; raises ImportError with the install command when dlib is missing."""
        if detector not in DETECTORS:
            raise ValueError(f"detector {detector!r} is not one of {', '.join(DETECTORS)}")
        self._models = load_models()
        self._dlib, _ = _import_dlib()
        self.detector = detector
        self._cnn = load_cnn_detector() if detector == "cnn" else None

    def _rectangle(self, image: np.ndarray, box: ArrayLike | None) -> Any:
        """A dlib rectangle for the box, or for the whole image when box is None."""
        if box is None:
            return self._dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        values = np.asarray(box, dtype=np.float64).reshape(-1)
        if values.shape != (4,) or not np.all(np.isfinite(values)):
            raise ValueError(f"box must be 4 finite numbers (left, top, right, bottom); got {box!r}")
        left, top, right, bottom = (int(round(v)) for v in values)
        if right <= left or bottom <= top:
            raise ValueError(f"box must have left < right and top < bottom; got {(left, top, right, bottom)}")
        return self._dlib.rectangle(left, top, right, bottom)

    def detect(self, image: np.ndarray, upsample: int = 1) -> np.ndarray:
        """Boxes [K, 4] int64 (left, top, right, bottom) of the faces the detector finds.

        upsample doubles the image that many times first, so faces under ~80 px are found at a cost in time.
        """
        check_image(image)
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0; got {upsample}")
        if self._cnn is not None:
            found = [d.rect for d in self._cnn(image, int(upsample))]
        else:
            found = self._models.detector(image, int(upsample))
        return np.array([(r.left(), r.top(), r.right(), r.bottom()) for r in found], dtype=np.int64).reshape(-1, 4)

    def largest_face(self, image: np.ndarray, upsample: int = 1) -> np.ndarray | None:
        """The box [4] of the largest detected face, or None, for frames that should hold one subject."""
        boxes = self.detect(image, upsample)
        if len(boxes) == 0:
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(areas))]

    def landmarks(self, image: np.ndarray, box: ArrayLike | None = None) -> np.ndarray:
        """The 68 iBUG landmarks as float32 [68, 2] (x, y) pixels of the face in box.

        box=None uses the whole image as the face box, for crops already aligned around one face.
        The predictor was trained on HOG-detector boxes, so such a crop should frame the face about
        as tightly as `detect` does (roughly brow to chin); a loose crop shifts the points.
        """
        check_image(image)
        shape = self._models.landmarks68(image, self._rectangle(image, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def embedding(self, image: np.ndarray, box: ArrayLike | None = None, jitter: int = 0) -> np.ndarray:
        """The 128-D float32 identity embedding of the face in box (the whole image when None).

        The 5-point predictor places eyes and nose, dlib aligns a 150 x 150 chip from them and the
        ResNet embeds it. jitter > 0 averages over that many randomly perturbed chips: steadier, slower.
        """
        check_image(image)
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0; got {jitter}")
        shape = self._models.landmarks5(image, self._rectangle(image, box))
        descriptor = self._models.encoder.compute_face_descriptor(image, shape, int(jitter))
        return np.asarray(descriptor, dtype=np.float32)

    def embeddings(
        self, images: Sequence[np.ndarray], boxes: Sequence[ArrayLike | None] | None = None, jitter: int = 0
    ) -> np.ndarray:
        """Embeddings [N, 128] float32 of one face per image; boxes None means each whole image."""
        if boxes is None:
            boxes = [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"need one box per image; got {len(boxes)} boxes for {len(images)} images")
        out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
        for i, (image, box) in enumerate(zip(images, boxes)):
            check_image(image, f"images[{i}]")
            out[i] = self.embedding(image, box, jitter)
        return out
