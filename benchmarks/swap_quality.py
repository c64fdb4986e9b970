"""Ground-truth swap quality of a trained synthetic-faces run against two baselines.

    python -m benchmarks.swap_quality --workdir runs/swap_df [--json out.json]

The model's A->B and B->A swaps of every held-out pair are compared with the ground truth (the
other person rendered with this expression and pose) by PSNR and SSIM, over the whole image and
inside the true face (the region a merge replaces). Two baselines a swap must beat:
- copy: the source image unchanged (right expression and pose, wrong person);
- mean face: the average training image of the target person (right person, no expression or pose).
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax.numpy as jnp
import numpy as np

from benchmarks.common import emit, entry, machine
from train import evaluators, runs
from train.families import swap


def mean_face(source, limit: int = 2000) -> np.ndarray:
    """The average of a source's first `limit` images, float32 [H, W, 3] in [0, 1]."""
    n = min(limit, len(source))
    return np.mean([source[i]["image"].astype(np.float32) / 255.0 for i in range(n)], axis=0)


def mean_face_baseline(setup: runs.Setup, window: int) -> dict[str, float]:
    """PSNR/SSIM of each side's training mean face against the other side's ground-truth swaps."""
    train, held_out = setup.train_source, setup.eval_source
    means = {"a2b": mean_face(train.b), "b2a": mean_face(train.a)}
    sums: dict[str, float] = {}
    for start in range(0, len(held_out), 64):
        rows = [held_out[i] for i in range(start, min(start + 64, len(held_out)))]
        for name, mean in means.items():
            truth = jnp.asarray(np.stack([r[f"{name}_truth"] for r in rows]) / 255.0, jnp.float32)
            face = jnp.asarray(np.stack([r[f"{name}_face"] for r in rows]) / 255.0, jnp.float32)
            guess = jnp.broadcast_to(jnp.asarray(mean), truth.shape)
            for k, v in swap.image_quality(f"{name}_mean", guess, truth, face, window).items():
                sums[k] = sums.get(k, 0.0) + float(jnp.sum(v))
    return {k: v / len(held_out) for k, v in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    setup, step, state = runs.load_run(pathlib.Path(args.workdir), args.step)
    config = setup.config
    start = time.time()
    model = evaluators.run_metrics(setup.family, state, setup.eval_source, names=("swap_truth", "recon"),
                                 batch_size=config.eval.batch_size, seed=config.seed)
    baseline = mean_face_baseline(setup, config.swap.eval_ssim_window)
    rows = {}
    for name in ("a2b", "b2a"):
        for metric in ("psnr", "ssim", "face_psnr", "face_ssim"):
            rows[f"{name}_{metric}"] = {"swap": model[f"{name}_{metric}"], "copy": model[f"{name}_copy_{metric}"],
                                        "mean_face": baseline[f"{name}_mean_{metric}"]}
    emit({"benchmark": "swap_quality", "machine": machine(), "workdir": args.workdir, "step": step,
          "model": config.model.name, "eval_source": setup.eval_spec, "num_pairs": model["num_examples"],
          "ssim_window": config.swap.eval_ssim_window, "seconds": round(time.time() - start, 1),
          "swap_vs_baselines": rows,
          "reconstruction": {k: v for k, v in model.items() if "recon" in k}}, args.json)


if __name__ == "__main__":
    entry(main)
