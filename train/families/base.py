"""The contract between a family (VAE, GAN, swap, ...) and the generic trainer.

A family is pure functions over one pytree `State = {"step", "params": {net: ...},
"opt_state": {net: ...}, ...extras}`. It never touches devices, files or Python state: the
trainer compiles its steps, feeds batches, and calls its previews and evaluators.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

State = dict[str, Any]
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Step:
    """A named update `fn(state, batch, rng) -> (state, metrics)` run every `every` steps.

    Its metrics are logged as `<prefix><metric>`; `prefix` None means `<step name>/`. A family's
    main step sets "" so its loss reads `train/loss` whatever other steps a config switches on.
    """

    fn: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
    every: int = 1
    prefix: str | None = None


@dataclasses.dataclass(frozen=True)
class Export:
    """What `zoo.pretrained` needs to rebuild a model: its registry name, fields, params and state.

    `collections` holds the non-param variables inference needs (batch-norm "batch_stats").
    """

    model: str
    model_config: dict[str, Any]
    params: Any
    collections: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Family:
    """One family, bound to a config and a dataset's image shape.

    init: (rng, example_batch) -> State.
    steps: named updates in the order they run within one training step.
    preview: (state, batch, rng) -> images [N, H, W, C] in [0, 1], rows of `preview_columns`.
    evaluators: name -> (state, batch, rng) -> {metric: per-example values [B]}; the driver
      averages them over the real (unpadded) examples, so a metric is exact over a whole split.
    default_metrics: the evaluators `train.evaluate` runs when none are asked for.
    export: State -> Export, the params-only form that pretrained weights are made of.
    train_transforms: (source_a, source_b) -> (transform of A's examples, of B's), run in the input
      pipeline's workers before batching (e.g. face-swap warps); None trains on raw examples.
    host_evaluators: name -> (state, source, num_examples) -> {metric: mean}, for metrics computed
      by host libraries (dlib face embeddings) on the first `num_examples` (0 = all) of the split.
    generate: (state, evaluation batch, rng) -> {kind: images [B, H, W, C] in [0, 1]}, the outputs a fake
      set holds (`python -m train.generate`): "a2b"/"b2a" swaps, "sample", "reconstruction"; noise is
      keyed by each row's "index", so a seed gives the same images whatever the batch size. None: the
      family makes no fakes.
    export_metadata: (state, evaluation source, its spec) -> entries `train.export` adds to the export's
      metadata, for what is measured on held-out data rather than learnt (a detector's pinned threshold,
      `train.metrics.detectability.pin`); None adds nothing.
    """

    init: Callable[[jax.Array, Batch], State]
    steps: Mapping[str, Step]
    preview: Callable[[State, Batch, jax.Array], jax.Array]
    preview_columns: int
    evaluators: Mapping[str, Callable[[State, Batch, jax.Array], Metrics]]
    default_metrics: tuple[str, ...]
    export: Callable[[State], Export]
    train_transforms: Callable[[Any, Any], tuple[Any, Any]] | None = None
    host_evaluators: Mapping[str, Callable[[State, Any, int], dict[str, float]]] = dataclasses.field(
        default_factory=dict)
    generate: Callable[[State, Batch, jax.Array], dict[str, jax.Array]] | None = None
    export_metadata: Callable[[State, Any, str], dict[str, Any]] | None = None
