"""The one training loop every family runs through.

train: build the run (`train.runs`), init or restore, compile each named step
once, then loop: next batch, run the due steps, log the previous step's metrics (fetched one step
late so the host never waits on the device), preview, evaluate and checkpoint on their intervals.
"""
from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from data import provenance
from train import checkpoint, evaluators, parallel, runs
from train import config as config_lib
from train.writers import MetricWriter
from zoo import files
from zoo.errors import CheckpointError, WorkdirError

log = logging.getLogger(__name__)

Hook = Callable[[int], None]


class Pace:
    """Training throughput over each logging window, previews, checkpoints and evaluations left out.

    Logged as `perf/kimg` (thousands of examples seen), `perf/steps_per_sec` and
    `perf/sec_per_kimg`, the units GAN papers report (StyleGAN2's s/kimg). The window opens after
    the first step, so compilation is not counted (`perf/compile_seconds` reports it).
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._since: tuple[float, int] | None = None
        self._paused = 0.0

    def begin(self, step: int) -> None:
        """Open a window at `step` (steps already done)."""
        self._since, self._paused = (time.perf_counter(), step), 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the enclosed work (a preview, a checkpoint, an evaluation) out of the window."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - t

    def window(self, done: int) -> dict[str, float]:
        """kimg at `done` steps, and the pace since the window opened (which this starts anew)."""
        out = {"kimg": done * self.batch_size / 1000}
        if self._since is not None and done > self._since[1]:
            seconds = time.perf_counter() - self._since[0] - self._paused
            steps = done - self._since[1]
            out |= {"steps_per_sec": steps / seconds, "sec_per_kimg": seconds / (steps * self.batch_size / 1000)}
            self.begin(done)
        return out


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, hooks: Sequence[Hook] = ()) -> Any:
    """Train `config` in `workdir`, resuming from its newest good checkpoint; returns the final state."""
    parallel.initialize_distributed(config.parallel.multihost)
    workdir = pathlib.Path(workdir)
    setup = runs.build(config)
    runner, family = setup.runner, setup.family

    iterator = iter(runs.train_dataset(setup))
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
        iterator = iter(runs.train_dataset(setup))  # a failed restore attempt may have moved it
        state = runner.init(family.init, *setup.init_args)
        start = 0
    else:
        log.info("resumed from checkpoint %d in %s", restored.step, workdir)
        state = runner.put_state(restored.state)
        start = restored.step
        if not restored.data_restored:  # one batch per step: the deterministic stream resumes at batch `start`
            iterator = iter(runs.train_dataset(setup, start=start))

    skip = config.optim.skip_nonfinite
    steps = {name: (runner.compile_step(s.fn, setup.root_key, i, skip_nonfinite=skip), s.every,
                    f"{name}/" if s.prefix is None else s.prefix) for i, (name, s) in enumerate(family.steps.items())}
    state_names = [name for name in checkpoint.layout(setup.abstract_state) if name != "step"]  # FINITE's order
    writer = MetricWriter(workdir)
    preview_batch = evaluators.preview_batch(setup.eval_source)
    total = config.total_steps
    if start and _due(start, config.eval_every, total) and not _logged(workdir, start, "eval/"):
        log.info("checkpoint %d was saved but the run stopped before evaluating it; evaluating it now", start)
        _evaluate(setup, runner.get_state(state), writer, start)
    pending: tuple[int, dict, dict] | None = None
    skipped = 0
    bar = tqdm(total=total, initial=start, disable=jax.process_index() != 0, dynamic_ncols=True, desc="train")
    compile_start = time.time()
    last_metrics: dict[str, float] = {}
    pace = Pace(config.batch_size)

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
            writer.write(done, pace.window(done), prefix="perf")
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
                pace.begin(step + 1)
            bar.update(1)
            done = step + 1
            if _due(done, config.preview_every, total):
                with pace.paused():
                    grid = evaluators.write_preview(workdir / "previews" / f"{done:08d}.png", family, canonical(),
                                                    preview_batch, config.seed,
                                                    {"Model": config.model.name, "Step": done})
                    writer.write_image(done, "preview", grid)
            if _due(done, config.checkpoint.every, total):
                flush_pending()
                with pace.paused():
                    checkpointer.save(done, canonical(), iterator, _meta(config, done, last_metrics))
            if _due(done, config.eval_every, total):  # after saving: a failing evaluator never costs training
                flush_pending()
                with pace.paused():
                    _evaluate(setup, canonical(), writer, done)
            for hook in hooks:
                hook(done)
        flush_pending()
    finally:  # an exception (a failing evaluator, Ctrl-C) still waits for checkpoints in flight
        bar.close()
        checkpointer.close()
        writer.close()
    return canonical()


def _evaluate(setup: runs.Setup, state: Any, writer: MetricWriter, step: int) -> None:
    config = setup.config
    results = evaluators.run_metrics(
        setup.family, state, setup.eval_source, names=config.eval.metrics, batch_size=config.eval.batch_size,
        seed=config.seed, num_examples=config.eval.num_examples,
        mesh=setup.runner.mesh if config.parallel.strategy == "jit" else None, detector=config.eval.detector,
    )
    writer.write(step, results, prefix="eval")


def _logged(workdir: pathlib.Path, step: int, prefix: str) -> bool:
    """Whether `metrics.jsonl` holds a record of `step` with a `prefix` metric (a run's evaluation, say)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return False
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill that interrupted the run
            continue
        if record.get("step") == step and any(k.startswith(prefix) for k in record):
            return True
    return False


def _due(done: int, every: int, total: int) -> bool:
    return bool(every) and (done % every == 0 or done == total)


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"non-finite {', '.join(bad)} at step {step}; lower optim.learning_rate or set optim.grad_clip_norm"
        )


def _resume_check(config: ml_collections.ConfigDict, setup: runs.Setup, workdir: pathlib.Path) -> checkpoint.Check:
    """Stops a resume whose config changes the state; logs the changes that leave it resumable.

    Compared before any array is read, with the config each checkpoint recorded: a run is never
    moved aside as corrupt, or silently restarted, because a model field or the optimiser changed.
    """
    wanted = checkpoint.layout(setup.abstract_state)
    new = json.loads(config.to_json_best_effort())

    def check(step: int, meta: dict, saved: checkpoint.Layout) -> bool:
        old = meta.get("config") or {}
        changes = config_lib.changed_fields(old, new) if old else []
        state_changes = [c for c in changes
                         if config_lib.defines_state(c[0], old) or config_lib.defines_state(c[0], new)]
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
        return not any(f == "data.worker_count" for f, _, _ in changes)  # grain's saved state is per worker count

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
        with files.atomic_write(path) as tmp:
            tmp.write_text(text)
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
