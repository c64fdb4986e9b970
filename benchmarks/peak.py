"""This machine's measured matrix-multiply peak: the FLOP/s that "fraction of peak" figures divide by.

    python -m benchmarks peak [--json out.json] [--sizes 1024,2048,4096] [--repeats 10]

A large square GEMM is the most FMA-bound work a framework can issue, so the best rate any of
XLA:CPU (jax.numpy.matmul, jitted), PyTorch (torch.mm) or NumPy's BLAS reaches is taken as the
machine's practical f32 FMA peak; bf16 is measured in JAX and PyTorch beside it (PyTorch's oneDNN
uses AMX tiles where the CPU has them). Each rate is the best of `--repeats` timed calls after one
warm-up, counting 2*n^3 FLOPs per n x n product. The theoretical peak, cores x GHz x FMA units x
lanes x 2, needs the clock, which a VM does not expose, so it is given only when `--ghz` and
`--fma-lanes-per-cycle` are.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

import numpy as np

from benchmarks import common


def _best_gflops(fn: Callable[[], Any], n: int, repeats: int) -> float:
    fn()
    best = min(timed(fn) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of fn takes (wall clock: what a user waits)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def jax_rates(sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    import jax
    import jax.numpy as jnp

    out: dict[str, dict[int, float]] = {"float32": {}, "bfloat16": {}}
    matmul = jax.jit(jnp.matmul)
    for dtype in out:
        for n in sizes:
            a, b = (jnp.asarray(np.random.default_rng(i).standard_normal((n, n)), dtype) for i in (0, 1))
            out[dtype][n] = _best_gflops(lambda: matmul(a, b).block_until_ready(), n, repeats)
    return out


def torch_rates(sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict[str, dict[int, float]] = {"float32": {}, "bfloat16": {}}
    for dtype in out:
        for n in sizes:
            a, b = (torch.randn(n, n, dtype=getattr(torch, dtype)) for _ in range(2))
            out[dtype][n] = _best_gflops(lambda: torch.mm(a, b), n, repeats)
    return out


def numpy_rates(sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    out: dict[int, float] = {}
    for n in sizes:
        a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in (0, 1))
        out[n] = _best_gflops(lambda: a @ b, n, repeats)
    return {"float32": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ghz", type=float, default=0.0, help="sustained all-core clock, for the theoretical peak")
    parser.add_argument("--fma-lanes-per-cycle", type=int, default=0,
                        help="f32 FMA lanes per core per cycle (2 AVX-512 units: 32; 2 AVX2 units: 16)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rates: dict[str, Any] = {"jax": jax_rates(sizes, args.repeats), "numpy": numpy_rates(sizes, args.repeats)}
    try:
        rates["torch"] = torch_rates(sizes, args.repeats)
    except ImportError:
        rates["torch"] = {"error": "torch is not installed: pip install torch==2.13.0"}
    best = {dtype: max((v for r in rates.values() for d, per_n in r.items() if d == dtype and isinstance(per_n, dict)
                        for v in per_n.values()), default=0.0) for dtype in ("float32", "bfloat16")}
    result: dict[str, Any] = {
        "benchmark": "peak", "gemm_gflop_per_s": rates,
        "measured_peak_gflop_per_s": {k: round(v, 1) for k, v in best.items()},
        "machine": common.machine(),
    }
    if args.ghz and args.fma_lanes_per_cycle:
        result["theoretical_f32_gflop_per_s"] = round(
            (os.cpu_count() or 1) * args.ghz * args.fma_lanes_per_cycle * 2, 1)
    common.emit(result, args.json)


if __name__ == "__main__":
    common.entry(main)
