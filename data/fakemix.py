"""Real images interleaved with fakes a pretrained model makes from them: detection data without an export step.

`fakemix:model=NAME;kinds=a2b,b2a;seed=0;size=32;n=5000@REAL_SPEC` reads the real source `REAL_SPEC`
(any spec `data.sources` knows; its first `n` examples, resized to `size` px when given, as a GAN's
samples must match the reals' size) and, once at construction, runs the pretrained model `NAME` (a
catalogue name or an export's path) over all of it. Example `g * (1 + K) + s` is real image `g` for slot s = 0 and its
fake of kind `kinds[s - 1]` for s >= 1, so every fake sits beside the real image it was made from
(as FaceForensics++ pairs each manipulated video with its original) and any split of the real source
splits the fakes the same way: identity-disjoint real splits give identity-disjoint fake sets.

`REAL_SPEC` may join several specs with " + " (spaces around the plus), e.g. the aligned faces of four
GRID speakers, one video each, or a swap model's own two people beside people it never saw. A part's
people keep their identity seeds where the part is synthetic; otherwise, with more than one part, a
part's position is its identity. Where every part's examples carry a `video` (aligned extractions),
each video's reals and each video's fakes of one kind form a video of their own for video-level metrics.

Each example carries `label` (1 = fake, 0 = real), `identity` (the real image's person: a synthetic
face's identity seed, another source's class label, the part's position, -1 when unknown; fakes keep
their source's), `generator` (0 = real, s = the kind in slot s) and `pair` (g). The fakes are computed in float32 on
the default device and rounded to uint8 like every image the zoo writes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from data import provenance, transforms
from data.base import SourceInfo, check_index
from zoo.errors import DataError

SPEC_FORMS = {
    "fakemix:model=<name|file>[;kinds=a,b][;seed=0][;size=px][;n=count]@<real spec>": "real images and the fakes a pretrained "
    "swap/GAN/VAE model makes from them, interleaved (label 1 = fake): detection data with no export step",
}
_KEYS = ("model", "kinds", "seed", "size", "n")


class FakeMix:
    """Real examples and their fakes, interleaved as `(1 + len(kinds))` consecutive examples per real image."""

    def __init__(self, parts: Sequence[Any], model: str, kinds: tuple[str, ...] = (), seed: int = 0,
                 batch_size: int = 128, limit: int = 0):
        from zoo import fake_makers, pretrained

        module, variables = pretrained.create(model)
        family = fake_makers.model_kind(module)
        kinds = tuple(kinds) or fake_makers.KINDS[family]
        read = [_read_all(part, limit) for part in parts]
        real_images = np.concatenate([r["image"] for r in read])
        part = np.concatenate([np.full(len(r["image"]), i) for i, r in enumerate(read)])
        identity = np.concatenate([r["identity"] if r["seeded"] or len(parts) == 1 else np.full(len(r["image"]), i)
                                   for i, r in enumerate(read)])
        real = parts[0]
        self.kinds, self.model = kinds, model
        fakes = [_make_all(fake_makers.fake_maker(module, variables, k), real_images, seed, slot, batch_size)
                 for slot, k in enumerate(kinds, start=1)]
        if fakes and fakes[0].shape[1:] != real_images.shape[1:]:
            raise DataError(f"fakemix: {model} makes {fakes[0].shape[1:]} images but the real source "
                            f"{real.info.name} holds {real_images.shape[1:]}; pick a real source of the model's size")
        per = 1 + len(kinds)
        self._images = np.stack([real_images, *fakes], axis=1).reshape(-1, *real_images.shape[1:])
        slots = np.tile(np.arange(per), len(real_images))
        self._fields = {"label": (slots > 0).astype(np.int64), "identity": np.repeat(identity, per),
                        "generator": slots.astype(np.int64), "pair": np.repeat(np.arange(len(real_images)), per)}
        if all("video" in r for r in read):
            clip = np.unique(np.stack([part, np.concatenate([r["video"] for r in read])], 1), axis=0,
                             return_inverse=True)[1].reshape(-1)
            self._fields["video"] = np.repeat(clip, per) * per + slots
        names = " + ".join(p.info.name for p in parts)
        self.info = SourceInfo(name=f"fakemix({model}:{','.join(kinds)}@{names})",
                               image_shape=tuple(int(d) for d in real_images.shape[1:]), num_classes=2,
                               num_examples=len(self._images))

    @property
    def generators(self) -> tuple[str, ...]:
        """Names of the `generator` ids: "real", then "<model>/<kind>" for each kind."""
        return ("real", *(f"{self.model}/{k}" for k in self.kinds))

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = check_index(index, len(self))
        return {"image": self._images[i].copy(), **{k: v[i] for k, v in self._fields.items()}}

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `indices` as one batch (the pipeline's fast path)."""
        indices = np.asarray(indices)
        return {"image": self._images[indices], **{k: v[indices] for k, v in self._fields.items()}}

    @property
    def fields(self) -> dict[str, np.ndarray]:
        """label, identity, generator, pair (and video) of every example, for splits and per-group metrics."""
        return dict(self._fields)

    def __repr__(self) -> str:
        return f"FakeMix({self.info})"


def from_spec(rest: str, split: str, get_source: Callable[[str, str], Any]) -> FakeMix:
    """A FakeMix from "model=...;kinds=...;seed=...@<real spec>", the real source read by `get_source(spec, split)`.

    The dispatcher passes its own `get_source`, so this module does not import the one that imports it.
    """
    options, at, real_spec = rest.partition("@")
    if not at or not real_spec:
        raise DataError(f"fakemix spec {rest!r} names no real source; write fakemix:model=NAME@<real spec>, "
                        "e.g. fakemix:model=swap_df_synthetic_narrow@synthetic_faces:ids=2-31;n=50")
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in options.split(";"))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if key not in _KEYS or not eq or not value or key in values:
            raise DataError(f"fakemix spec {options!r}: {item!r} is not one of {', '.join(k + '=...' for k in _KEYS)} "
                            "(each at most once)")
        values[key] = value
    if "model" not in values:
        raise DataError(f"fakemix spec {options!r} names no model; add model=<catalogue name or export file>")
    try:
        seed, size, limit = (int(values.get(k, 0)) for k in ("seed", "size", "n"))
    except ValueError as error:
        raise DataError(f"fakemix spec {options!r}: seed, size and n must be integers") from error
    kinds = tuple(k for k in values.get("kinds", "").split(",") if k)
    return _cached(values["model"], kinds, seed, size, limit, real_spec, split, get_source)


@functools.lru_cache(maxsize=4)
def _cached(model: str, kinds: tuple[str, ...], seed: int, size: int, limit: int, real_spec: str,
            split: str, get_source: Callable[[str, str], Any]) -> FakeMix:
    """One FakeMix per spec and split in a process: training and evaluation set-up ask for the same one."""
    parts = [get_source(spec.strip(), split) for spec in real_spec.split(" + ")]
    try:
        return FakeMix([transforms.Resized(p, size) if size else p for p in parts], model, kinds, seed, limit=limit)
    except ValueError as error:
        raise DataError(f"fakemix:model={model}: {error}") from error


def _read_all(real: Any, limit: int) -> dict[str, Any]:
    """The first `limit` (0 = all) real images (uint8), each one's identity (-1 when the source has none), whether
    that identity is a synthetic person's seed, and their video ids where the source has them."""
    n = min(limit or len(real), len(real))
    if hasattr(real, "gather"):
        batch = real.gather(np.arange(n))
    else:
        examples = [real[i] for i in range(n)]
        batch = {k: np.stack([e[k] for e in examples]) for k in ("image", "label", "video") if k in examples[0]}
    images = batch["image"]
    labels = np.asarray(batch.get("label", np.full(len(images), -1)), np.int64)
    seeds = getattr(real, "identity_seeds", None)
    identity = np.asarray(seeds, np.int64)[labels] if seeds is not None else labels
    out = {"image": images, "identity": identity, "seeded": seeds is not None}
    if "video" in batch:
        out["video"] = np.asarray(batch["video"], np.int64)
    return out


def _make_all(maker: Any, images: np.ndarray, seed: int, slot: int, batch_size: int) -> np.ndarray:
    """uint8 fakes of every image, batch by batch; example g's key is fold_in(fold_in(key(seed), slot), g)."""
    base = jax.random.fold_in(jax.random.key(seed), slot)
    run = jax.jit(lambda x, idx: maker(x.astype(np.float32) / 255.0,
                                       jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)))
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk) if len(images) > batch_size else 0
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        fake = np.asarray(run(padded, np.arange(start, start + len(padded))))[:len(chunk)]
        out.append(provenance.to_uint8(fake))
    return np.concatenate(out)
