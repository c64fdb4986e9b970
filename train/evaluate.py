"""Unified evaluation: `python -m train.evaluate --workdir runs/x [--step N] [--metrics a,b] [--out DIR]`.

Reads the run's frozen config and a checkpoint, runs the family's evaluators over the whole
evaluation split (`train.evaluators`), and writes `eval/<step>.json` and `eval/<step>.png`. The
trainer's periodic evaluation runs the same driver, so a number logged in training is the number
this gives.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Sequence

import jax
from absl import flags

from train import cli, evaluators, runs
from zoo.errors import WorkdirError


def evaluate(workdir: str | pathlib.Path, step: int | None = None, metrics: Sequence[str] = (),
             num_examples: int | None = None, out: str | pathlib.Path | None = None, *,
             echo: bool = False, detector: str | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint (the newest by default) and write <out>/<step>.{json,png} (out: workdir/eval).

    The output directory is checked before anything is computed, and with `echo` the JSON is
    printed before it is written, so no failure to write ever loses a report. `detector` replaces the
    config's eval.detector (the pinned detector `detectability` scores with) for a run that set none.
    """
    workdir = pathlib.Path(workdir)
    out = pathlib.Path(out) if out else workdir / "eval"
    cli.check_run_dir(workdir)
    cli.check_writable(out, "pass --out DIR to write the report elsewhere")
    setup, step, state = runs.load_run(workdir, step)
    config = setup.config
    names = evaluators.metric_names(setup.family, tuple(metrics) or tuple(config.eval.metrics))
    start = time.time()
    results = evaluators.run_metrics(
        setup.family, state, setup.eval_source, names=names, batch_size=config.eval.batch_size, seed=config.seed,
        num_examples=config.eval.num_examples if num_examples is None else num_examples,
        detector=config.eval.detector if detector is None else detector,
    )
    report = {"step": step, "metrics": results, "seconds": time.time() - start,
              "protocol": {"source": setup.eval_spec, "metrics": list(names), "seed": config.seed}}
    if echo:
        print(json.dumps(report, indent=2), flush=True)
    if jax.process_index() == 0:
        _write_report(out, report, setup, state, workdir)
    return report


def _write_report(out: pathlib.Path, report: dict[str, Any], setup: Any, state: Any, workdir: pathlib.Path) -> None:
    """Write <out>/<step>.json and its preview PNG; an OS failure becomes a WorkdirError naming the directory."""
    config, step = setup.config, report["step"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{step}.json").write_text(json.dumps(report, indent=2))
        evaluators.write_preview(out / f"{step}.png", setup.family, state, evaluators.preview_batch(setup.eval_source), config.seed,
                      {"Model": config.model.name, "Run": str(workdir), "Step": step})
    except OSError as error:
        raise WorkdirError(f"cannot write the report to {out} ({error.strerror or error}); "
                           "pass --out DIR to write it elsewhere") from error


def main(argv: Sequence[str]) -> None:
    del argv
    f = cli.run_flags()
    evaluate(f.workdir, f.step, f.metrics, f.num_examples, f.out, echo=True, detector=f.detector)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
    flags.DEFINE_list("metrics", [], "Evaluators to run (default: the config's or the family's).")
    flags.DEFINE_integer("num_examples", None, "Evaluate on the first N examples only (default: the config's).")
    flags.DEFINE_string("out", None, "Directory for <step>.json and <step>.png (default: <workdir>/eval).")
    flags.DEFINE_string("detector", None, "Pinned detector export for --metrics detectability (default: the "
                        "config's eval.detector).")
    cli.run(main)
