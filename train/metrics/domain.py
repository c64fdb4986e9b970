"""The offline "domain" feature extractor: a small CNN trained on MNIST or Fashion-MNIST, shipped with the zoo.

FID/KID/precision-recall/IS on 28x28 grey data need a feature network; Inception-v3 needs a
download and is a poor fit for digits. This module trains a compact classifier (about two minutes
on two CPU cores) from a local copy of the data, writes it as one safetensors file with its
provenance in the header, and serves its penultimate ReLU activations as features and its softmax
as class probabilities. The extractor's name carries the sha256 prefix of the weights file, so
statistics computed with different weights are never compared. Those pieces (`save_weights`,
`read_weights`, `match_params`, `cached_weights`, `weights_name`, `as_extractor`) also serve the
other domain extractors (`domain_faces`), so every such file is written, checked and named alike.

The metrics read the files bundled in zoo/weights (`extractors.BUNDLED`, which says why);
`domain_extractor` trains into a cache, which is how those files were made and what a user with other
data does.

Input handling (`resize = "linear_aa_28"`, a fixed function of the input size): uint8 values are
scaled to float [0, 1]; RGB is converted to grey by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B);
images that are not 28x28 are resized to 28x28 with `jax.image.resize(method="linear",
antialias=True)`; 28x28 images pass unchanged.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from einops import rearrange, reduce
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from data import provenance, sources
from train.metrics.features import Extractor
from zoo import files, pretrained
from zoo.errors import WeightsError
from zoo.spectral import LUMA_601

log = logging.getLogger(__name__)

FORMAT = "deepfake-zoo.domain-extractor"
VERSION = 1
SIZE = 28
RESIZE = "linear_aa_28"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DATASETS = ("mnist", "fashion_mnist")
DEFAULT_STEPS = {"mnist": 2000, "fashion_mnist": 2000}
DEFAULT_BATCH_SIZE = 64
LEARNING_RATE = 2e-3
EXTRACTOR_BATCH_SIZE = 500

Params = dict[str, Any]


class DomainClassifier(nn.Module):
    """(3x3 conv, ReLU, 2x2 max-pool) per width, a ReLU feature layer and a 10-way head: small enough to train on CPU."""

    widths: tuple[int, ...] = (32, 64)
    features_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Float [N, 28, 28, 1] in [0, 1] -> (features [N, features_dim], logits [N, num_classes])."""
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
            x = reduce(x, "b (h 2) (w 2) c -> b h w c", "max")
        x = rearrange(x, "b h w c -> b (h w c)")
        features = nn.relu(nn.Dense(self.features_dim, name="features")(x))
        return features, nn.Dense(self.num_classes, name="logits")(features)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 [N, H, W, 1 or 3] -> float grey [N, 28, 28, 1] in [0, 1], the network's input (see module docstring)."""
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] == 3:
        x = x @ jnp.asarray(LUMA_601, jnp.float32)[:, None]
    if x.shape[1:3] != (SIZE, SIZE):
        x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 1), method="linear", antialias=True)
    return x


@jax.jit
def _forward(params: Params, images: jax.Array) -> dict[str, jax.Array]:
    """Features and class probabilities of uint8 images, compiled once per (batch, input) shape."""
    features, logits = DomainClassifier().apply({"params": params}, preprocess(images))
    return {"features": features, "probs": jax.nn.softmax(logits)}


def as_extractor(forward: Callable[[Params, jax.Array], dict[str, jax.Array]], params: Params, name: str, *,
                 resize: str, feature_dim: int, num_classes: int, batch_size: int) -> Extractor:
    """A compiled `forward(params, uint8 images) -> {"features", "probs"}` as an `Extractor` returning NumPy arrays."""
    return Extractor(name=name, resize=resize, feature_dim=feature_dim, num_classes=num_classes, batch_size=batch_size,
                     apply=lambda images: {k: np.asarray(v) for k, v in forward(params, images).items()})


def _extractor(params: Params, name: str) -> Extractor:
    """The classifier as an `Extractor` named `name` (the caller pins it to a weights file)."""
    model = DomainClassifier()
    return as_extractor(_forward, params, name, resize=RESIZE, feature_dim=model.features_dim,
                        num_classes=model.num_classes, batch_size=EXTRACTOR_BATCH_SIZE)


def _tfds_dir() -> pathlib.Path:
    """Where TFDS keeps prepared datasets: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or pathlib.Path.home() / "tensorflow_datasets")


def _candidates(dataset: str) -> list[tuple[str, pathlib.Path]]:
    """(spec, directory) pairs for local copies of `dataset`, in order of preference."""
    tfds = (f"tfds:{dataset}", _tfds_dir() / dataset)
    if dataset == "mnist":
        shared = (REPO_ROOT / sources.SHARED_DATA_DIR / "mnist").resolve()
        return [tfds, (f"idx:{shared}", shared)]
    if dataset == "fashion_mnist":
        return [(f"idx:{sources.FASHION_MNIST_DIR}", sources.FASHION_MNIST_DIR), tfds]
    raise ValueError(f"no domain extractor for dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def find_data(dataset: str) -> str:
    """The spec of the first local copy of `dataset`, or an error naming where it looked and how to get it."""
    for spec, directory in _candidates(dataset):
        if spec.startswith("tfds:") and any(directory.glob("*/*.array_record*")):
            return spec
        if spec.startswith("idx:") and directory.is_dir() and any(directory.iterdir()):
            return spec
    looked = "\n".join(f"  {spec} ({directory})" for spec, directory in _candidates(dataset))
    how = {
        "mnist": f"put the MNIST idx files in {_candidates('mnist')[1][1]}",
        "fashion_mnist": "apt-get install -y dataset-fashion-mnist (Debian/Ubuntu; installs the idx files "
        f"into {sources.FASHION_MNIST_DIR})",
    }[dataset]
    raise FileNotFoundError(
        f"the domain_{dataset} feature extractor trains itself on {dataset}, but no local copy was found; "
        f"looked at:\n{looked}\nGet it: {how}, or prepare it with TFDS:\n    "
        f"{sources._prepare_command(dataset, None)}\n(or pass weights= an already trained domain_{dataset} file)"
    )


@functools.lru_cache(maxsize=2)
def load_data(dataset: str) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(spec, {split: (uint8 images [N, 28, 28, 1], int64 labels [N])}) for train and test, cached per process."""
    spec = find_data(dataset)
    splits = {}
    for split in ("train", "test"):
        source = sources.get_source(spec, split)
        if isinstance(source, sources.ArraySource):
            images, labels = np.asarray(source.images), np.asarray(source.labels)
        else:
            examples = [source[i] for i in range(len(source))]
            images = np.stack([e["image"] for e in examples])
            labels = np.array([e["label"] for e in examples], np.int64)
        if images.shape[1:] != (SIZE, SIZE, 1):
            raise ValueError(f"{spec} ({split}) has images {images.shape[1:]}; the domain classifier needs 28x28x1")
        splits[split] = (images, labels)
    return spec, splits


def accuracy(params: Params, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the classifier on uint8 images."""
    probs = _extractor(params, "training")(images)["probs"]
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def train_domain_classifier(
    dataset: str, *, seed: int = 0, steps: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[Params, float]:
    """Train the classifier with Adam and a cosine schedule; deterministic in `seed` (init and data order)."""
    _, data = load_data(dataset)
    steps = DEFAULT_STEPS[dataset] if steps is None else steps
    images, labels = data["train"]
    model = DomainClassifier()
    params = model.init(jax.random.key(seed), jnp.zeros((1, SIZE, SIZE, 1)))["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, LEARNING_RATE, max(1, min(100, steps // 10)), max(steps, 2))
    tx = optax.adam(schedule)

    @jax.jit
    def step(params: Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array) -> tuple[Params, optax.OptState]:
        def loss_fn(p: Params) -> jax.Array:
            _, logits = model.apply({"params": p}, preprocess(x))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(epochs)])
    opt_state = tx.init(params)
    for i in range(steps):
        rows = order[i * batch_size:(i + 1) * batch_size]
        params, opt_state = step(params, opt_state, images[rows], labels[rows])
    params = jax.device_get(params)
    return params, accuracy(params, *data["test"])


def _versions() -> dict[str, str]:
    return provenance.package_versions("deepfake-zoo", "jax", "jaxlib", "flax", "optax", "numpy")


def save_weights(path: pathlib.Path, params: Params, metadata: dict[str, Any]) -> pathlib.Path:
    """Write params as "/"-joined tensor names plus string metadata, atomically (tmp file + os.replace)."""
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    header = {"format": FORMAT, "format_version": str(VERSION),
              **{k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}}
    with files.atomic_write(path) as tmp:
        save_file(flat, str(tmp), metadata=header)
    return path


def _retrain(path: pathlib.Path) -> str:
    return f"delete {path} to retrain it on first use (or pass the right weights file)"


def read_weights(path: pathlib.Path, dataset: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Flat tensors and header of a domain-extractor file, refusing an unreadable one, another format or dataset."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = dict(f.metadata() or {})
        flat = load_file(str(path))
    except Exception as error:  # noqa: BLE001  (any parse failure means: not a weights file)
        raise WeightsError(f"{path} is not a readable safetensors weights file ({error}); {_retrain(path)}") from error
    if header.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} file (format={header.get('format')!r}); {_retrain(path)}")
    if dataset is not None and header.get("dataset") not in (None, dataset):
        raise WeightsError(f"{path} holds domain_{header['dataset']} weights, not domain_{dataset}; {_retrain(path)}")
    return flat, header


def match_params(path: pathlib.Path, flat: dict[str, np.ndarray], module: nn.Module,
                 input_shape: tuple[int, ...], what: str) -> Params:
    """`flat` tensors as `module`'s params, refusing missing, unexpected or wrongly shaped ones (named with `what`)."""
    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))["params"]
    want = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(expected).items()}
    got = {k: tuple(v.shape) for k, v in flat.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [f"{k}: {got[k]} != {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if missing or extra or wrong:
        raise WeightsError(
            f"{path} does not match {what}: missing {missing}, unexpected {extra}, wrong shapes {wrong}; "
            f"{_retrain(path)}"
        )
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def load_weights(path: pathlib.Path, dataset: str | None = None) -> tuple[Params, dict[str, str]]:
    """Read a weights file, refusing one whose tensor names or shapes (or dataset) do not fit this classifier."""
    flat, header = read_weights(path, dataset)
    params = match_params(path, flat, DomainClassifier(), (1, SIZE, SIZE, 1), f"the domain classifier (v{VERSION})")
    return params, header


def cached_weights(name: str, cache: pathlib.Path, weights: str | None,
                   train: Callable[[], tuple[Params, dict[str, Any]]], budget: str) -> pathlib.Path:
    """The weights file of extractor `name`: `weights`, else the cache's, trained by `train()` and written on first use.

    `train` returns the params and the provenance to record (data, seed, steps, held-out scores);
    the training time and package versions are added here.
    """
    path = pathlib.Path(weights) if weights else pathlib.Path(cache) / f"{name}-v{VERSION}.safetensors"
    if weights and not path.is_file():
        raise FileNotFoundError(f"{name} weights file {path} does not exist")
    if not path.is_file():
        log.warning("no %s weights at %s: training them now (%s), once", name, path, budget)
        start = time.perf_counter()
        params, metadata = train()
        seconds = time.perf_counter() - start
        save_weights(path, params, {**metadata, "train_seconds": round(seconds, 1), "versions": _versions()})
        log.warning("trained %s in %.0f s; wrote %s", name, seconds, path)
    return path


def weights_name(name: str, path: pathlib.Path) -> str:
    """`name@<sha256 prefix of the weights file>`: statistics from different weights never share a name."""
    return f"{name}@{pretrained.sha256(path)[:12]}"


def _train_with_provenance(dataset: str, seed: int, steps: int) -> tuple[Params, dict[str, Any]]:
    params, test_accuracy = train_domain_classifier(dataset, seed=seed, steps=steps)
    log.warning("domain_%s: test accuracy %.4f", dataset, test_accuracy)
    model = DomainClassifier()
    return params, {
        "dataset": dataset, "data": load_data(dataset)[0], "seed": seed, "steps": steps,
        "batch_size": DEFAULT_BATCH_SIZE, "learning_rate": LEARNING_RATE, "test_accuracy": test_accuracy,
        "model": {"widths": list(model.widths), "features_dim": model.features_dim, "num_classes": model.num_classes},
    }


def domain_extractor(
    dataset: str, cache: pathlib.Path, weights: str | None, *, seed: int = 0, steps: int | None = None
) -> Extractor:
    """The domain_<dataset> extractor: weights from `weights`, else the cache's, trained and cached on first use.

    `get_extractor("domain_<dataset>")` passes the bundled file; training here is how that file was made.
    """
    if dataset not in DATASETS:
        raise ValueError(f"no domain extractor for dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    steps = DEFAULT_STEPS[dataset] if steps is None else steps
    path = cached_weights(f"domain_{dataset}", cache, weights, lambda: _train_with_provenance(dataset, seed, steps),
                          f"{steps} steps, about two minutes on 2 CPU cores")
    params, _ = load_weights(path, dataset)
    return _extractor(jax.tree.map(jnp.asarray, params), weights_name(f"domain_{dataset}", path))
