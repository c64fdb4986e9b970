"""Where a reenactment run loses its reconstruction: the motion, the generator, or the batch statistics.

    python -m benchmarks reenact_probe --workdir runs/reenact_synthetic [--step N] [--pairs 16] [--json out.json]

On the first `--pairs` (source, driving) pairs of the run's training and evaluation splits, L1 in [0, 1]
against the driving frame of:
- `prediction`: the model in evaluation mode (running batch statistics), as `--metrics recon` scores it;
- `prediction_train_mode`: the same with each batch's own statistics (what the training loss sees);
- `deformed`: the source image sampled by the predicted flow, the motion alone with no generator;
- `copy`: the source frame unchanged (the baseline);
- `identity`: the source reconstructed from itself (driving = source), the generator's own loss of detail;
and the blur floor of the frames: L1 of a frame shrunk 2x (4x) and enlarged back, bilinearly, which is
what a generator that cannot keep detail finer than its feature maps pays on sharp-edged images.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import numpy as np

from benchmarks.common import emit, entry, machine
from zoo.errors import ConfigError


def _l1(a: Any, b: Any) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def probe_split(model: Any, variables: dict[str, Any], batch: dict[str, np.ndarray]) -> dict[str, float]:
    """The L1 rows above for one batch of {"source_image", "driving_image"} uint8 pairs."""
    import jax

    from train.families import reenact

    source, driving = reenact.to_unit(batch["source_image"]), reenact.to_unit(batch["driving_image"])
    out = model.apply(variables, source, driving, False)
    stats = [k for k in variables if k != "params"]
    train_out = model.apply(variables, source, driving, True, mutable=stats)[0] if stats else out
    identity = model.apply(variables, source, source, False)
    rows = {"prediction": _l1(out["prediction"], driving), "prediction_train_mode": _l1(train_out["prediction"], driving),
            "deformed": _l1(out["deformed"], driving), "copy": _l1(source, driving),
            "identity": _l1(identity["prediction"], source)}
    b, h, w, c = driving.shape
    for factor in (2, 4):
        small = jax.image.resize(driving, (b, h // factor, w // factor, c), "linear")
        rows[f"blur_{factor}x"] = _l1(jax.image.resize(small, driving.shape, "linear"), driving)
    return rows


def probe(workdir: str, step: int | None = None, pairs: int = 16) -> dict[str, Any]:
    """Every row for the run's checkpoint (the newest by default), on its training and evaluation splits."""
    import jax

    from train import evaluators, runs
    from train.families import reenact

    try:
        setup, step, state = runs.load_run(workdir, step, family="reenact")
    except ConfigError as error:
        raise SystemExit(f"reenact_probe: {error}") from None
    model, state = reenact.run_model(setup), jax.device_get(state)
    variables = reenact.eval_variables(bool(setup.config.reenact.ema_decay), state)
    out: dict[str, Any] = {"step": int(step), "pairs": pairs}
    for name, source in (("train", setup.train_source), ("eval", setup.eval_source)):
        out[name] = probe_split(model, variables, evaluators.preview_batch(source, pairs))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the flags, probes the run and prints one line per split before the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks reenact_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a reenact run's directory")
    parser.add_argument("--step", type=int, default=None, help="the checkpoint (default: the newest)")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per split")
    parser.add_argument("--json", default="", help="write the result here as well")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = probe(args.workdir, args.step, args.pairs)
    for split in ("train", "eval"):
        print(split + ": " + "  ".join(f"{k} {v:.4f}" for k, v in result[split].items()))
    emit({"benchmark": "reenact_probe", "workdir": args.workdir, "seconds": round(time.perf_counter() - start, 1),
          "machine": machine(), **result}, args.json)


if __name__ == "__main__":
    entry(main)
