"""Forward+backward timings of zoo.layers against the flax.linen layers they replace, on the local backend.

Run as `python -m benchmarks.layers [--json out.json]`; prints one JSON dict (ms, GFLOP/s, speedup).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import common
from zoo import layers

CASES: dict[str, dict[str, Any]] = {
    "conv_transpose_4x4_s2_16x16x64_to_32x32x32_b64": dict(
        ours=layers.ConvTranspose, ref=nn.ConvTranspose, shape=(64, 16, 16, 64), features=32, kernel=4),
    "conv_5x5_s2_8x8x256_to_4x4x512_b16": dict(
        ours=layers.Conv, ref=nn.Conv, shape=(16, 8, 8, 256), features=512, kernel=5),
}


def _median_ms(fn: Callable[..., Any], *args: Any, runs: int) -> float:
    """Median wall time of a jitted call after two warm-up calls, in ms."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_case(ours: type[nn.Module], ref: type[nn.Module], shape: tuple[int, ...], features: int,
               kernel: int, runs: int) -> dict[str, Any]:
    """Times value+grad (w.r.t. params and input) of both layers on the same params, input and cotangent."""
    fields = dict(features=features, kernel_size=(kernel, kernel), strides=(2, 2), padding="SAME")
    kx, kc, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    params = ref(**fields).init(kp, x)
    out_shape = jax.eval_shape(ref(**fields).apply, params, x).shape
    ct = jax.random.normal(kc, out_shape)
    positions = math.prod(shape[:3] if ref is nn.ConvTranspose else out_shape[:3])
    gflop = 2 * positions * kernel * kernel * shape[-1] * features * 3 / 1e9
    result: dict[str, Any] = {"gflop": round(gflop, 3)}
    for name, cls in (("flax", ref), ("zoo", ours)):
        module = cls(**fields)
        step = jax.jit(jax.grad(lambda p, x, m=module: jnp.sum(m.apply(p, x) * ct), argnums=(0, 1)))
        ms = _median_ms(step, params, x, runs=runs)
        result[name] = {"ms": round(ms, 2), "gflops_per_s": round(gflop / ms * 1e3, 1)}
    result["speedup"] = round(result["flax"]["ms"] / result["zoo"]["ms"], 1)
    return result


def main() -> None:
    """Runs every case and prints (and optionally writes) the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per layer (median is reported)")
    args = parser.parse_args()
    results: dict[str, Any] = {"runs": args.runs}
    for name, case in CASES.items():
        results[name] = bench_case(**case, runs=args.runs)
    results["machine"] = common.machine()
    common.emit(results, args.json)


if __name__ == "__main__":
    common.entry(main)
