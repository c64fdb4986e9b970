"""Training-step cost of a config on this machine: compile time, steps/s, images/s, peak memory.

    python -m benchmarks.train_step --config configs/vae_mnist.py:local [--steps 300] [--pipeline-only]
        [--set data.source=folder:/path ...] [--json out.json]

Three rates, so the bottleneck is visible: the compiled trainer step alone (one batch reused), the
trainer's own input pipeline alone (paired sources and the family's augmentations included), and
the two together as the trainer runs them (metrics fetched one step late). A fourth, the step alone
fetching each step's metrics at once, shows what the late fetch saves. A trainer step is every
family step due at that step (a GAN's D then G). Rates are the median over windows of `--window`
steps after one warm-up window, with min and max; images/s counts both sides of a swap pair.
`--set` overrides config fields, e.g. to point a config at data this machine holds. Peak RSS is
the process's high-water mark.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Any

import jax

from benchmarks import common


def _rates(run_window, windows: int, window: int) -> dict[str, float]:
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        run_window(window)
        rates.append(window / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def override(config: Any, assignment: str) -> None:
    """Set `a.b.c=value` in config; the value is read as the field's current type (text for text fields)."""
    from train import config as config_lib

    config_lib.apply_override(config, assignment)


def measure(config_spec: str, assignments: list[str], steps: int, window: int, pipeline_only: bool = False) -> dict:
    """The config's rates (see the module docstring); `pipeline_only` skips building and timing the step."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    from data import pairs
    from train import config as config_lib
    from train import runs

    config = config_lib.load(config_spec)
    for assignment in assignments:
        override(config, assignment)
    setup = runs.build(config)
    runner, family = setup.runner, setup.family
    iterator = iter(runs.train_dataset(setup))
    paired = isinstance(setup.train_source, pairs.PairedSource)
    images_per_step = config.batch_size * (2 if paired else 1)
    windows = max(3, steps // window)

    def data_only(n: int) -> None:
        for _ in range(n):
            next(iterator)

    results: dict[str, Any] = {"config": config_spec, "overrides": assignments, "batch_size": config.batch_size,
                               "images_per_step": images_per_step}
    if pipeline_only:
        data_only(window)
        results["input_pipeline_steps_per_s"] = _rates(data_only, windows, window)
        return _with_images(results, images_per_step)
    state = runner.init(family.init, *setup.init_args)
    fns = [(runner.compile_step(s.fn, setup.root_key, i), s.every) for i, s in enumerate(family.steps.values())]
    batch = runner.put_batch(next(iterator))
    counter = 0

    def step(data: Any) -> dict:
        nonlocal state, counter
        metrics = {}
        for fn, every in fns:
            if counter % every == 0:
                state, metrics = fn(state, data, counter)
        counter += 1
        return metrics

    start = time.perf_counter()
    jax.block_until_ready((step(batch), state))
    compile_seconds = time.perf_counter() - start

    def step_only(n: int) -> None:
        for _ in range(n):
            step(batch)
        jax.block_until_ready(state)

    def step_synced(n: int) -> None:
        for _ in range(n):
            jax.device_get(step(batch))

    def together(n: int) -> None:
        pending = None
        for _ in range(n):
            metrics = step(runner.put_batch(next(iterator)))
            if pending is not None:
                jax.device_get(pending)
            pending = metrics
        jax.block_until_ready(state)

    step_only(window)
    data_only(window)
    results.update({
        "steps": list(family.steps),
        "compile_seconds": compile_seconds,
        "step_only_steps_per_s": _rates(step_only, windows, window),
        "step_synced_steps_per_s": _rates(step_synced, windows, window),
        "input_pipeline_steps_per_s": _rates(data_only, windows, window),
        "train_loop_steps_per_s": _rates(together, windows, window),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    return _with_images(results, images_per_step)


def _with_images(results: dict[str, Any], images_per_step: int) -> dict[str, Any]:
    """Each `*_steps_per_s` rate also as `*_images_per_s`, and the machine it ran on."""
    for key in [k for k in results if k.endswith("_steps_per_s")]:
        rates = results[key]
        results[key.replace("_steps_per_s", "_images_per_s")] = {k: v * images_per_step for k, v in rates.items()}
    return results | {"machine": common.machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--pipeline-only", action="store_true", help="time the input pipeline alone")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    common.emit(measure(args.config, args.set, args.steps, args.window, args.pipeline_only), args.json)


if __name__ == "__main__":
    common.entry(main)
