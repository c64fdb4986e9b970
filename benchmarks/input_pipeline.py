"""Face-swap input throughput: pairs of synthetic identities with random warp and colour transfer.

    python -m benchmarks.input_pipeline [--sizes 64,128] [--colors none,rct] [--workers 0,2] [--json out.json]

Images/s counts both sides of each pair (a batch of B pairs is 2B images), over `--batches`
batches after `--warmup` (more than grain's 16-batch prefetch buffer, so the buffer is full and
the rate is the steady one), median of `--repeats`. It measures what the swap family will consume:
per-example flip -> colour transfer towards a random B face -> random warp, batched by grain.
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks import common


def measure(size: int, color: str, workers: int, batch: int, batches: int, warmup: int, repeats: int) -> dict:
    from data import augment, pipeline, sources

    a = sources.get_source(f"synthetic_faces:ids=0;n=1000;size={size}")
    b = sources.get_source(f"synthetic_faces:ids=1;n=1000;size={size}")
    a.gather(range(len(a))), b.gather(range(len(b)))  # render once, as a long run would have
    transform = augment.SwapAugment(color=color, reference=b if color != "none" else None)
    iterator = iter(pipeline.make_pair_dataset(a, b, global_batch_size=batch, seed=0, transform=transform,
                                               worker_count=workers))
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(2 * batch * batches / (time.perf_counter() - start))
    return {"size": size, "color": color, "workers": workers, "batch_pairs": batch,
            "images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--colors", default="none,rct")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    results = [measure(int(s), c, int(w), args.batch, args.batches, args.warmup, args.repeats)
               for s in args.sizes.split(",") for c in args.colors.split(",") for w in args.workers.split(",")]
    common.emit({"runs": results, "machine": common.machine()}, args.json)


if __name__ == "__main__":
    common.entry(main)
