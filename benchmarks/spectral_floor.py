"""The spectral floor of a detection config: Durall's and Frank's detectors fitted on its training split, scored on its test split.

    python -m benchmarks spectral_floor --config configs/detect_swap_grid.py [--set FIELD=VALUE ...] [--json out.json]

A CNN detector's result means little until it beats what a logistic regression on the image spectrum
does on the same data (Durall et al. 2020: azimuthally averaged log power spectrum; Frank et al. 2020:
log |DCT|). This reads the config's `data.source` (train split) and `data.eval_source` (eval split) exactly
as `python -m train` and `train.evaluate` do, fits each spectral head on every training image in closed
form (`train.spectral_head`, balanced classes, scikit-learn's C = 1) and reports the rows `--metrics
detect` reports for the CNN on the same test images: frame AUC, AP, accuracy, TPR at 1%/5% FPR and,
where examples carry a video, video AUC. So the README can put the floor beside the CNN split for split.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import numpy as np

from benchmarks.common import emit, entry, machine
from benchmarks.detect_matrix import SPECTRAL, fit_spectral, spectral_scores


def split_arrays(config: Any, train: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 images, labels and video ids (or None) of the config's training or evaluation split."""
    from train import runs
    from train.families import detect

    source = runs.training_source(config) if train else runs.evaluation_source(config)[0]
    return detect.held_out(source, 0)


def floor(config: Any, detectors: Sequence[str] = SPECTRAL) -> dict[str, Any]:
    """Each spectral detector's detection rows on the config's test split, fitted on its training split."""
    from train.metrics import detection

    x_train, y_train, _ = split_arrays(config, train=True)
    x_test, y_test, groups = split_arrays(config, train=False)
    rows: dict[str, Any] = {"train_images": int(len(y_train)), "train_fakes": int(y_train.sum()),
                            "test_images": int(len(y_test)), "test_fakes": int(y_test.sum())}
    for name in detectors:
        start = time.perf_counter()
        module, variables = fit_spectral(name, x_train, y_train)
        fitted = time.perf_counter() - start
        scores = spectral_scores(module, variables, x_test).astype(np.float64)
        rows[name] = detection.summarize(y_test, scores, groups) | {"fit_seconds": round(fitted, 2)}
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the flags, fits and scores the floor, prints one line per detector and writes the JSON."""
    from train import config as config_lib

    parser = argparse.ArgumentParser(prog="python -m benchmarks spectral_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a detect config file, optionally with :variant")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, as --config.FIELD=VALUE does for python -m train")
    parser.add_argument("--detector", default=",".join(SPECTRAL), help="durall, frank or both (comma list)")
    parser.add_argument("--json", default="", help="write the result here as well")
    args = parser.parse_args(argv)
    config = config_lib.load(args.config)
    for assignment in args.set:
        config_lib.apply_override(config, assignment)
    detectors = [d for d in args.detector.split(",") if d]
    unknown = [d for d in detectors if d not in SPECTRAL]
    if unknown:
        parser.error(f"--detector: unknown {', '.join(unknown)}; choose from {', '.join(SPECTRAL)}")
    start = time.perf_counter()
    rows = floor(config, detectors)
    for name in detectors:
        r = rows[name]
        print(f"{name}: auc {r['auc']:.3f}  tpr@5%fpr {r['tpr@5%fpr']:.3f}  tpr@1%fpr {r['tpr@1%fpr']:.3f}  "
              f"acc {r['acc']:.3f}" + (f"  video auc {r['video_auc']:.3f}" if "video_auc" in r else ""))
    emit({"benchmark": "spectral_floor", "config": args.config, "overrides": args.set,
          "seconds": round(time.perf_counter() - start, 1), "machine": machine(), **rows}, args.json)


if __name__ == "__main__":
    entry(main)
