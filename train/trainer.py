"""The one training loop every family runs through.

build: config -> family, data, abstract state. train: init or restore, compile each named step
once, then loop: next batch, run the due steps, log the previous step's metrics (fetched one step
late so the host never waits on the device), preview, evaluate and checkpoint on their intervals.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from data import pairs, pipeline, provenance, sources, transforms
from train import checkpoint, families, parallel
from train import config as config_lib
from train import evaluate as evaluate_lib
from train.families.base import Family
from train.writers import MetricWriter
from zoo.errors import CheckpointError, WorkdirError

log = logging.getLogger(__name__)

Hook = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything derived from a config before any device work: what train and evaluate share."""

    config: ml_collections.ConfigDict
    family: Family
    train_source: Any
    eval_source: Any
    eval_spec: str
    runner: parallel.Runner
    abstract_state: Any
    root_key: jax.Array
    init_args: tuple[jax.Array, Any]


def build(config: ml_collections.ConfigDict) -> Setup:
    """Validate the config and construct family, sources and the (abstract) state layout."""
    family_module = families.get(config.family)
    config_lib.validate(config, family_module.section())
    d = config.data
    eval_spec = d.eval_source or d.source
    train_source = _source(d.source, d.train_split, d.resolution)
    eval_source = _source(eval_spec, d.eval_split, d.resolution)
    if d.source_b:
        eval_spec_b = d.eval_source_b or d.source_b
        train_source = pairs.PairedSource(train_source, _source(d.source_b, d.train_split, d.resolution))
        eval_source = pairs.PairedSource(eval_source, _source(eval_spec_b, d.eval_split, d.resolution))
        eval_spec = f"{eval_spec}|{eval_spec_b}"
    family = family_module.make(config, train_source.info.image_shape)
    runner = parallel.Runner.create(config.parallel.strategy, config.parallel.num_devices)
    root_key = jax.random.key(config.seed)
    init_args = (jax.random.fold_in(root_key, 0x696E6974), evaluate_lib.preview_batch(train_source, 1))
    abstract = jax.eval_shape(family.init, *init_args)
    shardings = runner.state_shardings(abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return Setup(config, family, train_source, eval_source, f"{eval_spec}:{config.data.eval_split}", runner,
                 abstract, root_key, init_args)


def _source(spec: str, split: str, resolution: int) -> Any:
    """The named source, viewed at `resolution` when it is set."""
    source = sources.get_source(spec, split)
    return transforms.Resized(source, resolution) if resolution else source


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> tuple[Setup, int, Any]:
    """A finished or running workdir's setup, checkpoint step (newest by default) and state."""
    from train import cli

    workdir = pathlib.Path(workdir)
    cli.check_run_dir(workdir)
    no_checkpoint = f"no complete checkpoint in {workdir / 'checkpoints'}; train until the first one is saved"
    if not (workdir / "checkpoints").is_dir():
        raise CheckpointError(no_checkpoint)
    setup = build(evaluate_lib.load_config(workdir))
    checkpointer = checkpoint.Checkpointer(workdir)
    steps = checkpointer.steps()
    if not steps or (step is not None and step not in steps):
        checkpointer.close()
        raise CheckpointError(no_checkpoint if not steps else
                              f"no checkpoint for step {step} in {workdir}; pass --step as one of {steps}")
    step = steps[-1] if step is None else step
    state = checkpointer.restore(step, setup.abstract_state).state
    checkpointer.close()
    return setup, step, state


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, hooks: Sequence[Hook] = ()) -> Any:
    """Train `config` in `workdir`, resuming from its newest good checkpoint; returns the final state."""
    parallel.initialize_distributed(config.parallel.multihost)
    workdir = pathlib.Path(workdir)
    setup = build(config)
    runner, family = setup.runner, setup.family

    iterator = iter(train_dataset(setup))
    checkpointer = checkpoint.Checkpointer(
        workdir, max_to_keep=config.checkpoint.max_to_keep, keep_every=config.checkpoint.keep_every
    )
    try:
        restored = checkpointer.restore_latest(setup.abstract_state, iterator, _resume_check(config, setup, workdir))
    except CheckpointError:
        checkpointer.close()
        raise
    _write_config(workdir, config)
    if restored is None:
        iterator = iter(train_dataset(setup))  # a failed restore attempt may have moved it
        state = runner.init(family.init, *setup.init_args)
        start = 0
    else:
        log.info("resumed from checkpoint %d in %s", restored.step, workdir)
        state = runner.put_state(restored.state)
        start = restored.step

    skip = config.optim.skip_nonfinite
    steps = {name: (runner.compile_step(s.fn, setup.root_key, i, skip_nonfinite=skip), s.every,
                    f"{name}/" if s.prefix is None else s.prefix) for i, (name, s) in enumerate(family.steps.items())}
    state_names = parallel.state_names(setup.abstract_state)
    writer = MetricWriter(workdir)
    preview_batch = evaluate_lib.preview_batch(setup.eval_source)
    total = config.total_steps
    pending: tuple[int, dict, dict] | None = None
    skipped = 0
    bar = tqdm(total=total, initial=start, disable=jax.process_index() != 0, dynamic_ncols=True, desc="train")
    compile_start = time.time()
    last_metrics: dict[str, float] = {}

    def flush_pending() -> None:
        nonlocal pending, last_metrics, skipped
        if pending is None:
            return
        done, metrics, finite = pending
        pending = None
        metrics, finite = jax.device_get((metrics, finite))
        last_metrics = {k: float(v) for k, v in metrics.items()}
        poisoned = {name: flags for name, flags in finite.items() if not flags.all()}
        if poisoned and not skip:
            raise _nonfinite_state(done, poisoned, state_names, checkpointer.steps())
        skipped += len(poisoned)
        if skip:
            last_metrics["skipped_nonfinite"] = float(skipped)
        if not poisoned:
            _check_finite(done, last_metrics)
        if done % config.log_every == 0 or done == total:
            writer.write(done, last_metrics)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(last_metrics.items())[:4]}, refresh=False)

    def canonical():
        return runner.get_state(state)

    try:
        for step in range(start, total):
            batch = runner.put_batch(next(iterator))
            metrics: dict = {}
            finite: dict = {}
            for name, (fn, every, prefix) in steps.items():
                if step % every == 0:
                    state, step_metrics = fn(state, batch, step)
                    finite[name] = step_metrics.pop(parallel.FINITE)
                    metrics.update({prefix + k: v for k, v in step_metrics.items()})
            flush_pending()
            pending = (step + 1, metrics, finite)
            if step == start:
                jax.block_until_ready(state)
                writer.write(step + 1, {"compile_seconds": time.time() - compile_start}, prefix="perf")
            bar.update(1)
            done = step + 1
            if _due(done, config.preview_every, total):
                evaluate_lib.write_preview(workdir / "previews" / f"{done:08d}.png", family, canonical(), preview_batch,
                                           config.seed, {"Model": config.model.name, "Step": done})
            if _due(done, config.checkpoint.every, total):
                flush_pending()
                checkpointer.save(done, canonical(), iterator, _meta(config, done, last_metrics))
            if _due(done, config.eval_every, total):  # after saving: a failing evaluator never costs training
                flush_pending()
                _evaluate(setup, canonical(), writer, done)
            for hook in hooks:
                hook(done)
        flush_pending()
    finally:  # an exception (a failing evaluator, Ctrl-C) still waits for checkpoints in flight
        bar.close()
        checkpointer.close()
        writer.close()
    return canonical()


def train_dataset(setup: Setup) -> Any:
    """This process's endless training batches: {"a", "b"} pairs when the config names two sources."""
    config, source = setup.config, setup.train_source
    common = dict(global_batch_size=config.batch_size, seed=config.seed, process_index=jax.process_index(),
                  process_count=jax.process_count(), worker_count=config.data.worker_count)
    make_transforms = setup.family.train_transforms
    if isinstance(source, pairs.PairedSource):
        ta, tb = make_transforms(source.a, source.b) if make_transforms else (None, None)
        return pipeline.make_pair_dataset(source.a, source.b, transform=ta, transform_b=tb, **common)
    transform = make_transforms(source, None)[0] if make_transforms else None
    return pipeline.make_dataset(source, transform=transform, **common)


def _evaluate(setup: Setup, state: Any, writer: MetricWriter, step: int) -> None:
    config = setup.config
    names = tuple(config.eval.metrics) or setup.family.default_metrics
    results = evaluate_lib.run_metrics(
        setup.family, state, setup.eval_source, names=names, batch_size=config.eval.batch_size, seed=config.seed,
        num_examples=config.eval.num_examples, mesh=setup.runner.mesh if config.parallel.strategy == "jit" else None,
    )
    writer.write(step, results, prefix="eval")


def _due(done: int, every: int, total: int) -> bool:
    return bool(every) and (done % every == 0 or done == total)


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"non-finite {', '.join(bad)} at step {step}; lower optim.learning_rate or set optim.grad_clip_norm"
        )


def _resume_check(config: ml_collections.ConfigDict, setup: Setup, workdir: pathlib.Path) -> checkpoint.Check:
    """Stops a resume whose config changes the state; logs the changes that leave it resumable.

    Compared before any array is read, with the config each checkpoint recorded: a run is never
    moved aside as corrupt, or silently restarted, because a model field or the optimiser changed.
    """
    wanted = checkpoint.layout(setup.abstract_state)
    new = json.loads(config.to_json_best_effort())

    def check(step: int, meta: dict, saved: checkpoint.Layout) -> None:
        old = meta.get("config") or {}
        changes = config_lib.changed_fields(old, new) if old else []
        state_changes = [c for c in changes if config_lib.defines_state(c[0], old) or config_lib.defines_state(c[0], new)]
        layout_changes = _layout_changes(saved, wanted)
        if state_changes or layout_changes:
            fields = changes if layout_changes else state_changes
            raise CheckpointError(
                f"{workdir} holds checkpoint {step} of a run whose state this config cannot resume:\n"
                + "".join(f"  {f}: {a!r} -> {b!r}\n" for f, a, b in fields)
                + "".join(f"  state {line}\n" for line in layout_changes[:5])
                + (f"  ... and {len(layout_changes) - 5} more arrays\n" if len(layout_changes) > 5 else "")
                + "Train in a new --workdir, or resume with the values this workdir was started with "
                f"({workdir / 'config.json'}); nothing was changed or moved."
            )
        if changes:
            log.info("resuming checkpoint %d with config changes that keep its state: %s", step,
                     "; ".join(f"{f}: {a!r} -> {b!r}" for f, a, b in changes))

    return check


def _layout_changes(saved: checkpoint.Layout, wanted: checkpoint.Layout) -> list[str]:
    """Arrays added, removed or reshaped between a saved state and the one this config builds."""
    lines = []
    for name in sorted(set(saved) | set(wanted)):
        if name not in wanted:
            lines.append(f"{name}: saved, not in this config's state")
        elif name not in saved:
            lines.append(f"{name}: new in this config's state")
        elif saved[name] != wanted[name]:
            (a, da), (b, db) = saved[name], wanted[name]
            lines.append(f"{name}: {a} {da} -> {b} {db}")
    return lines


def _nonfinite_state(step: int, poisoned: dict[str, np.ndarray], names: list[str], saved: list[int]
                     ) -> FloatingPointError:
    """The error for an update that left non-finite values in the state, naming where they first are."""
    step_name, flags = next(iter(poisoned.items()))
    bad = [n for n, ok in zip(names, flags) if not ok]
    parts = bad[0].split("/")
    network = parts[1] if len(parts) > 2 and parts[0] in ("params", "opt_state") else parts[0]
    kept = f"the newest checkpoint, step {saved[-1]}, is finite" if saved else "no checkpoint was saved"
    return FloatingPointError(
        f"step {step} ({step_name!r} update) made the state non-finite, first in network {network!r}: {bad[0]}"
        f"{f' and {len(bad) - 1} more arrays' if len(bad) > 1 else ''}. Stopped before saving it; {kept}. "
        "Lower optim.learning_rate, set optim.grad_clip_norm, or set optim.skip_nonfinite=True to skip such updates."
    )


def _write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Freeze the config as `config.json` (after a resume check passed: changes there keep the state)."""
    if jax.process_index() != 0:
        return
    path = workdir / "config.json"
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text() == text:
            return
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)
    except OSError as error:
        raise WorkdirError(f"cannot write {path} ({error.strerror or error}); pass a writable --workdir") from error


def _meta(config: ml_collections.ConfigDict, step: int, metrics: dict[str, float]) -> dict:
    return {
        "family": config.family,
        "model": config.model.name,
        "step": step,
        "config": json.loads(config.to_json_best_effort()),
        "versions": _versions(),
        "metrics": {k: v for k, v in metrics.items() if np.isfinite(v)},
    }


def _versions() -> dict[str, str]:
    return provenance.package_versions("deepfake-zoo", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")
