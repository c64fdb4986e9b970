"""VGG19's convolutional trunk up to relu5_1 in Flax, and torchvision's `features.N` state dict converted to it.

The perceptual losses of FOMM and TPSMM (Siarohin et al. 2019; Zhao & Zhang 2022) compare the
relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 activations of an ImageNet VGG19 (Simonyan &
Zisserman 2015, configuration E). `VGG19Features` is torchvision's `vgg19().features` in the same
layer order (3x3 convs with padding 1, ReLU, 2x2 max pools that floor) and returns those five
activations; it stops at relu5_1, so conv5_2 onwards and the classifier have no parameters here.
Differences: NHWC layout; `widths` may shrink the channels (tests and CPU smoke runs), and
`from_torchvision` infers them from the state dict. Inputs are ImageNet-normalised RGB: the
normalisation lives with the loss (`train.perceptual`), as in FOMM.

Not in the model registry: the registry names the architectures a config trains (`model.name`,
listed with their fields in `train/model_fields.json`), while this network is never trained here and
has exactly one set of weights, torchvision's, like the FID InceptionV3 in `train.metrics.inception`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from zoo import torch_weights
from zoo.errors import ConfigError, WeightsError

__all__ = ["LAYERS", "VGG19Features", "VGG19_WIDTHS", "conv_indices", "from_torchvision", "load_params",
           "widths_of"]

VGG19_WIDTHS = (64, 128, 256, 512, 512)
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_CONVS_PER_BLOCK = (2, 2, 4, 4, 1)  # configuration E, cut after block 5's first conv (relu5_1)
# Parameters of a full torchvision vgg19 that this trunk does not use: conv5_2..conv5_4 and the classifier.
_UNUSED = frozenset(f"{layer}.{leaf}" for layer in ("features.30", "features.32", "features.34", "classifier.0",
                                                    "classifier.3", "classifier.6") for leaf in ("weight", "bias"))

Array = jax.Array


def conv_indices() -> tuple[tuple[int, ...], ...]:
    """torchvision's `features` index of every conv, per block: ((0, 2), (5, 7), (10, ..., 16), (19, ...), (28,))."""
    blocks, index = [], 0
    for convs in _CONVS_PER_BLOCK:
        blocks.append(tuple(range(index, index + 2 * convs, 2)))
        index += 2 * convs + 1  # conv and ReLU each, then the max pool
    return tuple(blocks)


class VGG19Features(nn.Module):
    """[B, H, W, 3] ImageNet-normalised RGB -> the five relu_k_1 activations, torchvision's `features` in NHWC.

    H and W must be at least 16: the four 2x2 max pools before relu5_1 floor, as torch's do.
    """

    widths: tuple[int, ...] = VGG19_WIDTHS
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        """The relu1_1, ..., relu5_1 activations, each [B, H / 2^k, W / 2^k, widths[k]]."""
        if len(self.widths) != len(LAYERS):
            raise ConfigError(f"VGG19Features widths {self.widths} must give one width per block ({len(LAYERS)})")
        outputs = []
        for block, (width, indices) in enumerate(zip(self.widths, conv_indices())):
            if block:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            for n, index in enumerate(indices):
                x = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                                    param_dtype=self.param_dtype, name=f"features_{index}")(x))
                if n == 0:
                    outputs.append(x)
        return tuple(outputs)


def _expected_shapes(widths: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """torch key -> torch shape (OIHW weights) of every parameter of a trunk with these widths."""
    shapes, channels = {}, 3
    for width, indices in zip(widths, conv_indices()):
        for index in indices:
            shapes[f"features.{index}.weight"] = (width, channels, 3, 3)
            shapes[f"features.{index}.bias"] = (width,)
            channels = width
    return shapes


def widths_of(state_dict: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    """Each block's width, read from its first conv's weight (torchvision's VGG19 where a key is absent)."""
    widths = []
    for default, indices in zip(VGG19_WIDTHS, conv_indices()):
        weight = state_dict.get(f"features.{indices[0]}.weight")
        widths.append(int(np.shape(weight)[0]) if weight is not None and np.ndim(weight) == 4 else default)
    return tuple(widths)


def _show(keys: list[str]) -> str:
    """The first few keys, then how many in all."""
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def from_torchvision(state_dict: Mapping[str, np.ndarray], widths: tuple[int, ...] | None = None,
                     *, source: str = "state dict") -> dict[str, Any]:
    """torchvision VGG19 state dict (`features.N.weight/bias`, OIHW) -> `VGG19Features` params (HWIO), checked.

    `widths` defaults to what the state dict holds (`widths_of`). A full torchvision file's conv5_2
    onwards and classifier are accepted and dropped; any other extra key, a missing key or a wrong
    shape is a WeightsError naming them (and `source`, e.g. the file).
    """
    widths = tuple(widths) if widths is not None else widths_of(state_dict)
    expected = _expected_shapes(widths)
    missing = [k for k in expected if k not in state_dict]
    unexpected = sorted(k for k in state_dict if k not in expected and k not in _UNUSED)
    mismatched = [f"{k} is {tuple(np.shape(state_dict[k]))}, expected {shape}" for k, shape in expected.items()
                  if k in state_dict and tuple(np.shape(state_dict[k])) != shape]
    if missing or unexpected or mismatched:
        problems = [f"{label}: {_show(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise WeightsError(f"{source} is not torchvision's VGG19 (vgg19().state_dict(), `features` up to relu5_1 "
                           f"with widths {widths}): " + "; ".join(problems)
                           + "; pass the state dict of torchvision.models.vgg19 (e.g. its vgg19-dcbb9e9d.pth)")
    params: dict[str, Any] = {}
    for key in expected:
        _, index, leaf = key.split(".")
        value = np.asarray(state_dict[key], np.float32)
        layer = params.setdefault(f"features_{index}", {})
        layer["kernel" if leaf == "weight" else "bias"] = jnp.asarray(
            rearrange(value, "o i h w -> h w i o") if leaf == "weight" else value)
    return params


def load_params(path: str | os.PathLike) -> dict[str, Any]:
    """`VGG19Features` params from a torch.save'd VGG19 state dict, read without running pickle code.

    No hash check here (`train.perceptual.load_vgg19` and `zoo.pretrained.convert` do that first).
    """
    return from_torchvision(torch_weights.load_state_dict(path), source=str(path))
