"""The FID InceptionV3 (TF graph 2015-12-05) in Flax: TF1 resize, pickle-free weights, pool3 and logits.

Reproduces pytorch-fid's `FIDInceptionV3` / torch-fidelity's `FeatureExtractorInceptionV3`, the
PyTorch ports of the graph every published FID uses: torchvision's InceptionV3 stem and blocks with
the graph's quirks (3x3 average pools that exclude padding, a max pool in Mixed_7c's pool branch,
BatchNorm eps 1e-3, a 1008-way classifier). Inputs are uint8 images, grey repeated to RGB, resized
to 299x299 with TF1.x's bilinear resize (align_corners=False, no half-pixel centres) and mapped to
(x - 128) / 128. Differences: NHWC layout; always float32 at HIGHEST matmul precision, because
features are only comparable across runs and hardware when computed alike. Weights are the user's
copy of pytorch-fid's file, checked against its pinned sha256 before it is read, then read by
`zoo.torch_weights` without running any pickle code; the extractor's name carries the hash.
"""
from __future__ import annotations

import functools
import os
import pathlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, reduce, repeat
from flax import traverse_util

from train.metrics.features import Extractor
from zoo import pretrained, torch_weights
from zoo.errors import WeightsError

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
WEIGHTS_ENV = "ZOO_FID_INCEPTION_WEIGHTS"
#: sha256 of pytorch-fid's file (95,628,359 bytes). Not computed here (no copy on this machine): it is the hash
#: other projects pin for WEIGHTS_URL and torch-fidelity's re-hosted copy, and its first 8 digits are the file
#: name's suffix, which torch hub's naming convention makes the hash prefix.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
SHA256_ENV = "ZOO_FID_INCEPTION_SHA256"
INPUT_SIZE = 299
NUM_CLASSES = 1008
FEATURE_DIM = 2048

Array = jax.Array
Variables = dict[str, Any]
_HIGHEST = jax.lax.Precision.HIGHEST


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (running stats, eps 1e-3) -> ReLU, torchvision's BasicConv2d."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    strides: int = 1
    pad: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out."""
        (ph, pw), s = self.pad, self.strides
        x = nn.Conv(self.features, self.kernel, strides=(s, s), padding=((ph, ph), (pw, pw)), use_bias=False,
                    precision=_HIGHEST, name="conv")(x)
        return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x))


def _avg_pool(x: Array) -> Array:
    """3x3 stride-1 average pool whose border windows average only real pixels, as TF does."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    """3x3 max pool."""
    return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d), FID variant: the pool branch's average excludes padding."""

    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out with 224 + pool_features channels."""
        b1 = BasicConv(64, name="branch1x1")(x)
        b5 = BasicConv(64, (5, 5), pad=(2, 2), name="branch5x5_2")(BasicConv(48, name="branch5x5_1")(x))
        b3 = BasicConv(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction block (Mixed_6a)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out at half resolution."""
        b3 = BasicConv(384, (3, 3), 2, name="branch3x3")(x)
        bd = BasicConv(64, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), 2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b-e), FID variant: average pool excludes padding."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out with 768 channels."""
        c7, row, col = self.channels_7x7, dict(kernel=(1, 7), pad=(0, 3)), dict(kernel=(7, 1), pad=(3, 0))
        b1 = BasicConv(192, name="branch1x1")(x)
        b7 = BasicConv(c7, name="branch7x7_1")(x)
        b7 = BasicConv(c7, **row, name="branch7x7_2")(b7)
        b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
        bd = BasicConv(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, **row, name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction block (Mixed_7a)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out at half resolution."""
        b3 = BasicConv(320, (3, 3), 2, name="branch3x3_2")(BasicConv(192, name="branch3x3_1")(x))
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), pad=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), pad=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), 2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, 7c); the FID graph pools by average excluding padding in 7b, by max in 7c."""

    pool: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """NHWC in, NHWC out with 2048 channels."""
        row, col = dict(kernel=(1, 3), pad=(0, 1)), dict(kernel=(3, 1), pad=(1, 0))
        b1 = BasicConv(320, name="branch1x1")(x)
        b3 = BasicConv(384, name="branch3x3_1")(x)
        b3 = [BasicConv(384, **row, name="branch3x3_2a")(b3), BasicConv(384, **col, name="branch3x3_2b")(b3)]
        bd = BasicConv(448, name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
        bd = [BasicConv(384, **row, name="branch3x3dbl_3a")(bd), BasicConv(384, **col, name="branch3x3dbl_3b")(bd)]
        pooled = _avg_pool(x) if self.pool == "avg" else _max_pool(x, 1, 1)
        bp = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3 on preprocessed [N, H, W, 3] inputs (H, W >= 75): (pool3 [N, 2048], logits [N, 1008])."""

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        """Stem, Mixed_5b..7c, global average pool (pool3) and the fc classifier's logits."""
        x = BasicConv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = _max_pool(BasicConv(64, (3, 3), pad=(1, 1), name="Conv2d_2b_3x3")(x), 2)
        x = BasicConv(80, name="Conv2d_3b_1x1")(x)
        x = _max_pool(BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x), 2)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("max", name="Mixed_7c")(InceptionE("avg", name="Mixed_7b")(x))
        pool3 = reduce(x, "n h w c -> n c", "mean")
        return pool3, nn.Dense(NUM_CLASSES, precision=_HIGHEST, name="fc")(pool3)


def _tf1_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low/high source indices and weights of TF1's resize: src = dst * in/out in float32, clamped."""
    src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), src - lo.astype(np.float32)


def tf1_bilinear_resize(x: Array, size: tuple[int, int]) -> Array:
    """TF1.x `resize_bilinear(align_corners=False)` of float [N, H, W, C], as torch-fidelity reproduces it."""
    (ylo, yhi, dy), (xlo, xhi, dx) = _tf1_taps(x.shape[1], size[0]), _tf1_taps(x.shape[2], size[1])
    dx, dy = dx[None, None, :, None], dy[None, :, None, None]
    top, bottom = x[:, ylo], x[:, yhi]
    top = top[:, :, xlo] + (top[:, :, xhi] - top[:, :, xlo]) * dx
    bottom = bottom[:, :, xlo] + (bottom[:, :, xhi] - bottom[:, :, xlo]) * dx
    return top + (bottom - top) * dy


@jax.jit
def preprocess(images: Array) -> Array:
    """uint8 [N, H, W, 1 or 3] -> float32 [N, 299, 299, 3] in [-1, 1): grey to RGB, TF1 resize, (x - 128) / 128."""
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = repeat(x[..., 0], "n h w -> n h w c", c=3)
    return (tf1_bilinear_resize(x, (INPUT_SIZE, INPUT_SIZE)) - 128.0) / 128.0


@jax.jit
def _network(variables: Variables, x: Array) -> tuple[Array, Array]:
    """The network on preprocessed inputs, compiled once per batch size whatever the image size."""
    return FIDInceptionV3().apply(variables, x)


def features_and_logits(variables: Variables, images: np.ndarray | Array) -> tuple[Array, Array]:
    """pool3 features [N, 2048] and logits [N, 1008] of uint8 images [N, H, W, 1 or 3]."""
    return _network(variables, preprocess(jnp.asarray(images)))


def _torch_name(path: tuple[str, ...]) -> str:
    """The pytorch-fid state-dict key of a flattened Flax variable path (collection, *modules, leaf)."""
    _, *modules, leaf = path
    torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var"}[leaf]
    return ".".join([*modules, torch_leaf])


def _from_torch(name: str, value: np.ndarray) -> np.ndarray:
    """A torch tensor in Flax layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
    if name.endswith(".weight") and value.ndim == 4:
        return rearrange(value, "o i h w -> h w i o")
    if name.endswith(".weight") and value.ndim == 2:
        return rearrange(value, "o i -> i o")
    return value


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Flax variable's shape in torch layout, for error messages in the file's terms."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1]


@functools.cache
def variable_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flattened Flax variable paths (collection, *modules, leaf) and shapes of FIDInceptionV3."""
    tree = jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> Variables:
    """pytorch-fid / torch-fidelity InceptionV3 state dict -> Flax {"params", "batch_stats"}, checked key by key."""
    flat, missing, mismatched = {}, [], []
    expected = {_torch_name(path): path for path in variable_shapes()}
    for name, path in expected.items():
        if name not in state_dict:
            missing.append(name)
            continue
        value = _from_torch(name, np.asarray(state_dict[name]))
        if value.shape != variable_shapes()[path]:
            mismatched.append(f"{name} is {tuple(np.shape(state_dict[name]))}, expected {_torch_shape(variable_shapes()[path])}")
            continue
        flat[path] = jnp.asarray(value, jnp.float32)
    unexpected = sorted(k for k in state_dict if k not in expected and not k.endswith("num_batches_tracked"))
    if missing or unexpected or mismatched:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        problems = [f"{label}: {show(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise ValueError("state dict is not the FID InceptionV3 (pytorch-fid format): " + "; ".join(problems))
    return traverse_util.unflatten_dict(flat)


def load_variables(path: str | os.PathLike) -> Variables:
    """Flax variables from a pytorch-fid-format `.pth` file, read without executing pickle code."""
    return convert_state_dict(torch_weights.load_state_dict(path))


def resolve_weights(weights: str | os.PathLike | None, cache: pathlib.Path) -> pathlib.Path:
    """`weights`, else $ZOO_FID_INCEPTION_WEIGHTS, else the cache's copy; FileNotFoundError says what to get."""
    default = pathlib.Path(cache) / WEIGHTS_FILENAME
    if weights:
        path, source = pathlib.Path(weights).expanduser(), "the weights argument"
    elif os.environ.get(WEIGHTS_ENV):
        path, source = pathlib.Path(os.environ[WEIGHTS_ENV]).expanduser(), f"${WEIGHTS_ENV}"
    else:
        path, source = default, "the default cache location"
    if not path.is_file():
        raise FileNotFoundError(
            f"FID InceptionV3 weights not found at {path} (from {source}). Download pytorch-fid's {WEIGHTS_URL} "
            f"and put it at {default}, or point ${WEIGHTS_ENV} (or the weights argument) at your copy."
        )
    return path


def pinned_sha256() -> str:
    """$ZOO_FID_INCEPTION_SHA256 (for a copy you converted on purpose) or pytorch-fid's pin, as 64 hex digits."""
    pin = os.environ.get(SHA256_ENV, "").strip().lower() or WEIGHTS_SHA256
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise WeightsError(f"${SHA256_ENV} is {pin!r}; it must be a full sha256 (64 hex digits), not a prefix")
    return pin


def verify_weights(path: pathlib.Path, cache: pathlib.Path) -> str:
    """The weights file's sha256 once it equals the pin: other weights give FIDs no one can compare with."""
    pin = pinned_sha256()
    source = f"${SHA256_ENV}" if pin != WEIGHTS_SHA256 else f"pytorch-fid's {WEIGHTS_FILENAME}"
    return pretrained.verify_sha256(
        path, pin, what=f"the FID InceptionV3 weights (pinned by {source})",
        fix=f"download {WEIGHTS_URL} again and put it at {pathlib.Path(cache) / WEIGHTS_FILENAME}, or, for a copy "
            f"you converted on purpose, set ${SHA256_ENV} to its sha256 (its FIDs then differ in name)",
    )


def fid_inception_extractor(weights: str | None, cache: pathlib.Path, *, batch_size: int = 50) -> Extractor:
    """The standard FID extractor: pool3 features and softmax class probabilities of the FID InceptionV3.

    The weights' hash is checked before they are read and named in the extractor (so in every protocol line).
    """
    path = resolve_weights(weights, cache)
    digest = verify_weights(path, cache)
    variables = jax.device_put(load_variables(path))

    def apply(images: np.ndarray) -> dict[str, np.ndarray]:
        features, logits = features_and_logits(variables, images)
        return {"features": np.asarray(features, np.float32),
                "probs": np.asarray(jax.nn.softmax(logits, axis=-1), np.float32)}

    return Extractor(name=f"inception_v3_fid@{digest[:12]}", resize="tf1_bilinear_299", feature_dim=FEATURE_DIM,
                     num_classes=NUM_CLASSES, batch_size=batch_size, apply=apply)
