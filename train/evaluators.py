"""The metric driver and previews: what periodic evaluation in training and `train.evaluate` share.

`run_metrics` averages a family's per-example evaluators over a whole split (padding rows masked
out), then adds its host evaluators; `write_preview` renders the family's preview grid with
provenance. Both draw noise from `eval_key(seed)`, so a number logged in training is the number
the evaluation script gives.
"""
from __future__ import annotations

import functools
import pathlib
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import pipeline, provenance
from train import parallel
from train.families.base import Family
from train.metrics import detectability
from zoo.errors import ConfigError

EVAL_TAG = 0x6576616C  # "eval": keeps evaluation noise apart from training's fold_in(root, step)


def eval_key(seed: int) -> jax.Array:
    """The fixed key evaluators draw from: the same in training and in this script."""
    return jax.random.fold_in(jax.random.key(seed), EVAL_TAG)


def run_metrics(
    family: Family,
    state: Any,
    source: Any,
    *,
    names: Sequence[str],
    batch_size: int,
    seed: int,
    num_examples: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    detector: str = "",
) -> dict[str, float]:
    """Mean of each evaluator's per-example values over the source (or its first `num_examples`).

    `names` go through `metric_names`: comma lists split, unknown names a ConfigError, none the family's defaults.

    Host evaluators (family.host_evaluators) run after the compiled ones and add their own means. The
    driver's own metrics serve every family they apply to: `detectability` (any family with `generate`)
    scores the family's fakes with the pinned `detector` (the config's eval.detector).
    """
    driver = driver_metrics(family)
    names = metric_names(family, names)
    host = [n for n in names if n in family.host_evaluators]
    own = [n for n in names if n in driver and n not in host]
    names = [n for n in names if n in family.evaluators]
    runner = parallel.Runner.create("jit") if mesh is None else parallel.Runner("jit", mesh)
    key = eval_key(seed)
    fns = {name: _masked_sums(family.evaluators[name], runner) for name in names}
    extra: dict[str, float] = {}
    for name in host:
        extra |= family.host_evaluators[name](state, source, num_examples)
    if detectability.NAME in own:
        extra |= detectability.evaluate(compiled(family.generate), state, source, detector=detector,
                                        batch_size=batch_size, key=key, seed=seed, num_examples=num_examples)
    if not names:
        return extra
    totals: dict[str, float] = {}
    count = 0.0
    limit = num_examples or len(source)
    for batch in pipeline.eval_batches(
        source, batch_size, limit=limit, process_index=jax.process_index(), process_count=jax.process_count()
    ):
        device_batch = runner.put_batch(batch)
        for name, fn in fns.items():
            sums = jax.device_get(fn(state, device_batch, jax.random.fold_in(key, _tag(name))))
            count_here = float(sums.pop("_count"))
            for metric, value in sums.items():
                totals[metric] = totals.get(metric, 0.0) + float(value)
        count += count_here
    return {metric: value / count for metric, value in totals.items()} | {"num_examples": int(count)} | extra


def metric_names(family: Family, names: Sequence[str]) -> tuple[str, ...]:
    """`names` checked against what `family` measures, or its default metrics when there are none.

    An item holding a comma list is split: absl gives `--config.eval.metrics=recon,reenact` to the config
    as the one word 'recon,reenact'. `runs.build` calls this, so a bad name ends a run before training.
    """
    names = tuple(part.strip() for name in names for part in str(name).split(",") if part.strip())
    known = list(family.evaluators) + list(family.host_evaluators) + driver_metrics(family)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; this family has: {', '.join(known)} (--metrics a,b or "
                          "eval.metrics in the config)")
    return names or tuple(family.default_metrics)


def driver_metrics(family: Family) -> list[str]:
    """The metrics the driver computes for `family` itself, beside the family's own evaluators."""
    return [detectability.NAME] if getattr(family, "generate", None) is not None else []


def _tag(name: str) -> int:
    """A stable per-evaluator key offset, so a metric's noise does not depend on which others run."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@functools.cache
def _masked_sums(fn, runner: parallel.Runner):
    """Compiled once per (evaluator, mesh): periodic evaluation in training does not retrace."""
    def sums(state, batch, rng):
        mask = batch[pipeline.VALID].astype(jnp.float32)
        values = fn(state, batch, rng)
        out = {k: jnp.sum(jnp.where(mask > 0, v, 0.0)) for k, v in values.items()}
        return out | {"_count": jnp.sum(mask)}

    return jax.jit(sums, in_shardings=(runner.replicated, runner.batch_sharding, runner.replicated),
                   out_shardings=runner.replicated)


def preview_batch(source: Any, n: int = 16) -> dict[str, np.ndarray]:
    """The first n examples of a source as one batch: fixed, so previews are comparable over time."""
    examples = [source[i] for i in range(min(n, len(source)))]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def write_preview(path: pathlib.Path, family: Family, state: Any, batch: dict, seed: int, meta: dict) -> np.ndarray:
    """Render the family's preview rows to a PNG that carries provenance metadata; return the HxWxC uint8 grid.

    Images under 32 px (8x8 digits) are enlarged by an integer factor so the grid is legible. The
    grid is returned so the caller can log the very pixels of the PNG elsewhere (TensorBoard). Every
    process renders (the state spans them all); process 0 alone writes the file.
    """
    images = jax.device_get(compiled(family.preview)(state, batch, eval_key(seed)))
    scale = max(1, 32 // images.shape[1])
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = provenance.png_pixels(provenance.grid(images, family.preview_columns))  # watermarked, as the PNG
    if jax.process_index() == 0:
        provenance.save_png(path, grid, meta)
    return grid


@functools.cache
def compiled(fn):
    """`jax.jit(fn)`, made once per function, so previews and sampling in periodic evaluation never retrace."""
    return jax.jit(fn)
