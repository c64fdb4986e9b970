"""Batches from a source, deterministic by seed and identical however many processes read them.

Contract relied on by multi-host training: with global batch size G and P processes, process p's
batch k is rows [p*G/P, (p+1)*G/P) of the single-process global batch k. The pipeline shuffles the
whole repeated stream by seed (a fresh permutation per epoch, batches may span an epoch boundary),
batches it by the local size G/P, and process p takes local batches p, p+P, p+2P, ... Everything
before batching is index-addressed (grain MapDataset), so iterator state is one position and
resuming from it replays exactly the remaining batches.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import grain
import numpy as np

from data.base import Source

VALID = "_mask"  # eval_batches' flag of real (unpadded) rows

Example = dict[str, Any]
Batch = dict[str, np.ndarray]
Transform = Callable[[Example], Example] | grain.transforms.RandomMap

READ_OPTIONS = grain.ReadOptions(num_threads=8, prefetch_buffer_size=16)


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    """Per-process batch size, refusing layouts where processes would get unequal shares."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} is not in [0, process_count={process_count}); "
            "pass jax.process_index() and jax.process_count()"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a positive multiple of process_count={process_count}; "
            "choose a global batch size divisible by the number of processes"
        )
    return global_batch_size // process_count


def make_dataset(
    source: Source,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    transform: Transform | None = None,
    worker_count: int = 0,
    start: int = 0,
) -> grain.IterDataset:
    """This process's training batches (leading dim global_batch_size // process_count), per the module contract.

    `num_epochs=None` repeats forever. `transform` runs per example before batching (in the workers
    when `worker_count > 0`); a `grain.transforms.RandomMap` gets an rng seeded by `seed` and the
    example's position in the global stream, so augmentation is reproducible and process-count
    independent. `iter()` of the result is checkpointable (`get_state`/`set_state`, grain.checkpoint).
    Without a transform, a source with `gather(indices)` (in-memory arrays) is read a whole batch
    at a time: the same examples in the same order, without a Python call per example. `start`
    skips the stream's first batches without reading them: a resume that cannot use a saved
    iterator state (another worker count) starts where the run left off.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    if not drop_remainder and num_epochs is not None and process_count > 1:
        raise ValueError(
            "drop_remainder=False with num_epochs set and process_count > 1 would give processes unequal final "
            "batches; use drop_remainder=True for training, or eval_batches() for an exact pass"
        )
    ds = _process_batches(source, local, seed, process_index, process_count, shuffle=shuffle, num_epochs=num_epochs,
                          drop_remainder=drop_remainder, transform=transform)
    return _iterable(ds, worker_count, start)


def make_pair_dataset(
    source_a: Source,
    source_b: Source,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    transform: Transform | None = None,
    transform_b: Transform | None = None,
    worker_count: int = 0,
    start: int = 0,
) -> grain.IterDataset:
    """Face-swap batches `{"a": batch of A, "b": batch of B}`: both identities in every step.

    Each side is an endless, independently shuffled stream (seeds derived from `seed`), batched
    and split across processes exactly as `make_dataset`; step k pairs batch k of each. `transform`
    runs on A's examples and on B's too unless `transform_b` is given (DeepFaceLab recolours only
    src). The iterator is checkpointable like `make_dataset`'s, and `start` skips batches as there.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    seed_a, seed_b = (int(s) for s in np.random.SeedSequence(seed).generate_state(2, np.uint32))
    a = _process_batches(source_a, local, seed_a, process_index, process_count, transform=transform)
    b = _process_batches(source_b, local, seed_b, process_index, process_count,
                         transform=transform if transform_b is None else transform_b)
    pairs = grain.MapDataset.range(min(len(a), len(b))).map(_Pair(a, b))
    return _iterable(pairs, worker_count, start)


class _Pair:
    """Step k -> {"a": a[k], "b": b[k]}; a class, not a closure, so worker processes can pickle it."""

    def __init__(self, a: grain.MapDataset, b: grain.MapDataset) -> None:
        self.a, self.b = a, b

    def __call__(self, k: int) -> dict[str, Batch]:
        return {"a": self.a[k], "b": self.b[k]}


def _process_batches(
    source: Source,
    local: int,
    seed: int,
    process_index: int,
    process_count: int,
    *,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    transform: Transform | None = None,
) -> grain.MapDataset:
    """Shuffled, repeated, batched by the local size, and this process's every P-th batch."""
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed} is negative or too large; pass a seed in [0, 2**63)")
    if len(source) == 0:
        raise ValueError(f"source {getattr(source, 'info', source)} is empty; check the data spec and split")
    gather = getattr(source, "gather", None) if transform is None else None
    ds = (grain.MapDataset.range(len(source)) if gather else grain.MapDataset.source(source)).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    if isinstance(transform, grain.transforms.RandomMap):
        ds = ds.random_map(transform)
    elif transform is not None:
        ds = ds.map(transform)
    ds = ds.batch(local, drop_remainder=drop_remainder)
    if gather:
        ds = ds.map(gather)
    if process_count > 1:
        ds = ds[: len(ds) // process_count * process_count][process_index::process_count]
    return ds


def _iterable(ds: grain.MapDataset, worker_count: int, start: int = 0) -> grain.IterDataset:
    out = (ds[start:] if start else ds).to_iter_dataset(READ_OPTIONS)
    if worker_count > 0:
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return out


def eval_batches(
    source: Source,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    transform: Callable[[Example], Example] | None = None,
    limit: int | None = None,
) -> Iterator[Batch]:
    """One ordered pass over every example with no drop, for exact metrics on whole test sets.

    `batch_size` is global: each process gets rows [p*B/P, (p+1)*B/P) of every global batch, so all
    processes yield the same number of batches, ceil(n / batch_size) for n = min(len(source), limit).
    Padding rows (after the last example) are zeros with `VALID` ("_mask", big_vision's name: never a
    data field such as a face mask) False; real rows have it True.
    `"index"` holds each row's position in the source, so per-example randomness can be keyed by it.
    """
    local = _local_batch_size(batch_size, process_index, process_count)
    n = len(source) if limit is None else min(limit, len(source))
    if n == 0:
        return
    template = _apply(source[0], transform)
    padding = {k: np.zeros_like(v) for k, v in template.items()}
    for start in range(0, n, batch_size):
        first = start + process_index * local
        rows = [_apply(source[i], transform) if i < n else padding for i in range(first, first + local)]
        batch = {k: np.stack([r[k] for r in rows]) for k in template}
        batch["index"] = np.arange(first, first + local)
        batch[VALID] = batch["index"] < n
        yield batch


def _apply(example: Example, transform: Callable[[Example], Example] | None) -> Example:
    """The example after the optional deterministic transform."""
    return example if transform is None else transform(example)
