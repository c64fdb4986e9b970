"""Face-swap metrics on face embeddings and landmarks: identity similarity, ID retrieval, expression error.

Inputs are arrays already extracted on the host (e.g. by `data.faces.dlib_models.FaceAnalyzer`), so
this module needs numpy only. A swap should carry the target's identity and the source frame's
expression: identity is scored by cosine similarity and L2 distance of 128-D embeddings (dlib's
same-person threshold is L2 < 0.6), expression by the distance between the eye and mouth landmarks
of the source frame and the swap, in units of the source's inter-ocular distance.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EYES = np.arange(36, 48)
MOUTH = np.arange(48, 68)
EXPRESSION_POINTS = np.concatenate([EYES, MOUTH])
OUTER_EYE_CORNERS = (36, 45)


def _rows(x: ArrayLike, name: str) -> np.ndarray:
    """x as float64 with at least one axis, so a single vector and a batch of rows both broadcast."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"{name} must be a vector [D] or rows [N, D]; got shape {arr.shape}")
    return arr


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine similarity of matching rows of a and b ([N, D] or [D], broadcast), in [-1, 1]."""
    x, y = _rows(a, "a"), _rows(b, "b")
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    if np.any(nx == 0) or np.any(ny == 0):
        raise ValueError("cosine similarity is undefined for a zero vector")
    return np.sum(x * y, axis=-1) / (nx * ny)


def l2_distance(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Euclidean distance of matching rows of a and b ([N, D] or [D], broadcast)."""
    return np.linalg.norm(_rows(a, "a") - _rows(b, "b"), axis=-1)


def identity_scores(swap_emb: ArrayLike, target_ref: ArrayLike, source_ref: ArrayLike) -> dict[str, float]:
    """How much a batch of swaps looks like the target identity rather than the source one.

    swap_emb is [N, D]; each reference is one embedding [D] shared by all swaps or one per swap
    [N, D]. Returns the mean cosine and mean L2 to each reference and `closer_to_target`, the
    fraction of swaps strictly nearer (L2) to the target than to the source: 1.0 when the swap
    took the target's identity, 0.0 when it kept the source's.
    """
    swaps = _rows(swap_emb, "swap_emb")
    if swaps.ndim != 2:
        raise ValueError(f"swap_emb must be [N, D]; got shape {swaps.shape}")
    refs = {"target": _rows(target_ref, "target_ref"), "source": _rows(source_ref, "source_ref")}
    for name, ref in refs.items():
        if ref.shape not in ((swaps.shape[1],), swaps.shape):
            raise ValueError(f"{name}_ref must be [{swaps.shape[1]}] or {list(swaps.shape)}; got {list(ref.shape)}")
    l2 = {name: l2_distance(swaps, ref) for name, ref in refs.items()}
    scores = {}
    for name, ref in refs.items():
        scores[f"{name}_cosine"] = float(np.mean(cosine_similarity(swaps, ref)))
        scores[f"{name}_l2"] = float(np.mean(l2[name]))
    scores["closer_to_target"] = float(np.mean(l2["target"] < l2["source"]))
    return scores


def retrieval_accuracy(
    query_emb: ArrayLike, query_labels: ArrayLike, gallery_emb: ArrayLike, gallery_labels: ArrayLike
) -> float:
    """Fraction of queries whose nearest gallery identity (L2 to the class centroid) is their own label.

    Centroids (the mean gallery embedding per label) weigh every identity equally however many
    gallery images it has. Every query label must occur in the gallery: one that cannot be
    retrieved is a set-up error, not a miss.
    """
    queries, gallery = _rows(query_emb, "query_emb"), _rows(gallery_emb, "gallery_emb")
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"need [N, D] queries and [M, D] gallery with the same D; got {queries.shape}, {gallery.shape}")
    if q_labels.shape != (len(queries),) or g_labels.shape != (len(gallery),):
        raise ValueError(
            f"need one label per row: {q_labels.shape} labels for {len(queries)} queries, "
            f"{g_labels.shape} for {len(gallery)} gallery rows"
        )
    if len(queries) == 0:
        raise ValueError("no queries")
    classes, members = np.unique(g_labels, return_inverse=True)
    unknown = np.setdiff1d(q_labels, classes)
    if unknown.size:
        raise ValueError(f"query labels {unknown.tolist()} have no gallery embeddings")
    centroids = np.stack([gallery[members == k].mean(axis=0) for k in range(len(classes))])
    distances = np.linalg.norm(queries[:, None, :] - centroids[None, :, :], axis=-1)
    return float(np.mean(classes[np.argmin(distances, axis=1)] == q_labels))


def expression_error(landmarks_src: ArrayLike, landmarks_swap: ArrayLike, *, center: bool = True) -> np.ndarray:
    """Per-face expression error [N]: mean eye-and-mouth landmark distance over the source's inter-ocular distance.

    Takes 68-point iBUG landmarks [N, 68, 2] (or one face [68, 2]) of each source frame and its swap.
    Only the eyes (36-47) and mouth (48-67) are compared, as they carry most of the expression.
    With center=True (the default) each face's 32 points are first shifted to their own mean, so a
    swap that reproduces the expression but sits a few pixels off (crop offset, blending drift)
    scores 0; rotation and scale are kept, as a swap should match the source's pose and size.
    Dividing by the distance between the source's outer eye corners (36 and 45) makes the number
    independent of face size: 0.05 is 5% of the eye span.
    """
    src, swap = np.asarray(landmarks_src, dtype=np.float64), np.asarray(landmarks_swap, dtype=np.float64)
    if src.shape != swap.shape:
        raise ValueError(f"landmark arrays differ in shape: {src.shape} vs {swap.shape}")
    if src.ndim == 2:
        src, swap = src[None], swap[None]
    if src.ndim != 3 or src.shape[1:] != (68, 2):
        raise ValueError(f"need 68-point landmarks [N, 68, 2] or [68, 2]; got {np.shape(landmarks_src)}")
    inter_ocular = np.linalg.norm(src[:, OUTER_EYE_CORNERS[0]] - src[:, OUTER_EYE_CORNERS[1]], axis=-1)
    if np.any(inter_ocular <= 0):
        raise ValueError(f"source faces {np.flatnonzero(inter_ocular <= 0).tolist()} have coincident outer eye corners")
    a, b = src[:, EXPRESSION_POINTS], swap[:, EXPRESSION_POINTS]
    if center:
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
    return np.linalg.norm(a - b, axis=-1).mean(axis=1) / inter_ocular
