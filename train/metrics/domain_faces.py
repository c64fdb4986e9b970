"""The offline domain extractor for synthetic faces: a small CNN trained on the renderer's known attributes.

FID/KID/precision-recall of generators of the zoo's synthetic faces (the StyleGAN2 CPU-budget run)
need a feature network that sees what makes those images differ, and Inception-v3 needs a download.
The renderer knows every image's identity, expression and pose, so this module trains a compact CNN
to classify identity among a fixed set of people and, from the same features, to regress the
expression and pose: the features (the penultimate ReLU layer) then separate people and also encode
what a generator must vary within one person. With `Recipe`'s defaults it trained in 142-154 s on
two shared CPU cores (load average 4; 800 steps of 64 images) on faces rendered from a fixed spec,
and it records that spec, the seed, the held-out identity accuracy and each attribute's held-out
R^2 in the weights header: two runs reached 100% identity accuracy on 2,000 held-out renders of
the 200 people and R^2 0.83-0.96 for mouth_open, eye_open, roll, yaw, shifts, scale and the light,
but only 0.07-0.08 for smile and 0.05-0.07 for brow_raise (each moves a curve or edge by under two
pixels at 64 px), so the features barely see those two. Training is deterministic in the recipe
for one XLA set-up; those two runs (one process plain, one with 8 simulated CPU devices) differed
in the third decimal, as float reductions split differently, which is why the metrics read a bundled
file (`extractors.BUNDLED`, trained by `Recipe()` in 123 s: R^2 0.82-0.96 and 0.07-0.08). The file
format, the cache, the errors and the name (the weights' sha256 prefix) are the MNIST extractor's
(`train.metrics.domain`).

`probs` is the identity softmax, so the Inception Score computed from it says how confidently each
sample is recognised as one of the training identities (by default ids 0-199, the people
configs/stylegan2_synthetic_faces.py trains on) times how evenly the samples spread over them. Its
ceiling is the number of identities; for a generator of other people it measures nothing useful.

Input handling (`resize = "linear_aa_64"`, a fixed function of the input size): uint8 RGB values are
scaled to float [0, 1]; images that are not 64x64 are resized to 64x64 with
`jax.image.resize(method="linear", antialias=True)`; 64x64 images pass unchanged. Greyscale is
refused: colour (skin, hair, iris, background, shirt) is much of what tells these people apart, and
the renderer never makes a grey face, so grey features would be measured off the training domain.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from einops import rearrange, reduce

from data.synthetic import EXPRESSION_FIELDS, SyntheticFaces
from train.metrics import domain
from train.metrics.features import Extractor
from zoo.errors import DataError, WeightsError

log = logging.getLogger(__name__)

NAME = "domain_synthetic_faces"
DATASET = "synthetic_faces"
SIZE = 64
RESIZE = "linear_aa_64"
ATTRIBUTES = (*EXPRESSION_FIELDS, "roll", "yaw", "shift_x", "shift_y", "scale", "light_x", "light_y")
EXTRACTOR_BATCH_SIZE = 250

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the extractor is trained on and how: identities 0..identities-1, rendered at 64 px.

    Training renders `train_per_identity` faces of each person from the "train" split of
    `SyntheticFaces` with expression/pose seed `data_seed`; the held-out scores come from
    `test_per_identity` faces each of the "test" split (the same people, other expressions and
    poses). `data_seed` 1 keeps both apart from the seed-0 renders the StyleGAN2 config trains
    and evaluates on. Identity is easy (colours alone nearly give it away; 100% held out within a
    few hundred steps), so `attribute_weight` 4 puts most of the loss on the expression and pose,
    which are what the features would otherwise learn least.
    """

    identities: int = 200
    train_per_identity: int = 50
    test_per_identity: int = 10
    data_seed: int = 1
    seed: int = 0
    steps: int = 800
    batch_size: int = 64
    learning_rate: float = 2e-3
    attribute_weight: float = 4.0

    def spec(self, per_identity: int) -> str:
        """The data spec (`data.sources.get_source`'s) of `per_identity` renders of each identity."""
        return f"{DATASET}:ids=0-{self.identities - 1};n={per_identity};size={SIZE};seed={self.data_seed}"


class FaceAttributeNet(nn.Module):
    """(3x3 conv, ReLU, 2x2 max-pool) per width, a ReLU feature layer, an identity head and an attribute head."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    features_dim: int = 256
    num_identities: int = 200
    num_attributes: int = len(ATTRIBUTES)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Float [N, 64, 64, 3] in [0, 1] -> (features [N, D], identity logits [N, K], attributes [N, A])."""
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
            x = reduce(x, "b (h 2) (w 2) c -> b h w c", "max")
        x = rearrange(x, "b h w c -> b (h w c)")
        features = nn.relu(nn.Dense(self.features_dim, name="features")(x))
        logits = nn.Dense(self.num_identities, name="identity")(features)
        return features, logits, nn.Dense(self.num_attributes, name="attributes")(features)

    def config(self) -> dict[str, Any]:
        """The fields a weights header records, so a file rebuilds the network it was trained as."""
        return {"widths": list(self.widths), "features_dim": self.features_dim,
                "num_identities": self.num_identities, "attributes": list(ATTRIBUTES)}


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 (or float on the 0..255 scale) RGB [N, H, W, 3] -> float [N, 64, 64, 3] in [0, 1] (module docstring)."""
    if images.shape[-1] != 3:
        raise DataError(
            f"{NAME} takes RGB images [N, H, W, 3], got {images.shape}: it was trained on colour faces, and colour "
            "is much of what tells its people apart; evaluate greyscale data with domain_mnist/inception_v3_fid, or "
            "repeat the channel (np.repeat(images, 3, axis=-1)) only if grey faces are really what is meant"
        )
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (SIZE, SIZE):
        x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), method="linear", antialias=True)
    return x


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model: FaceAttributeNet, params: Params, images: jax.Array) -> dict[str, jax.Array]:
    """Features, identity probabilities and (standardised) attributes of images, compiled per (model, shape)."""
    features, logits, attributes = model.apply({"params": params}, preprocess(images))
    return {"features": features, "probs": jax.nn.softmax(logits), "attributes": attributes}


def attribute_targets(expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """float32 [N, 11] in ATTRIBUTES order from the source's expression [N, 4] and pose [N, 7] vectors.

    The light's angle is circular (359 degrees is next to 0) and means nothing when its strength is
    near zero, so the light enters as the vector (strength cos angle, strength sin angle).
    """
    angle = np.deg2rad(pose[:, 5])
    light = pose[:, 6:7] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return np.concatenate([expression, pose[:, :5], light], axis=-1).astype(np.float32)


def render(recipe: Recipe, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images [N, 64, 64, 3], identity labels [N], attribute targets [N, 11]) of the recipe's split."""
    per_identity = recipe.train_per_identity if split == "train" else recipe.test_per_identity
    source = SyntheticFaces(range(recipe.identities), per_identity, SIZE, recipe.data_seed, split, cache_bytes=0)
    batch = source.gather(np.arange(len(source)))
    return batch["image"], batch["label"], attribute_targets(batch["expression"], batch["pose"])


def r_squared(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination 1 - SSE / SST: 1 is perfect, 0 is no better than the mean."""
    sse = ((predicted - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    return 1.0 - sse / np.maximum(sst, 1e-12)


def evaluate(model: FaceAttributeNet, params: Params, images: np.ndarray, labels: np.ndarray, targets: np.ndarray,
             mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """Held-out identity accuracy and each attribute's R^2 (the attribute head de-standardised by mean/std)."""
    parts: dict[str, list[np.ndarray]] = {"probs": [], "attributes": []}
    for start in range(0, len(images), EXTRACTOR_BATCH_SIZE):
        out = _outputs(model, params, images[start:start + EXTRACTOR_BATCH_SIZE])
        for key in parts:
            parts[key].append(np.asarray(out[key]))
    probs, attributes = (np.concatenate(parts[k]) for k in ("probs", "attributes"))
    r2 = r_squared(attributes * std + mean, targets)
    return {"test_accuracy": float(np.mean(probs.argmax(-1) == labels)),
            "test_r2": {name: round(float(v), 4) for name, v in zip(ATTRIBUTES, r2)},
            "test_r2_mean": float(r2.mean())}


def train_faces_classifier(recipe: Recipe = Recipe()) -> tuple[Params, dict[str, Any]]:
    """Train on the recipe's renders with Adam and a cosine schedule: identity cross-entropy plus attribute MSE.

    Deterministic in the recipe: `seed` draws the initialisation and the data order, `data_seed`
    the renders. Attribute targets are standardised by the training set's mean and std (recorded),
    so each field weighs the same in the loss whatever its unit. Returns the params and the
    provenance the weights header records.
    """
    images, labels, targets = render(recipe, "train")
    mean, std = targets.mean(0), targets.std(0) + 1e-6
    standardised = (targets - mean) / std
    model = FaceAttributeNet(num_identities=recipe.identities)
    params = model.init(jax.random.key(recipe.seed), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
    steps = recipe.steps
    schedule = optax.warmup_cosine_decay_schedule(0.0, recipe.learning_rate, max(1, min(100, steps // 10)),
                                                  max(steps, 2))
    tx = optax.adam(schedule)

    @jax.jit
    def step(params: Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array,
             t: jax.Array) -> tuple[Params, optax.OptState]:
        def loss_fn(p: Params) -> jax.Array:
            _, logits, attributes = model.apply({"params": p}, preprocess(x))
            identity = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return identity + recipe.attribute_weight * jnp.mean((attributes - t) ** 2)

        updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(recipe.seed)
    epochs = -(-steps * recipe.batch_size // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(epochs)])
    opt_state = tx.init(params)
    for i in range(steps):
        rows = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
        params, opt_state = step(params, opt_state, images[rows], labels[rows], standardised[rows])
    params = jax.device_get(params)
    scores = evaluate(model, params, *render(recipe, "test"), mean, std)
    log.warning("%s: held-out identity accuracy %.4f, attribute R^2 %s", NAME, scores["test_accuracy"],
                scores["test_r2"])
    return params, {
        "dataset": DATASET,
        "data": {"train": {"source": recipe.spec(recipe.train_per_identity), "split": "train"},
                 "test": {"source": recipe.spec(recipe.test_per_identity), "split": "test"}},
        "recipe": dataclasses.asdict(recipe), "seed": recipe.seed, "steps": steps,
        "target_mean": [float(v) for v in mean], "target_std": [float(v) for v in std],
        "model": model.config(), **scores,
    }


def load_weights(path: pathlib.Path) -> tuple[FaceAttributeNet, Params, dict[str, str]]:
    """The network a weights file was trained as, its params and header; refuses other datasets' and damaged files."""
    flat, header = domain.read_weights(path, DATASET)
    try:
        config = json.loads(header["model"])
        model = FaceAttributeNet(widths=tuple(int(w) for w in config["widths"]),
                                 features_dim=int(config["features_dim"]),
                                 num_identities=int(config["num_identities"]))
        if tuple(config["attributes"]) != ATTRIBUTES:
            raise ValueError(f"attributes {config['attributes']} are not {list(ATTRIBUTES)}")
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(
            f"{path} has no usable {NAME} model description in its header ({error!r}); delete {path} to retrain it "
            "on first use (or pass the right weights file)"
        ) from error
    params = domain.match_params(path, flat, model, (1, SIZE, SIZE, 3), f"the {NAME} network {model.config()}")
    return model, params, header


def faces_extractor(cache: pathlib.Path, weights: str | None, recipe: Recipe = Recipe()) -> Extractor:
    """The domain_synthetic_faces extractor: weights from `weights`, else the cache's, trained and cached on first use.

    `get_extractor("domain_synthetic_faces")` passes the bundled file; training here is how that file was made.
    `recipe` only matters when training; a loaded file keeps the network it was trained as.
    """
    path = domain.cached_weights(NAME, cache, weights, lambda: train_faces_classifier(recipe),
                                 f"{recipe.steps} steps, about two and a half minutes on 2 CPU cores")
    model, params, _ = load_weights(path)
    params = jax.tree.map(jnp.asarray, params)

    def forward(params: Params, images: jax.Array) -> dict[str, jax.Array]:
        out = _outputs(model, params, images)
        return {"features": out["features"], "probs": out["probs"]}

    return domain.as_extractor(forward, params, domain.weights_name(NAME, path), resize=RESIZE,
                               feature_dim=model.features_dim, num_classes=model.num_identities,
                               batch_size=EXTRACTOR_BATCH_SIZE)
