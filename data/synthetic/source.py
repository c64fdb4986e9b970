"""The `SyntheticFaces` source and its "key=value;..." spec parser, so configs can name synthetic faces as data."""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from data.base import SourceInfo
from data.synthetic.params import Expression, Pose
from data.synthetic.render import face_masks, render, swap_ground_truth
from data.synthetic.sampling import identity, indexed_expression_pose
from zoo.errors import DataError


class SyntheticFaces:
    """A random-access source of rendered faces with labels and the parameters to re-render any swap.

    Example i of a split shows identity index i // num_per_identity (its "label", the position in
    `identities`), with an expression and pose hashed from (seed, split, i): the same for every
    run, chunking and process, and drawn independently for "train" and "test" ("all" is train
    followed by test). Each example is {"image": uint8 [size,size,3], "label": int64,
    "expression": float32 [4], "pose": float32 [7]} (vector orders: EXPRESSION_FIELDS, POSE_FIELDS).
    With `masks=True` it also holds "mask" (the face, `face_mask`) and "em_mask" (eyes and mouth,
    `eyes_mouth_mask`), each uint8 [size,size,1] with 255 = inside: what masked swap training needs.

    When every image fits in `cache_bytes` they are rendered a chunk at a time on first use and kept;
    otherwise each read renders just what it asks for (`gather` a whole batch in one vectorised pass).
    """

    def __init__(
        self,
        identities: Sequence[int],
        num_per_identity: int,
        size: int,
        seed: int = 0,
        split: str = "train",
        *,
        masks: bool = False,
        cache_bytes: int = 512 << 20,
    ):
        seeds = tuple(int(i) for i in identities)
        if not seeds:
            raise DataError("SyntheticFaces needs at least one identity seed")
        if len(set(seeds)) != len(seeds):
            raise DataError(f"identity seeds {seeds} repeat; each label must be a different person")
        if int(num_per_identity) < 1:
            raise DataError(f"num_per_identity={num_per_identity}; need at least 1 image per identity")
        if int(size) < 8:
            raise DataError(f"size={size} is too small to draw a face; use 32..256")
        if split not in ("train", "test", "all"):
            raise DataError(f"split {split!r} is not supported; use train, test or all")
        self.identity_seeds = seeds
        self.identities = tuple(identity(s) for s in seeds)
        self.num_per_identity = int(num_per_identity)
        self.size = int(size)
        self.seed = int(seed)
        self.split = split
        self.masks = bool(masks)
        self._per_split = len(seeds) * self.num_per_identity
        total = self._per_split * (2 if split == "all" else 1)
        self.info = SourceInfo(
            name="synthetic_faces", image_shape=(self.size, self.size, 3), num_classes=len(seeds), num_examples=total
        )
        self._cached = total * self.size * self.size * (5 if self.masks else 3) <= cache_bytes
        self._chunk = max(8, min(256, (4 << 20) // (self.size * self.size * 3)))
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.info.num_examples

    def __repr__(self) -> str:
        return (
            f"SyntheticFaces(ids={list(self.identity_seeds)}, n={self.num_per_identity}, size={self.size}, "
            f"seed={self.seed}, split={self.split!r}{', masks=True' if self.masks else ''})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the cache or lock, so worker processes start light and render their own."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _indices(self, indices: Any) -> np.ndarray:
        """Validated non-negative int64 indices (negative ones count from the end)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"index out of range for a source of {n} examples")
        return idx

    def labels(self, indices: Any) -> np.ndarray:
        """int64 identity positions of examples."""
        return (self._indices(indices) % self._per_split) // self.num_per_identity

    def expression_pose(self, indices: Any) -> tuple[Expression, Pose]:
        """The expression and pose of examples, for re-rendering them or their swaps."""
        idx = self._indices(indices)
        if self.split != "all":
            return indexed_expression_pose(self.seed, self.split, idx)
        is_test = idx >= self._per_split
        parts = [
            indexed_expression_pose(self.seed, s, idx[m] % self._per_split)
            for s, m in (("train", ~is_test), ("test", is_test))
        ]
        order = np.concatenate([np.flatnonzero(~is_test), np.flatnonzero(is_test)])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        e = Expression.concatenate([p[0] for p in parts])[inverse]
        q = Pose.concatenate([p[1] for p in parts])[inverse]
        return e, q

    def swap(self, indices: Any, label: int) -> np.ndarray:
        """uint8 [N,size,size,3]: identity `label` with the expressions and poses of examples `indices`."""
        return swap_ground_truth(self.identities[int(label)], self.expression_pose(indices), self.size)

    def _render(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Examples rendered now, as a batch."""
        e, q = self.expression_pose(idx)
        labels = self.labels(idx)
        people = [self.identities[k] for k in labels]
        out = {"image": render(people, e, q, self.size), "label": labels, "expression": e.vector(), "pose": q.vector()}
        if self.masks:
            face, regions = face_masks(people, e, q, self.size)
            out["mask"] = _to_uint8(face)[..., None]
            out["em_mask"] = _to_uint8(regions)[..., None]
        return out

    def _chunk_batch(self, c: int) -> dict[str, np.ndarray]:
        """Examples of chunk c, rendered once and kept (read-only)."""
        batch = self._cache.get(c)
        if batch is None:
            with self._lock:
                batch = self._cache.get(c)
                if batch is None:
                    start = c * self._chunk
                    batch = self._render(np.arange(start, min(start + self._chunk, len(self))))
                    for array in batch.values():
                        array.flags.writeable = False
                    self._cache[c] = batch
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self._indices([int(index)])[0])
        if not self._cached:
            return {k: v[0] for k, v in self._render(np.array([i])).items()}
        c, row = divmod(i, self._chunk)
        return {k: v[row].copy() for k, v in self._chunk_batch(c).items()}

    def gather(self, indices: Any) -> dict[str, np.ndarray]:
        """The examples at `indices` as one batch: the pipeline's fast path, one vectorised render for misses."""
        idx = self._indices(indices)
        if not self._cached:
            return self._render(idx)
        chunks, rows = np.divmod(idx, self._chunk)
        unique = np.unique(chunks)
        if len(unique) == 1:
            return {k: v[rows] for k, v in self._chunk_batch(int(unique[0])).items()}
        parts = {int(c): self._chunk_batch(int(c)) for c in unique}
        out = {k: np.empty((len(idx), *v.shape[1:]), v.dtype) for k, v in parts[int(unique[0])].items()}
        for c, batch in parts.items():
            where = np.flatnonzero(chunks == c)
            for k, v in batch.items():
                out[k][where] = v[rows[where]]
        return out


def _to_uint8(coverage: np.ndarray) -> np.ndarray:
    """[0, 1] coverage to uint8 0..255, rounded."""
    return np.rint(np.clip(coverage, 0.0, 1.0) * 255.0).astype(np.uint8)


_SPEC_DEFAULTS = {"ids": "0,1", "n": "1000", "size": "64", "seed": "0", "masks": "0"}
MAX_IDENTITIES = 1_000_000  # a spec past this is a typo, not a dataset: refused before a list is built


def _parse_ids(text: str) -> list[int]:
    """Identity seeds from "0,1,5" or ranges "0-9" (inclusive), mixed freely."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        if dash and lo.strip():
            a, b = int(lo), int(hi)
            if b < a:
                raise DataError(f"identity range {part!r} is empty; write low-high")
            if len(ids) + b - a + 1 > MAX_IDENTITIES:
                raise DataError(f"identity range {part!r} names over {MAX_IDENTITIES:,} people; use a smaller range")
            ids.extend(range(a, b + 1))
        else:
            ids.append(int(part))
    return ids


def spec_values(rest: str, defaults: dict[str, str], kind: str, example: str) -> dict[str, str]:
    """The "key=value;..." items of a `kind` spec over `defaults`, each key known, valued and set once."""
    values = dict(defaults)
    seen: set[str] = set()
    for item in filter(None, (s.strip() for s in rest.split(";"))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if key not in defaults:
            raise DataError(
                f"unknown key {key!r} in {kind} spec {rest!r}; valid keys: {', '.join(defaults)} (e.g. {example})"
            )
        if not eq or not value:
            raise DataError(f"{kind} spec {rest!r}: {key!r} needs a value, as in {key}={defaults[key]}")
        if key in seen:
            raise DataError(f"{kind} spec {rest!r} sets {key!r} twice")
        seen.add(key)
        values[key] = value
    return values


def from_spec(rest: str, split: str) -> SyntheticFaces:
    """A SyntheticFaces source from "key=value;..." text, so configs can name synthetic data as a string.

    Keys (all optional): ids = identity seeds, comma-separated, ranges allowed ("0,1", "0-9", "0-4,9"),
    default 0,1; n = images per identity (default 1000); size = image side in pixels (default 64);
    seed = expression/pose seed (default 0); masks = 1 to add face and eyes/mouth masks (default 0).
    Example: "ids=0-9;n=2000;size=128;seed=1;masks=1".
    """
    values = spec_values(rest, _SPEC_DEFAULTS, "synthetic_faces", "ids=0,1;n=1000;size=64;seed=0")
    try:
        ids = _parse_ids(values["ids"])
        n, size, seed, masks = (int(values[k]) for k in ("n", "size", "seed", "masks"))
    except ValueError as e:
        raise DataError(
            f"synthetic_faces spec {rest!r}: {e}; expected integers, e.g. ids=0-9;n=1000;size=64;seed=0"
        ) from e
    if masks not in (0, 1):
        raise DataError(f"synthetic_faces spec {rest!r}: masks must be 0 or 1, got {masks}")
    return SyntheticFaces(ids, n, size, seed, split, masks=bool(masks))
