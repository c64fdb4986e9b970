"""The generalisation matrix: a detector trained on one generator's fakes, tested on every generator of its group.

    python -m benchmarks detect_matrix [--generators a,b,c] [--steps N] [--detector xception|resnet|durall|frank|all]
        [--extra NAME=EXPORT ...] [--faces-per-person 40,25] [--fashion-images 20000,5000] [--baselines]
        [--set [DETECTOR:]FIELD=VALUE ...] [--json out.json]

A generator is a pair of `fakemix:` specs (train, test) over one group's real images, split as the
detection configs split them, so no person (or image) is in both:
- synthetic_faces: synthetic people 2-41 train, 42-61 test, 64 px, with the swap models' own people 0 and 1
  (whose faces every swap wears) in the real class of both splits (configs/detect_swap_synthetic.py);
  the bundled DF swap's `a2b` and `b2a` are two generators, and each `--extra NAME=EXPORT` of a swap
  export (LIAE, Original, ... trained by the user) adds NAME/a2b and NAME/b2a;
- fashion_mnist32: Fashion-MNIST train vs test images at 32 px (configs/detect_gan_fashion_mnist.py); the
  bundled DCGAN and SNGAN, and a GAN or VAE export given with `--extra` (a VAE gives NAME/sample and
  NAME/reconstruction). The bundled vae_mnist (MNIST digits, 28 px) and vae_digits (8x8 digits) are left
  out: their fakes differ from these reals in content and size, which any detector sees, so their column
  would say nothing about generator traces.
For each detector and each training generator the detector learns that generator's train fakes against
its reals and is scored on the test reals against each generator's test fakes (frame-level AUC, with AP,
accuracy and TPR at 1%/5% FPR per cell). CNNs train through the trainer (`train.trainer.train`, the group's
detect config with the model swapped, `--steps` steps or the config's, sweeps off); the spectral baselines are fitted in
closed form (`train.spectral_head`). The fakes are made once per generator and kept as an npz for all
detectors. `--baselines` adds the ladder of the detection reference's point (a): Durall and Frank fitted on
20, 100 and 1000 training images (half real, half fake, `--repeats` draws), accuracy and AUC on the same
test split, beside each CNN's in-domain cell. DeepfakeBench's published gap (FF++ c23 Xception AUC 0.964
in-domain, 0.737 on Celeb-DF v2) is recorded as context.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import numpy as np

from benchmarks.common import emit, entry, machine
from zoo.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"
SWAP = "swap_df_synthetic_narrow"
DETECTORS = {"xception": "xception_detector", "resnet": "resnet_detector",
             "durall": "spectrum_durall_detector", "frank": "spectrum_frank_detector"}
SPECTRAL = ("durall", "frank")
LADDER = (20, 100, 1000)
EXCLUDED = {
    "vae_mnist": "MNIST digits at 28 px: against Fashion-MNIST reals at 32 px the content and size give it away, "
                 "so its column would not measure generator traces",
    "vae_digits": "scikit-learn's 8x8 digits: another dataset and size than the Fashion-MNIST reals",
}
REFERENCE = {
    "source": "DeepfakeBench (NeurIPS 2023 D&B) README table, frame-level AUC, trained on FF++ c23; "
              "../shared/docs/references/reenactment-and-detection.md, B2",
    "xception_ffpp_c23_auc": 0.964, "xception_celebdf_v2_auc": 0.737, "gap": round(0.964 - 0.737, 3),
}


@dataclasses.dataclass(frozen=True)
class Group:
    """Real images every generator of the group is measured against, and the detect config its CNNs train with."""

    name: str
    config: str
    size: int


FACES = Group("synthetic_faces", "configs/detect_swap_synthetic.py", 64)
FASHION = Group("fashion_mnist32", "configs/detect_gan_fashion_mnist.py", 32)


@dataclasses.dataclass(frozen=True)
class Generator:
    """A named fakemix spec pair over one group's train and test reals."""

    name: str
    group: Group
    train_spec: str
    test_spec: str


@dataclasses.dataclass(frozen=True)
class Data:
    """A generator's images (uint8 NHWC) and labels (1 = fake): train reals and fakes, test reals and fakes."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def face_reals(people: str, per_person: int, own_factor: int, seed: int) -> str:
    """Real faces of `people` plus the swap models' own people 0 and 1 (`own_factor` times as many renders each),
    as configs/detect_swap_synthetic.py has them: without 0 and 1 a detector learns their faces, not the swap."""
    return (f"synthetic_faces:ids=0-1;n={own_factor * per_person};size=64;seed={seed} + "
            f"synthetic_faces:ids={people};n={per_person};size=64;seed={seed}")


def generators_for(model: str, label: str, kinds: Sequence[str], faces: tuple[int, int],
                   fashion: tuple[int, int]) -> list[Generator]:
    """One generator per kind of `model` (a catalogue name or export path), named `label[/kind]`, in its group."""
    from zoo import fake_makers

    if any(c in model for c in ";@"):
        raise ConfigError(f"--extra {label}={model}: a fakemix spec cannot hold ';' or '@'; move or link the export "
                          "to a path without them")
    out = []
    for kind in kinds:
        options = f"model={model};kinds={kind}"
        name = label if len(kinds) == 1 else f"{label}/{kind}"
        if kind in fake_makers.KINDS["swap"]:
            out.append(Generator(name, FACES, f"fakemix:{options};seed=0@{face_reals('2-41', faces[0], 5, 0)}",
                                 f"fakemix:{options};seed=1@{face_reals('42-61', faces[1], 2, 5)}"))
        else:
            out.append(Generator(name, FASHION, f"fakemix:{options};seed=0;size=32;n={fashion[0]}@{FASHION_MNIST}",
                                 f"fakemix:{options};seed=1;size=32;n={fashion[1]}@{FASHION_MNIST}"))
    return out


def all_generators(extras: Sequence[str], faces: tuple[int, int], fashion: tuple[int, int]) -> list[Generator]:
    """The built-in generators and one or two per `NAME=EXPORT` in `extras` (its kinds read from the export)."""
    from zoo import fake_makers, pretrained

    out = generators_for(SWAP, SWAP, fake_makers.KINDS["swap"], faces, fashion)
    for gan in ("dcgan_fashion_mnist", "sngan_fashion_mnist"):
        out += generators_for(gan, gan, fake_makers.KINDS["gan"], faces, fashion)
    for extra in extras:
        label, eq, path = extra.partition("=")
        if not eq or not label or not path or "/" in label:
            raise ConfigError(f"--extra {extra!r}: write NAME=EXPORT, e.g. liae=runs/liae/export/x.safetensors "
                              "(NAME without '/')")
        module, _ = pretrained.create(path)
        out += generators_for(path, label, fake_makers.KINDS[fake_makers.model_kind(module)], faces, fashion)
    names = [g.name for g in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"generator names repeat ({', '.join(names)}); give each --extra its own NAME")
    return out


def select(generators: list[Generator], wanted: str) -> list[Generator]:
    """The generators named in the comma list `wanted` (all when empty), in the order given."""
    if not wanted:
        return generators
    by_name = {g.name: g for g in generators}
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        excluded = [n for n in unknown if n in EXCLUDED]
        why = "".join(f"; {n} is left out: {EXCLUDED[n]}" for n in excluded)
        raise ConfigError(f"--generators: unknown {', '.join(unknown)}; choose from {', '.join(by_name)}{why}")
    return [by_name[n] for n in names]


def materialize(generator: Generator) -> Data:
    """The generator's train and test examples, its fakes made by the fakemix source on each split."""
    from data import sources

    arrays = []
    for spec, split in ((generator.train_spec, "train"), (generator.test_spec, "test")):
        source = sources.get_source(spec, split)
        batch = source.gather(np.arange(len(source)))
        arrays += [batch["image"], np.asarray(batch["label"], np.int64)]
    return Data(*arrays)


def score(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The detection row (auc, ap, acc, tpr@1%fpr, tpr@5%fpr, counts) of test labels and logits."""
    from train.metrics import detection

    return detection.summarize(labels, np.asarray(scores, np.float64))


def cnn_config(group: Group, detector: str, steps: int, npz: pathlib.Path, overrides: Sequence[str]) -> Any:
    """The group's detect config with `detector`'s network, `steps` steps (0: the config's), data from `npz`, no
    checkpoints or sweeps."""
    from train import config as config_lib
    from train import sections

    config = config_lib.load(str(ROOT / group.config))
    name = DETECTORS[detector]
    fields = {"input_size": group.size} if "input_size" in sections.model_field_defaults()[name] else {}
    with config.unlocked():
        config.model = sections.model_section(name, **fields)
        config.data.source = config.data.eval_source = f"npz:{npz}"
        config.total_steps = steps or config.total_steps
        config.log_every = config.total_steps
        config.preview_every = config.eval_every = config.checkpoint.every = 0
        config.eval.metrics = ("detect",)
        config.detect.sweep = ()
    for assignment in overrides:
        target, colon, rest = assignment.partition(":")
        if colon and target in DETECTORS:
            if target == detector:
                config_lib.apply_override(config, rest)
        else:
            config_lib.apply_override(config, assignment)
    return config


def cnn_row(group: Group, detector: str, train: Data, tests: dict[str, Data], steps: int,
            overrides: Sequence[str], workdir: pathlib.Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Train a CNN through the trainer on `train`, then the family's `detect` evaluator on each test set."""
    from absl import flags

    from data.base import ArraySource
    from train import evaluators, families, trainer

    npz = workdir / "data.npz"
    np.savez(npz, x_train=train.train_x, y_train=train.train_y, x_test=train.test_x, y_test=train.test_y)
    config = cnn_config(group, detector, steps, npz, overrides)
    if not flags.FLAGS.is_parsed():  # grain's input workers read absl flags, which only `python -m train` parses
        flags.FLAGS.mark_as_parsed()
    start = time.perf_counter()
    state = trainer.train(config, workdir / "run")
    seconds = {"train": time.perf_counter() - start}
    family = families.get("detect").make(config, train.train_x.shape[1:])
    start = time.perf_counter()
    cells = {}
    for name, test in tests.items():
        cells[name] = evaluators.run_metrics(family, state, ArraySource(name, test.test_x, test.test_y, num_classes=2),
                                             names=("detect",), batch_size=config.eval.batch_size,
                                             seed=config.seed)
    seconds["test"] = time.perf_counter() - start
    return cells, seconds


def fit_spectral(detector: str, images: np.ndarray, labels: np.ndarray) -> tuple[Any, dict]:
    """The spectral detector's module and its variables fitted on uint8 `images`: scikit-learn's C = 1, balanced."""
    from train import spectral_head
    from zoo import registry

    module = registry.create_model(DETECTORS[detector])
    variables = spectral_head.fit_spectral_head(module, images.astype(np.float32) / 255.0, labels,
                                                l2=1.0 / len(labels), balanced=True)
    return module, variables


def spectral_scores(module: Any, variables: dict, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits of uint8 `images` under a fitted spectral detector."""
    apply = jax.jit(module.apply)
    return np.concatenate([np.asarray(apply(variables, images[i:i + batch_size].astype(np.float32) / 255.0))
                           for i in range(0, len(images), batch_size)])


def spectral_row(detector: str, train: Data, tests: dict[str, Data]) -> tuple[dict[str, dict], dict[str, float]]:
    """Fit the spectral detector on `train`'s training examples and score each test set."""
    start = time.perf_counter()
    module, variables = fit_spectral(detector, train.train_x, train.train_y)
    seconds = {"train": time.perf_counter() - start}
    start = time.perf_counter()
    cells = {name: score(test.test_y, spectral_scores(module, variables, test.test_x)) for name, test in tests.items()}
    seconds["test"] = time.perf_counter() - start
    return cells, seconds


def matrix(group: Group, detector: str, data: dict[str, Data], steps: int = 0,
           overrides: Sequence[str] = ()) -> dict[str, Any]:
    """One detector's matrix over a group: rows trained on, columns tested on, AUC per cell and every cell's row."""
    names = list(data)
    cells, seconds = {}, {}
    for name in names:
        if detector in SPECTRAL:
            cells[name], seconds[name] = spectral_row(detector, data[name], data)
        else:
            with tempfile.TemporaryDirectory(prefix="detect_matrix_") as tmp:
                cells[name], seconds[name] = cnn_row(group, detector, data[name], data, steps, overrides,
                                                     pathlib.Path(tmp))
    auc = [[cells[r][c]["auc"] for c in names] for r in names]
    diagonal = [auc[i][i] for i in range(len(names))]
    off = [auc[i][j] for i in range(len(names)) for j in range(len(names)) if i != j]
    steps_run = None if detector in SPECTRAL else cnn_config(group, detector, steps, pathlib.Path("-"), overrides).total_steps
    return {"model": DETECTORS[detector], "steps": steps_run,
            "trained_on": names, "tested_on": names, "auc": auc,
            "in_domain_auc": float(np.mean(diagonal)), "cross_auc": float(np.mean(off)) if off else None,
            "cells": cells, "seconds": seconds}


def ladder(data: Data, detector: str, sizes: Sequence[int], repeats: int, seed: int = 0) -> dict[str, Any]:
    """Accuracy and AUC on the test split of the spectral detector fitted on n training images (n/2 per class)."""
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(data.train_y == 0), np.flatnonzero(data.train_y == 1)
    out: dict[str, Any] = {}
    for n in sizes:
        half = n // 2
        if half < 1 or half > min(len(real), len(fake)):
            out[str(n)] = {"skipped": f"needs {half} training images per class; the split has {len(real)} real, "
                                      f"{len(fake)} fake"}
            continue
        rows = []
        for _ in range(repeats):
            pick = np.concatenate([rng.choice(real, half, replace=False), rng.choice(fake, half, replace=False)])
            module, variables = fit_spectral(detector, data.train_x[pick], data.train_y[pick])
            rows.append(score(data.test_y, spectral_scores(module, variables, data.test_x)))
        out[str(n)] = {f"{k}_{stat}": float(fn([r[k] for r in rows])) for k in ("acc", "auc")
                       for stat, fn in (("mean", np.mean), ("std", np.std))} | {"repeats": repeats}
    return out


def baselines(data: dict[str, Data], matrices: dict[str, dict], sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Per generator: the spectral ladder and, from the matrices run, every detector's in-domain acc and AUC."""
    out = {}
    for name, d in data.items():
        row: dict[str, Any] = {"train_images": len(d.train_y), "test_images": len(d.test_y)}
        for detector in SPECTRAL:
            row[detector] = ladder(d, detector, sizes, repeats)
        row["in_domain"] = {det: {k: m["cells"][name][name][k] for k in ("acc", "auc")} for det, m in matrices.items()}
        out[name] = row
    return out


def format_matrix(group: str, detector: str, result: dict[str, Any]) -> str:
    """The AUC matrix as text: rows trained on, columns tested on."""
    names = result["trained_on"]
    width = max(len(n) for n in names) + 2
    head = f"{group} / {detector}: AUC (rows trained on, columns tested on)\n"
    cols = "".join(f"{i:>8d}" for i in range(len(names)))
    lines = [f"{'':{width + 4}}{cols}"]
    for i, (name, row) in enumerate(zip(names, result["auc"])):
        lines.append(f"{i:>3d} {name:<{width}}" + "".join(f"{v:8.3f}" for v in row))
    return head + "\n".join(lines) + "\n"


def _pair(text: str, flag: str) -> tuple[int, int]:
    try:
        train, test = (int(v) for v in text.split(","))
    except ValueError as error:
        raise ConfigError(f"{flag} {text!r}: write TRAIN,TEST counts, e.g. 40,25") from error
    if train < 1 or test < 1:
        raise ConfigError(f"{flag} {text!r}: both counts must be at least 1")
    return train, test


def _detectors(text: str) -> list[str]:
    names = list(DETECTORS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or not names:
        raise ConfigError(f"--detector {text!r}: choose from {', '.join(DETECTORS)} or all (comma lists work)")
    return names


def run(generators: list[Generator], detectors: Sequence[str], steps: int, overrides: Sequence[str] = (),
        ladder_sizes: Sequence[int] = (), repeats: int = 5, data: dict[str, Data] | None = None) -> dict[str, Any]:
    """Matrices (and with `ladder_sizes` the baselines) for every group the generators fall in.

    `data` may hold generators' examples already made (tests pass toys); the rest are made here.
    """
    data = dict(data or {})
    groups: dict[str, dict[str, Any]] = {}
    for generator in generators:
        group = groups.setdefault(generator.group.name, {"group": generator.group, "data": {}, "specs": {},
                                                         "fake_seconds": {}})
        start = time.perf_counter()
        made = data.get(generator.name) or materialize(generator)
        group["fake_seconds"][generator.name] = time.perf_counter() - start
        group["data"][generator.name] = made
        group["specs"][generator.name] = {"train": generator.train_spec, "test": generator.test_spec,
                                          "train_images": len(made.train_y), "train_fakes": int(made.train_y.sum()),
                                          "test_images": len(made.test_y), "test_fakes": int(made.test_y.sum())}
    out = {}
    for name, group in groups.items():
        matrices = {det: matrix(group["group"], det, group["data"], steps, overrides) for det in detectors}
        for det, result in matrices.items():
            print(format_matrix(name, det, result), file=sys.stderr)
        out[name] = {"config": group["group"].config, "image_size": group["group"].size, "generators": group["specs"],
                     "fake_seconds": group["fake_seconds"], "matrices": matrices}
        if ladder_sizes:
            out[name]["baselines"] = baselines(group["data"], matrices, ladder_sizes, repeats)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", default="", help="comma list of generator names (default: all)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=EXPORT",
                        help="a swap, GAN or VAE export as generator(s) NAME[/kind]")
    parser.add_argument("--steps", type=int, default=0,
                        help="training steps of each CNN (default: the group's detect config's total_steps)")
    parser.add_argument("--detector", default="all", help=f"{', '.join(DETECTORS)}, a comma list, or all")
    parser.add_argument("--faces-per-person", default="40,25", help="synthetic images per person, train,test")
    parser.add_argument("--fashion-images", default="20000,5000", help="Fashion-MNIST real images, train,test")
    parser.add_argument("--baselines", action="store_true", help="add the spectral ladder at 20/100/1000 images")
    parser.add_argument("--ladder", default=",".join(map(str, LADDER)), help="the ladder's training-set sizes")
    parser.add_argument("--repeats", type=int, default=5, help="random draws per ladder size")
    parser.add_argument("--set", action="append", default=[], metavar="[DETECTOR:]FIELD=VALUE",
                        help="override a CNN config field (for one detector with the prefix)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    if args.steps < 0:
        raise ConfigError(f"--steps {args.steps}: give a step count, or 0 for each detect config's own")
    faces, fashion = _pair(args.faces_per_person, "--faces-per-person"), _pair(args.fashion_images, "--fashion-images")
    detectors = _detectors(args.detector)
    sizes = [int(s) for s in args.ladder.split(",") if s.strip()] if args.baselines else []
    generators = select(all_generators(args.extra, faces, fashion), args.generators)
    start = time.time()
    groups = run(generators, detectors, args.steps, args.set, sizes, args.repeats)
    emit({"benchmark": "detect_matrix", "machine": machine(),
          "settings": {"generators": [g.name for g in generators], "detectors": detectors, "steps": args.steps,
                       "faces_per_person": faces, "fashion_images": fashion, "extras": args.extra,
                       "overrides": args.set, "ladder": sizes, "repeats": args.repeats},
          "excluded": EXCLUDED, "reference": REFERENCE, "seconds": round(time.time() - start, 1),
          "groups": groups}, args.json)


if __name__ == "__main__":
    entry(main)
