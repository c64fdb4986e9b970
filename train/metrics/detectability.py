"""Detectability: how a pinned, named detector scores a run's own outputs against the matching real images.

A generative run's fakes (`Family.generate` on the evaluation split, drawn with the key `train.generate`
uses, so these are the images a fake set of the run holds, less the watermark) and the split's real
images go through a detector exported from a detect run (`eval.detector`: a catalogue name or a file).
Per kind of fake, with the matching reals (a2b: the real B faces, b2a: the real A faces, GAN and VAE
samples and reconstructions: the split's images):

- `detectability/<kind>/auc`: ROC AUC of fakes against those reals (0.5: the detector cannot tell them
  apart; 1.0: it separates them completely);
- `detectability/<kind>/flagged`: the share of fakes above the detector's pinned threshold, the logit at
  which 5% of its own held-out reals were flagged (the 5%-FPR operating point of Wang et al.);
- `detectability/<kind>/real_flagged`: the same threshold on these reals. It is near 5% only when the
  detector's real class looks like this run's data; far above, the detector flags the data rather than
  the generator, and `flagged` means little; far below, `flagged` understates detection.

The threshold is pinned with the weights: `python -m train.export` on a detect run measures it on that
run's evaluation reals (`pin`) and writes it into the file's metadata; a file without one is refused, so
no number here depends on a threshold fitted to the data it reports on. A detector sees images of one
size; one trained at 64 px scoring 128 px faces is meaningless, so any other shape is refused rather
than resized. Fakes are rounded to uint8 first, as every image the zoo writes and every fake a detector
trains on is. The protocol line names the detector's model, file, sha256, threshold and its origin.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from data import pipeline, provenance
from train.metrics import detection
from zoo.errors import ConfigError, DataError, WeightsError

NAME = "detectability"
FIELD = "eval.detector"
PIN_KEY = "threshold"
"""The export-metadata entry holding a detector's pinned operating point."""
PIN_FPR = 0.05
MATCHING_REAL = {"a2b": "b_image", "b2a": "a_image", "sample": "image", "reconstruction": "image"}
"""The batch field holding the real images a kind of fake is compared with: a swap's target person."""
_PIN_FIELDS = {"logit": (int, float), "fpr": (int, float), "num_reals": int, "source": str, "image_shape": list}


@dataclasses.dataclass(frozen=True)
class PinnedDetector:
    """A detector export with its pinned threshold: what detectability scores with, and what its protocol names."""

    name: str
    path: pathlib.Path
    sha256: str
    model: str
    module: Any
    variables: Any
    threshold: float
    fpr: float
    num_reals: int
    source: str
    image_shape: tuple[int, int, int]

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Logits (higher = more likely fake) of uint8 images [B, H, W, C], in float64."""
        return np.asarray(_logits(self.module, self.variables, images), np.float64)

    def describe(self) -> str:
        """The protocol line: detector model, file, sha256, threshold and where the threshold came from."""
        return (f"detector {self.model} ({self.path.name}, sha256 {self.sha256}); flagged = logit > "
                f"{self.threshold:.6g}, its {self.fpr:.0%}-FPR threshold on {self.num_reals} reals of {self.source}; "
                f"images {'x'.join(map(str, self.image_shape))} uint8")


@functools.partial(jax.jit, static_argnums=0)
def _logits(module: Any, variables: Any, images: jax.Array) -> jax.Array:
    """The detect family's scoring (uint8 -> [0, 1], inference mode), so the pinned threshold means the same here."""
    return module.apply(variables, images.astype(jnp.float32) / 255.0, train=False)


def pin(real_scores: np.ndarray, source: str, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """The export metadata pinning a detector's 5%-FPR threshold, measured on `real_scores` of reals from `source`."""
    real_scores = np.asarray(real_scores, np.float64)
    if not real_scores.size:
        raise DataError(f"no real images (label 0) in the evaluation examples of {source}: the detector's threshold "
                        "is measured on held-out reals; evaluate on a split holding some (eval.num_examples = 0: all)")
    return {PIN_KEY: {"logit": detection.threshold_at_fpr(real_scores, PIN_FPR), "fpr": PIN_FPR,
                      "num_reals": int(real_scores.size), "source": source,
                      "image_shape": [int(d) for d in image_shape]}}


def load_detector(name_or_path: str) -> PinnedDetector:
    """The detector export `name_or_path` (catalogue name or file) and its pinned threshold; WeightsError without one."""
    from zoo import catalogue, pretrained

    if not name_or_path:
        raise ConfigError(f"detectability needs a detector: set {FIELD} to a detector export (a file written by "
                          "`python -m train.export --workdir <detect run>`, or a catalogue name): "
                          f"--config.{FIELD}=FILE when training, or `python -m train.evaluate --detector FILE` "
                          "for a finished run")
    loaded = pretrained.load(name_or_path)
    path = pathlib.Path(name_or_path)
    if not path.is_file():
        path = pretrained.entry_path(str(name_or_path), catalogue.REGISTRY[str(name_or_path)])
    pinned = loaded.config["metadata"].get(PIN_KEY)
    if pinned is None:
        raise WeightsError(f"{path} ({loaded.config['model']}) has no pinned threshold ({PIN_KEY!r} in its metadata), "
                           "so what it flags would be unknown; export the detector from its detect run with "
                           "`python -m train.export --workdir <detect run>`, which measures the 5%-FPR threshold on "
                           "that run's evaluation reals and writes it into the file")
    _check_pin(path, pinned)
    return PinnedDetector(
        name=str(name_or_path), path=path, sha256=pretrained.sha256(path), model=loaded.config["model"],
        module=loaded.module, variables=loaded.variables, threshold=float(pinned["logit"]), fpr=float(pinned["fpr"]),
        num_reals=pinned["num_reals"], source=pinned["source"], image_shape=tuple(pinned["image_shape"]))


def _check_pin(path: pathlib.Path, pinned: Any) -> None:
    bad = not isinstance(pinned, Mapping) or any(
        not isinstance(pinned.get(k), kind) or isinstance(pinned.get(k), bool) for k, kind in _PIN_FIELDS.items())
    if bad or len(pinned["image_shape"]) != 3 or not all(isinstance(d, int) for d in pinned["image_shape"]):
        raise WeightsError(f"{path} has a damaged {PIN_KEY!r} entry in its metadata ({pinned!r}; expected the fields "
                           f"{', '.join(_PIN_FIELDS)}); re-export the detector with `python -m train.export`")


def evaluate(generate: Callable[[Any, Any, jax.Array], dict[str, jax.Array]], state: Any, source: Any, *,
             detector: str, batch_size: int, key: jax.Array, seed: int, num_examples: int = 0) -> dict[str, Any]:
    """`detectability/<kind>/{auc,flagged,real_flagged}` of the family's outputs on the split's first `num_examples`
    (0 = all), and `detectability/protocol`.

    `generate` is the family's compiled `Family.generate` and `key` the evaluation key of `seed`, both from the
    metric driver (`train.evaluators`), which imports this module and so is not imported by it.
    """
    pinned = load_detector(detector)
    fake_scores: dict[str, list[np.ndarray]] = {}
    real_scores: dict[str, list[np.ndarray]] = {}
    limit = min(num_examples or len(source), len(source))
    for batch in pipeline.eval_batches(source, batch_size, limit=limit):
        valid = np.asarray(batch[pipeline.VALID], bool)
        fakes = jax.device_get(generate(state, batch, key))
        unknown = sorted(set(fakes) - set(MATCHING_REAL))
        if unknown:
            raise ConfigError(f"detectability has no matching real images for fakes of kind {unknown}; it knows "
                              f"{', '.join(MATCHING_REAL)}")
        for kind, images in fakes.items():
            fake_scores.setdefault(kind, []).append(_score(pinned, provenance.to_uint8(images), f"{kind} fake")[valid])
        for real in sorted({MATCHING_REAL[kind] for kind in fakes}):
            real_scores.setdefault(real, []).append(_score(pinned, batch[real], f"real {real}")[valid])
    results: dict[str, Any] = {}
    for kind, parts in sorted(fake_scores.items()):
        fake, real = np.concatenate(parts), np.concatenate(real_scores[MATCHING_REAL[kind]])
        labels = np.r_[np.ones(fake.size), np.zeros(real.size)]
        results |= {f"{NAME}/{kind}/auc": detection.roc_auc(labels, np.r_[fake, real]),
                    f"{NAME}/{kind}/flagged": float(np.mean(fake > pinned.threshold)),
                    f"{NAME}/{kind}/real_flagged": float(np.mean(real > pinned.threshold))}
    kinds = ", ".join(f"{kind} vs {MATCHING_REAL[kind]}" for kind in sorted(fake_scores))
    results[f"{NAME}/protocol"] = (f"{pinned.describe()}; fakes: Family.generate on the first {limit} evaluation "
                                   f"examples (seed {seed}), {kinds}")
    return results


def _score(pinned: PinnedDetector, images: np.ndarray, what: str) -> np.ndarray:
    """The detector's scores of one batch, after checking the images have the shape its threshold was measured on."""
    shape = tuple(int(d) for d in images.shape[1:])
    if shape != pinned.image_shape:
        size = "x".join(map(str, pinned.image_shape))
        raise ConfigError(f"detector {pinned.path} was trained and thresholded on {size} images, but the {what} "
                          f"images here are {'x'.join(map(str, shape))}; its scores on another size mean nothing, "
                          f"so set {FIELD} to a detector trained on {'x'.join(map(str, shape))} images (a detect "
                          "config on this run's data, exported with `python -m train.export`)")
    return pinned.scores(np.asarray(images))
