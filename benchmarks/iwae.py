"""The IWAE evaluation's speed against this machine's GEMM peak, measured in the same invocation.

    python -m benchmarks iwae [--json out.json] [--images 100] [--k 5000] [--chunk 5000] [--repeats 2]

Times `train.families.vae.importance_weighted_nll` (jitted, the function `train.evaluate --metrics iwae`
runs) on binarised MNIST-shaped images with the README's 784-200-200-50 tanh Bernoulli VAE (random
init: the weights do not change the work), and JAX's f32 square GEMM at 1024 and 2048 (`benchmarks.peak`).
The decoder's dense layers are most of the FLOPs (2 x images x k x (50*200 + 200*200 + 200*784)); the
ideal time is those FLOPs at the peak rate, and `ratio_to_peak_time` is the measured time over it
(issue 17's target: at most 2). The encoder, noise draws, likelihood and log-sum-exp are the overhead the
ratio counts against the implementation.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks import common, peak
from train import sections

HIDDEN = (200, 200)
LATENT = 50
PIXELS = 28 * 28


def decoder_flops(images: int, k: int) -> int:
    """FLOPs of the decoder's matrix products over images x k latent samples (2 per multiply-add)."""
    widths = (LATENT, *reversed(HIDDEN), PIXELS)
    return 2 * images * k * sum(a * b for a, b in zip(widths, widths[1:]))


def measure(images: int, k: int, chunk: int, repeats: int) -> dict[str, Any]:
    """Seconds for the k-sample NLL of `images` images, and the decoder GFLOP/s that implies."""
    import jax
    import jax.numpy as jnp

    from train.families import vae as vae_family
    from zoo import create_model

    model = create_model("vae_mlp", image_shape=(28, 28, 1), latent_dim=LATENT, hidden=HIDDEN, activation="tanh",
                         likelihood="bernoulli")
    x = jnp.asarray(np.random.default_rng(0).random((images, 28, 28, 1)) > 0.5, jnp.float32)
    params = model.init(jax.random.key(0), x[:1], jnp.zeros((1, LATENT)))["params"]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(images))
    nll = jax.jit(lambda p, x, keys: vae_family.importance_weighted_nll(model, p, x, keys, k, chunk))
    run = lambda: nll(params, x, keys).block_until_ready()  # noqa: E731
    run()
    seconds = min(peak.timed(run) for _ in range(repeats))
    return {"seconds": seconds, "decoder_gflop_per_s": decoder_flops(images, k) / seconds / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=sections.vae().iwae_chunk,
                        help="vae.iwae_chunk: decoded rows per call (default: the config default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    iwae = measure(args.images, args.k, args.chunk, args.repeats)
    gemm = peak.jax_rates([1024, 2048], 3)["float32"]
    best = max(gemm.values())
    ideal = decoder_flops(args.images, args.k) / (best * 1e9)
    common.emit({
        "benchmark": "iwae", "images": args.images, "k": args.k, "chunk": args.chunk,
        "iwae": {"seconds": round(iwae["seconds"], 3), "decoder_gflop_per_s": round(iwae["decoder_gflop_per_s"], 1)},
        "jax_f32_gemm_gflop_per_s": {n: round(v, 1) for n, v in gemm.items()},
        "ideal_seconds_at_peak": round(ideal, 3), "ratio_to_peak_time": round(iwae["seconds"] / ideal, 2),
        "machine": common.machine(),
    }, args.json)


if __name__ == "__main__":
    common.entry(main)
