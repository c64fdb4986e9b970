"""One PyTorch twin's training step timed in this process: the torch worker of `benchmarks.compare_torch`.

    python -m benchmarks.torch_step --model df64 --setting eager [--batch B] [--steps 30] [--warmup 5] [--json out.json]

Settings: eager; channels_last (eager, nets and images channels_last); compile (each loss function
under torch.compile, so forward and backward are compiled, optimisers eager); compile_channels_last.
Torch runs os.cpu_count() intra-op threads (torch.set_num_threads) unless --threads says otherwise.
Only the standard library is imported at module level, so the JAX worker can share `time_steps`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any, Callable

SETTINGS = ("eager", "channels_last", "compile", "compile_channels_last")


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(run: Callable[[], None], warmup: int, steps: int, per_call: int = 1) -> dict[str, Any]:
    """Times the first call, then each of `steps` calls after `warmup` more; `run` must return when its step is done.

    With `per_call` > 1 each call runs that many trainer steps (a lazy-regularisation cycle): `warmup`
    and `steps` count trainer steps, rounded up to whole calls, and rates are trainer steps per second.

    The load average at the start is kept: torch's OpenMP threads slow down many-fold when another
    process holds a core, so a figure taken on a busy machine must be visible as such.
    """
    load = os.getloadavg()[0]
    warmup, steps = -(-warmup // per_call), max(1, -(-steps // per_call))
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    rates = [per_call / t for t in times]
    return {"load_avg_1m_at_start": round(load, 2), "first_call_s": round(first, 3), "warmup_steps": warmup * per_call,
            "timed_steps": steps * per_call, "steps_per_call": per_call,
            "steps_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def measure(model: str, setting: str, steps: int, warmup: int, threads: int, batch: int = 0) -> dict[str, Any]:
    """The twin of `model` in `setting`, timed on one synthetic batch (the spec's size or `batch`) reused each step."""
    import torch

    from benchmarks import torch_twins

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    twin = torch_twins.make(model, channels_last=setting.endswith("channels_last"), compile=setting.startswith("compile"))
    data = twin.batch(batch or None)
    cycle = twin.spec.cycle

    def run() -> None:
        for _ in range(cycle):
            twin.step(data)

    result = time_steps(run, warmup, steps, cycle)
    if setting.startswith("compile"):
        from torch._dynamo.utils import counters

        result["graph_breaks"] = sum(counters["graph_break"].values())
        result["compiled_graphs"] = counters["stats"]["unique_graphs"]
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), **result}


def main() -> None:
    """Runs one setting and prints (and optionally writes) its JSON; a failure is reported as {"error": ...}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--setting", choices=SETTINGS, default="eager")
    parser.add_argument("--batch", type=int, default=0, help="batch size (per side for a swap); 0: the spec's")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        result = measure(args.model, args.setting, args.steps, args.warmup, args.threads, args.batch)
    except Exception as e:  # noqa: BLE001 - the driver reports any failure, torch.compile's included
        result = {"error": f"{type(e).__name__}: {e}"[:4000]}
    text = json.dumps({"setting": f"torch_{args.setting}", "model": args.model, **result})
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
