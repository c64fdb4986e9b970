"""Detection family: a real/fake image classifier trained on the zoo's own fakes, measured as forensics papers do.

Batches carry `label` (1 = fake, 0 = real), as the `fakemix:` and `fakeset:` sources write it. The loss
is binary cross-entropy on one logit per image; with `detect.balance` each class weighs half whatever
its share of the batch (fakemix gives two fakes per real for a swap model's two directions), with the
class counts taken over the global batch so jit and pmap give one gradient. Training images pass
through Wang et al.'s augmentation (flip, blur sigma in [0, 3], JPEG quality 30-100, each at p = 0.5)
in the input workers, to real and fake alike, so compression and blur do not tell the classes apart.

Evaluation (`detect`, a host evaluator) scores the whole held-out split and reports what
DeepfakeBench and Wang et al. report: frame-level AUC, AP, accuracy at logit 0, TPR at 1% and 5% FPR,
video-level AUC where examples carry a `video` id, and the same numbers after each perturbation of
`detect.sweep` (JPEG, H.264, blur, down-up resize), as `<perturbation>/<metric>` rows. An export
(`train.export`) pins the 5%-FPR threshold on those held-out reals in its metadata, the operating point
`detectability` applies to other runs' fakes.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import degrade, pipeline
from train import optim as optim_lib
from train import parallel, sections
from train.config import model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from train.metrics import detectability, detection
from zoo import registry
from zoo.errors import ConfigError

GROUP_FIELDS = ("video",)
SPECTRAL = ("spectrum_durall_detector", "spectrum_frank_detector")


def section() -> ml_collections.ConfigDict:
    """The `config.detect` defaults, defined in `train.sections`."""
    return sections.detect()


def make(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
    """The detection family for `config`, on images of `image_shape` (H, W, C)."""
    if config.model.name in SPECTRAL:
        raise ConfigError(f"model.name = {config.model.name!r} is a spectral baseline: its feature statistics come from "
                          "the whole training set, which this trainer's steps never see at once; fit it in seconds with "
                          "train.spectral_head.fit_spectral_head (or python -m benchmarks detect_matrix --detector "
                          "durall,frank), and train xception_detector or resnet_detector here")
    kw = model_kwargs(config.model)
    model = registry.create_model(config.model.name, **kw)
    tx = optim_lib.make(config.optim, config.total_steps)
    hp = config.detect
    score = jax.jit(functools.partial(logits, model))
    return Family(
        init=functools.partial(init_state, model, tx, tuple(image_shape)),
        steps={"train": Step(functools.partial(train_step, model, tx, hp.balance), prefix="")},
        preview=functools.partial(preview, model),
        preview_columns=8,
        evaluators={"bce": functools.partial(eval_bce, model)},
        host_evaluators={"detect": functools.partial(eval_detect, score, tuple(hp.sweep), config.eval.batch_size)},
        default_metrics=("bce", "detect"),
        export=functools.partial(export, config.model.name, kw),
        train_transforms=functools.partial(train_transforms, hp),
        export_metadata=functools.partial(pinned_threshold, score, config.eval.batch_size, config.eval.num_examples),
    )


def to_unit(images: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1], the range every detector takes."""
    return images.astype(jnp.float32) / 255.0


def init_state(model: Any, tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
               rng: jax.Array, batch: Batch) -> State:
    """Fresh params, optimiser state and the detector's other collections (batch-norm statistics)."""
    variables = dict(model.init(rng, jnp.zeros((1, *image_shape), jnp.float32)))
    params = variables.pop("params")
    return {"step": jnp.int32(0), "params": {"detector": params}, "opt_state": {"detector": tx.init(params)},
            "collections": {"detector": variables}}


def apply(model: Any, state: State, params: Any, images: jax.Array, train: bool) -> tuple[jax.Array, dict]:
    """Logits [B] and, in training, the updated collections (batch statistics)."""
    cols = state["collections"]["detector"]
    variables = {"params": params, **cols}
    if train and cols:
        out, new_cols = model.apply(variables, images, train=True, mutable=list(cols))
        return out, dict(new_cols)
    return model.apply(variables, images, train=train), cols


def logits(model: Any, state: State, images: jax.Array) -> jax.Array:
    """The detector's logits for uint8 images (inference mode): higher means more likely fake."""
    return apply(model, state, state["params"]["detector"], to_unit(images), False)[0]


def balanced_bce(logit: jax.Array, label: jax.Array, balance: bool) -> jax.Array:
    """Mean BCE, or with `balance` the mean over fakes plus the mean over reals, halved.

    The class counts are averaged over replicas, so each replica's loss is its share of the global-batch
    loss and the replicas' mean gradient is the global one (a class absent from the batch adds nothing).
    """
    per_example = optax.sigmoid_binary_cross_entropy(logit, label)
    if not balance:
        return jnp.mean(per_example)
    fake = label
    real = 1.0 - label
    n_fake, n_real = parallel.pmean((jnp.sum(fake), jnp.sum(real)))  # per-replica means: may be below 1
    return 0.5 * (jnp.sum(per_example * fake) / jnp.where(n_fake > 0, n_fake, 1.0)
                  + jnp.sum(per_example * real) / jnp.where(n_real > 0, n_real, 1.0))


def train_step(model: Any, tx: optax.GradientTransformation, balance: bool, state: State, batch: Batch,
               rng: jax.Array) -> tuple[State, dict]:
    """One update of the detector on a batch of real and fake images."""
    del rng
    images, label = to_unit(batch["image"]), batch["label"].astype(jnp.float32)

    def loss_fn(params):
        out, cols = apply(model, state, params, images, True)
        loss = balanced_bce(out.astype(jnp.float32), label, balance)
        correct = ((out > 0) == (label > 0.5)).astype(jnp.float32)
        return loss, (cols, {"loss": loss, "accuracy": jnp.mean(correct), "fake_share": jnp.mean(label)})

    params, opt_state = state["params"]["detector"], state["opt_state"]["detector"]
    grads, (cols, metrics) = jax.grad(loss_fn, has_aux=True)(params)
    grads, metrics = parallel.pmean((grads, metrics))
    cols = parallel.pmean(cols)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    return dict(state, params={"detector": params}, opt_state={"detector": opt_state},
                collections={"detector": cols}), metrics


def eval_bce(model: Any, state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example BCE on held-out images (unbalanced: the split's own class shares); `detect` has the rest."""
    out = logits(model, state, batch["image"]).astype(jnp.float32)
    return {"bce": optax.sigmoid_binary_cross_entropy(out, batch["label"].astype(jnp.float32))}


def eval_detect(score: Any, sweep: tuple[str, ...], batch_size: int, state: State, source: Any,
                num_examples: int) -> dict[str, float]:
    """Forensics metrics on the split's first `num_examples` (0 = all), clean and after each perturbation."""
    images, labels, groups = held_out(source, num_examples)
    scores = score_images(score, state, images, batch_size)
    results = detection.summarize(labels, scores, groups)
    for name in sweep:
        perturbed = degrade.apply_sweep(name, images, clips=groups)
        rows = detection.summarize(labels, score_images(score, state, perturbed, batch_size), groups)
        results |= {f"{name}/{k}": v for k, v in rows.items() if not k.startswith("num_")}
    return results


def held_out(source: Any, num_examples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 images, labels and (where examples have one) video ids of the evaluation examples."""
    limit = min(num_examples or len(source), len(source))
    batches = list(pipeline.eval_batches(source, 256, limit=limit))
    images = np.concatenate([b["image"] for b in batches])
    mask = np.concatenate([b[pipeline.VALID] for b in batches]).astype(bool) if pipeline.VALID in batches[0] else None
    labels = np.concatenate([b["label"] for b in batches])
    group_key = next((k for k in GROUP_FIELDS if k in batches[0]), None)
    groups = np.concatenate([b[group_key] for b in batches]) if group_key else None
    if mask is not None:
        images, labels = images[mask], labels[mask]
        groups = groups[mask] if groups is not None else None
    return images, labels, groups


def score_images(score: Any, state: State, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for uint8 images in fixed-size batches (the last one padded), so one program serves all."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
        out.append(np.asarray(score(state, np.concatenate([chunk, pad])))[:len(chunk)])
    return np.concatenate(out).astype(np.float64)


def pinned_threshold(score: Any, batch_size: int, num_examples: int, state: State, source: Any,
                     spec: str) -> dict[str, Any]:
    """The export's pinned operating point: the 5%-FPR threshold on the evaluation split's reals (those `detect` uses).

    `detectability` applies it unchanged to other runs' outputs, so a detector's "flagged" never rests on a
    threshold fitted to the data it reports on.
    """
    images, labels, _ = held_out(source, num_examples)
    reals = images[labels == 0]
    return detectability.pin(score_images(score, state, reals, batch_size) if len(reals) else np.zeros(0), spec,
                             images.shape[1:])


def preview(model: Any, state: State, batch: Batch, rng: jax.Array) -> jax.Array:
    """Two rows of 8: the batch's images the detector finds most fake, then those it finds most real."""
    out = logits(model, state, batch["image"])
    order = jnp.argsort(-out)
    images = to_unit(batch["image"])
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    return jnp.concatenate([images[order[:8]], images[order[::-1][:8]]])


def export(name: str, fields: dict[str, Any], state: State) -> Export:
    """The detector's params and batch statistics with its registry name and fields, for `zoo.pretrained`."""
    return Export(name, fields, state["params"]["detector"], dict(state["collections"]["detector"]))


def train_transforms(hp: ml_collections.ConfigDict, source: Any, source_b: Any) -> tuple[Any, None]:
    """Wang et al.'s flip/blur/JPEG augmentation, run on every training image in the input workers."""
    fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in hp.augment.items()}
    return degrade.DetectorAugment(**fields), None
