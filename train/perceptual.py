"""FOMM's perceptual pyramid loss: L1 between VGG19 relu_k_1 features of prediction and target at several scales.

FOMM (Siarohin et al. 2019, `config/vox-256.yaml`) and TPSMM train their generators with it:
for each scale in (1, 0.5, 0.25, 0.125), both images are anti-aliased and down-sampled
(`zoo.warp.antialias_downsample`, FOMM's Gaussian blur then stride), ImageNet-normalised, and
passed through an ImageNet VGG19 (`zoo.vgg.VGG19Features`); the loss adds weight * mean |f(pred) -
f(target)| over relu1_1..relu5_1 (weights 10 each) and over scales, the target's features held
constant. Images are NHWC RGB in [0, 1].

Weights are torchvision's `vgg19-dcbb9e9d.pth` (catalogue converter `vgg19_torchvision`), read by
`zoo.torch_weights` without pickle code. torchvision publishes only the first 8 hex digits of each
file's sha256, in its name; `load_vgg19` checks the file against the prefix its name carries, as
torchvision's own `check_hash` does, before reading it, and refuses a file whose name carries none.
The catalogue's file is `vgg19-dcbb9e9d.pth`; a file named with another prefix holds other VGG19
weights (its losses are not FOMM's) and loads only because its name says which bytes it holds.

Each scale's image must be at least 16 px on a side for VGG19's four max pools before relu5_1
(FOMM's 256 px frames give 32 px at 0.125; a 64 px run can use scales down to 0.25).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from zoo import catalogue, pretrained, torch_weights, vgg, warp
from zoo.errors import ConfigError, DataError, WeightsError

__all__ = ["FOMM_LAYER_WEIGHTS", "FOMM_SCALES", "IMAGENET_MEAN", "IMAGENET_STD", "MIN_SIZE", "VGGPyramid",
           "check_image_size", "check_weights_file", "load_vgg19", "pyramid_loss"]

Array = jax.Array
Variables = dict[str, Any]
FeaturesFn = Callable[[Variables, Array], Sequence[Array]]

FOMM_SCALES = (1.0, 0.5, 0.25, 0.125)
FOMM_LAYER_WEIGHTS = (10.0,) * 5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 16  # 2^4: relu5_1 follows four 2x2 max pools that floor
_CONVERTER = "vgg19_torchvision"
_NAME = re.compile(r"vgg19-([0-9a-f]{8,64})\.pth")


def _fix() -> str:
    """How to get an acceptable file, from the catalogue's pin."""
    converter = catalogue.CONVERTERS[_CONVERTER]
    return (f"download torchvision's {converter.url} and pass its path with the name unchanged ({converter.filename}); "
            "for other VGG19 weights, name the file vgg19-<first 8 hex digits of its sha256>.pth as torchvision does")


def check_weights_file(path: str | os.PathLike) -> str:
    """The file's sha256 once it starts with the hex prefix its torchvision-style name carries; WeightsError if not."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f"VGG19 weights not found at {path}: {_fix()}")
    match = _NAME.fullmatch(path.name)
    if not match:
        raise WeightsError(f"{path}: the VGG19 weights file must be named vgg19-<sha256 prefix>.pth, the prefix "
                           f"being what its bytes are checked against; {_fix()}")
    digest = pretrained.sha256(path)
    if not digest.startswith(match.group(1)):
        raise WeightsError(f"sha256 mismatch for {path}: it has {digest}, its name pins the prefix {match.group(1)} "
                           f"(damaged, or renamed from other weights); {_fix()}")
    return digest


def load_vgg19(path: str | os.PathLike) -> tuple[FeaturesFn, Variables]:
    """(features_fn, variables) of a torchvision VGG19 file, its sha256 prefix checked before it is read.

    `features_fn(variables, images)` gives the five relu_k_1 activations of ImageNet-normalised
    NHWC images; the variables are an argument, not a closure, so a jitted step takes them as an
    input instead of baking ~80 MB of constants into its program.
    """
    check_weights_file(path)
    state_dict = torch_weights.load_state_dict(path)
    params = vgg.from_torchvision(state_dict, source=str(path))
    module = vgg.VGG19Features(widths=vgg.widths_of(state_dict))
    return module.apply, {"params": params}


def check_image_size(height: int, width: int, scales: Sequence[float] = FOMM_SCALES) -> None:
    """ConfigError unless every scale leaves at least MIN_SIZE px on each side (else VGG19 pools to nothing)."""
    small = [s for s in scales if min(math.ceil(height * s), math.ceil(width * s)) < MIN_SIZE]
    if small:
        need = math.ceil(MIN_SIZE / min(small))
        raise ConfigError(f"perceptual pyramid scales {list(small)} shrink {height}x{width} images below VGG19's "
                          f"{MIN_SIZE} px minimum (four max pools before relu5_1); drop those scales or use images "
                          f"of at least {need} px")


def _normalise(images: Array) -> Array:
    """[0, 1] RGB -> ImageNet-normalised, (x - mean) / std per channel."""
    return (images - jnp.asarray(IMAGENET_MEAN, images.dtype)) / jnp.asarray(IMAGENET_STD, images.dtype)


def pyramid_loss(features_fn: Callable[[Array], Sequence[Array]], prediction: Array, target: Array,
                 scales: Sequence[float] = FOMM_SCALES, layer_weights: Sequence[float] = FOMM_LAYER_WEIGHTS) -> Array:
    """FOMM's perceptual pyramid: sum over scales and layers of weight * mean |f(pred) - stop_gradient(f(target))|.

    `features_fn` maps ImageNet-normalised NHWC images to the layers' activations, e.g.
    `functools.partial(features_fn, variables)` from `load_vgg19`. Prediction and target are
    [B, H, W, 3] in [0, 1]; both go through one features call per scale. Reduced in float32.
    """
    if prediction.shape != target.shape or prediction.ndim != 4 or prediction.shape[-1] != 3:
        raise DataError(f"pyramid_loss needs prediction and target of one shape [B, H, W, 3], got "
                        f"{prediction.shape} and {target.shape}")
    check_image_size(prediction.shape[1], prediction.shape[2], scales)
    batch = prediction.shape[0]
    both = jnp.concatenate([prediction, jax.lax.stop_gradient(target)])
    total = jnp.zeros((), jnp.float32)
    for scale in scales:
        features = features_fn(_normalise(warp.antialias_downsample(both, scale)))
        if len(features) != len(layer_weights):
            raise ConfigError(f"pyramid_loss has {len(layer_weights)} layer weights for {len(features)} feature "
                              "layers; give one weight per layer")
        for weight, f in zip(layer_weights, features):
            diff = f[:batch].astype(jnp.float32) - jax.lax.stop_gradient(f[batch:]).astype(jnp.float32)
            total = total + weight * jnp.mean(jnp.abs(diff))
    return total


@dataclasses.dataclass(frozen=True)
class VGGPyramid:
    """A loaded VGG19 and the pyramid's scales and layer weights: `pyramid(variables, prediction, target)`.

    The variables stay outside (see `load_vgg19`) and are held constant: no gradient reaches them.
    """

    features_fn: FeaturesFn
    scales: tuple[float, ...] = FOMM_SCALES
    layer_weights: tuple[float, ...] = FOMM_LAYER_WEIGHTS

    @classmethod
    def load(cls, path: str | os.PathLike, *, scales: Sequence[float] = FOMM_SCALES,
             layer_weights: Sequence[float] = FOMM_LAYER_WEIGHTS) -> tuple[VGGPyramid, Variables]:
        """The pyramid over the VGG19 file at `path` (checked as `load_vgg19` does) and its variables."""
        features_fn, variables = load_vgg19(path)
        return cls(features_fn, tuple(scales), tuple(layer_weights)), variables

    def __call__(self, variables: Variables, prediction: Array, target: Array) -> Array:
        """The scalar pyramid loss of prediction against target, [B, H, W, 3] in [0, 1]."""
        frozen = jax.lax.stop_gradient(variables)
        return pyramid_loss(functools.partial(self.features_fn, frozen), prediction, target, self.scales,
                            self.layer_weights)
