"""Sample quality of a trained GAN beside the floor the same protocol gives real data.

    python -m benchmarks.gan_quality --workdir runs/dcgan_fashion_mnist [--json out.json]
    python -m benchmarks.gan_quality --export dcgan_fashion_mnist       # a bundled (or any exported) generator

Runs the family's `fid` evaluator (FID, KID, precision/recall, IS through the config's extractor,
`gan.eval_samples` samples against the evaluation split) on the run's newest checkpoint, and scores
the first `gan.eval_samples` real training images against the same reference with the same
extractor and resize: the floor, what a perfect generator of the training distribution would get
with this many samples. A GAN's figures only mean something next to it.
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import emit, entry, machine
from train import evaluators, runs
from train.families import gan
from train.metrics import generative


def floor(setup: runs.Setup) -> dict:
    """The protocol's figures for real training images in place of samples."""
    config = setup.config
    extractor, protocol, real = gan.measurement(config, setup.eval_source, config.eval.num_examples)
    n = min(config.gan.eval_samples, len(setup.train_source))
    batches = generative.source_batches(setup.train_source, extractor.batch_size, n)
    fake = generative.extract(extractor, batches, n)
    return generative.compare(real, fake, protocol) | {
        "protocol": generative.describe(protocol, extractor, gan.reference_name(config), len(real["features"]))
        + f"; the first {n} training images in place of samples"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_mutually_exclusive_group(required=True)
    run.add_argument("--workdir", help="a GAN run; its newest checkpoint unless --step")
    run.add_argument("--export", help="an export file or a catalogue name; its card's config, or --config")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--config", default=None, help="configs/<file>.py[:variant] an --export was trained with")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.workdir:
        setup, step, state = runs.load_run(args.workdir, args.step, family="gan")
        where = {"workdir": args.workdir, "step": step}
    else:
        exported = runs.load_export(args.export, args.config)
        setup, state = exported.setup, exported.state
        where = {"export": args.export, "sha256": exported.sha256, "config": exported.config_spec}
    config = setup.config
    start = time.time()
    model = evaluators.run_metrics(setup.family, state, setup.eval_source, names=("fid",),
                                 batch_size=config.eval.batch_size, seed=config.seed,
                                 num_examples=config.eval.num_examples)
    model_seconds = time.time() - start
    start = time.time()
    real = floor(setup)
    emit({"benchmark": "gan_quality", "machine": machine(), **where,
          "model": config.model.name, "discriminator": config.gan.discriminator.name, "loss": config.gan.loss,
          "samples": model, "training_images_floor": real,
          "seconds": {"samples": round(model_seconds, 1), "floor": round(time.time() - start, 1)}}, args.json)


if __name__ == "__main__":
    entry(main)
