"""Training-step cost of a config on this machine: compile time, steps/s, images/s, peak memory.

    python -m benchmarks.train_step --config configs/vae_mnist.py:local [--steps 300] [--json out.json]

Three rates, so the bottleneck is visible: the compiled step alone (one batch reused), the input
pipeline alone, and the two together as the trainer runs them. Steps/s is the median over windows
of `--window` steps after warm-up, with min and max. Peak RSS is the process's high-water mark.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax

from benchmarks import common


def _rates(run_window, windows: int, window: int) -> dict[str, float]:
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        run_window(window)
        rates.append(window / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def measure(config_spec: str, steps: int, window: int) -> dict:
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    from data import pipeline
    from train import config as config_lib
    from train import trainer

    config = config_lib.load(config_spec)
    setup = trainer.build(config)
    runner = setup.runner
    iterator = iter(pipeline.make_dataset(setup.train_source, global_batch_size=config.batch_size, seed=config.seed,
                                          worker_count=config.data.worker_count))
    state = runner.init(setup.family.init, setup.root_key, None)
    (name, step), = list(setup.family.steps.items())[:1]
    fn = runner.compile_step(step.fn, setup.root_key, 0)
    batch = runner.put_batch(next(iterator))

    start = time.perf_counter()
    state, metrics = fn(state, batch, 0)
    jax.block_until_ready((state, metrics))
    compile_seconds = time.perf_counter() - start
    counter = {"step": 1}

    def step_only(n: int) -> None:
        nonlocal state
        for _ in range(n):
            state, m = fn(state, batch, counter["step"])
            counter["step"] += 1
        jax.block_until_ready(state)

    def data_only(n: int) -> None:
        for _ in range(n):
            next(iterator)

    def together(n: int) -> None:
        nonlocal state
        pending = None
        for _ in range(n):
            state, m = fn(state, runner.put_batch(next(iterator)), counter["step"])
            counter["step"] += 1
            if pending is not None:
                jax.device_get(pending)
            pending = m
        jax.block_until_ready(state)

    windows = max(3, steps // window)
    step_only(window)
    results = {
        "config": config_spec,
        "step": name,
        "batch_size": config.batch_size,
        "compile_seconds": compile_seconds,
        "step_only_steps_per_s": _rates(step_only, windows, window),
        "input_pipeline_batches_per_s": _rates(data_only, windows, window),
        "train_loop_steps_per_s": _rates(together, windows, window),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": common.machine(),
    }
    for key in ("step_only_steps_per_s", "input_pipeline_batches_per_s", "train_loop_steps_per_s"):
        results[key.replace("steps_per_s", "images_per_s").replace("batches_per_s", "images_per_s")] = {
            k: v * config.batch_size for k, v in results[key].items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    common.emit(measure(args.config, args.steps, args.window), args.json)


if __name__ == "__main__":
    main()
