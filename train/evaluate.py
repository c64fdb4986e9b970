"""Unified evaluation: `python -m train.evaluate --workdir runs/x [--step N] [--metrics a,b] [--out DIR]`.

Reads the run's frozen config and a checkpoint, runs the family's evaluators over the whole
evaluation split, and writes `eval/<step>.json` and `eval/<step>.png`. The trainer's periodic
evaluation calls `run_metrics` too, so a number logged in training is the number this gives.
"""
from __future__ import annotations

import functools
import json
import pathlib
import time
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from data import pipeline, provenance
from train import cli, parallel
from train.families.base import Family
from zoo.errors import WorkdirError

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
) -> dict[str, float]:
    """Mean of each evaluator's per-example values over the source (or its first `num_examples`).

    Host evaluators (family.host_evaluators) run after the compiled ones and add their own means.
    """
    known = list(family.evaluators) + list(family.host_evaluators)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; this family has: {', '.join(known)}")
    host = [n for n in names if n in family.host_evaluators]
    names = [n for n in names if n in family.evaluators]
    runner = parallel.Runner.create("jit") if mesh is None else parallel.Runner("jit", mesh)
    key = eval_key(seed)
    fns = {name: _masked_sums(family.evaluators[name], runner) for name in names}
    extra: dict[str, float] = {}
    for name in host:
        extra |= family.host_evaluators[name](state, source, num_examples)
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


def write_preview(path: pathlib.Path, family: Family, state: Any, batch: dict, seed: int, meta: dict) -> None:
    """Render the family's preview rows to a PNG that carries provenance metadata.

    Images under 32 px (8x8 digits) are enlarged by an integer factor so the grid is legible.
    """
    images = jax.device_get(compiled(family.preview)(state, batch, eval_key(seed)))
    scale = max(1, 32 // images.shape[1])
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    provenance.save_png(path, provenance.grid(images, family.preview_columns), meta)


@functools.cache
def compiled(fn):
    """`jax.jit(fn)`, made once per function, so previews and sampling in periodic evaluation never retrace."""
    return jax.jit(fn)


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The frozen config a run wrote at start-up, over today's defaults.

    Fields added to the base config after the run was started take their defaults, so a workdir
    written by an older version still evaluates, exports and resumes.
    """
    from train import config as config_lib
    from train import families

    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir (python -m train --workdir ...)?")
    frozen = json.loads(path.read_text())
    config = config_lib.base_config()
    if frozen.get("family") in families.FAMILIES:
        config[frozen["family"]] = families.get(frozen["family"]).section()
    return config_lib.merge(config, frozen)


def evaluate(workdir: str | pathlib.Path, step: int | None = None, metrics: Sequence[str] = (),
             num_examples: int | None = None, out: str | pathlib.Path | None = None, *,
             echo: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint (the newest by default) and write <out>/<step>.{json,png} (out: workdir/eval).

    The output directory is checked before anything is computed, and with `echo` the JSON is
    printed before it is written, so no failure to write ever loses a report.
    """
    from train import trainer

    workdir = pathlib.Path(workdir)
    out = pathlib.Path(out) if out else workdir / "eval"
    cli.check_run_dir(workdir)
    cli.check_writable(out, "pass --out DIR to write the report elsewhere")
    setup, step, state = trainer.load_run(workdir, step)
    config = setup.config
    names = tuple(metrics) or tuple(config.eval.metrics) or setup.family.default_metrics
    start = time.time()
    results = run_metrics(
        setup.family, state, setup.eval_source, names=names, batch_size=config.eval.batch_size, seed=config.seed,
        num_examples=config.eval.num_examples if num_examples is None else num_examples,
    )
    report = {"step": step, "metrics": results, "seconds": time.time() - start,
              "protocol": {"source": setup.eval_spec, "metrics": list(names), "seed": config.seed}}
    if echo:
        print(json.dumps(report, indent=2), flush=True)
    if jax.process_index() == 0:
        _write_report(out, report, setup, state, workdir)
    return report


def _write_report(out: pathlib.Path, report: dict[str, Any], setup: Any, state: Any, workdir: pathlib.Path) -> None:
    """Write <out>/<step>.json and its preview PNG; an OS failure becomes a WorkdirError naming the directory."""
    config, step = setup.config, report["step"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{step}.json").write_text(json.dumps(report, indent=2))
        write_preview(out / f"{step}.png", setup.family, state, preview_batch(setup.eval_source), config.seed,
                      {"Model": config.model.name, "Run": str(workdir), "Step": step})
    except OSError as error:
        raise WorkdirError(f"cannot write the report to {out} ({error.strerror or error}); "
                           "pass --out DIR to write it elsewhere") from error


def main(argv: Sequence[str]) -> None:
    del argv
    cli.setup_logging()
    f = flags.FLAGS
    if not f.workdir:
        cli.fail("--workdir is required (the directory `python -m train` wrote)")
    evaluate(f.workdir, f.step, f.metrics, f.num_examples, f.out, echo=True)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
    flags.DEFINE_list("metrics", [], "Evaluators to run (default: the config's or the family's).")
    flags.DEFINE_integer("num_examples", None, "Evaluate on the first N examples only (default: the config's).")
    flags.DEFINE_string("out", None, "Directory for <step>.json and <step>.png (default: <workdir>/eval).")
    cli.run(main)
