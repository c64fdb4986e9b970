"""VGG19 trunk (zoo.vgg) against torch.nn layers holding the same weights, and FOMM's pyramid loss (train.perceptual)."""
import functools
import math
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_torch

from train import perceptual
from zoo import pretrained, vgg
from zoo.errors import ConfigError, WeightsError

# torchvision's vgg19().features (configuration E): conv indices, and the ReLU after each block's first conv.
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
RELU_K_1 = (1, 6, 11, 20, 29)
CONVS_PER_BLOCK = (2, 2, 4, 4, 1)
TINY = (4, 8, 8, 16, 16)


def _state_dict(widths, seed=0):
    """Random weights in torchvision's layout, He-scaled so activations keep their size through 13 convs."""
    rng = np.random.default_rng(seed)
    channels_out = [w for w, n in zip(widths, CONVS_PER_BLOCK) for _ in range(n)]
    out, channels = {}, 3
    for index, width in zip(TORCHVISION_CONVS, channels_out):
        std = math.sqrt(2 / (9 * channels))
        out[f"features.{index}.weight"] = (std * rng.standard_normal((width, channels, 3, 3))).astype(np.float32)
        out[f"features.{index}.bias"] = (0.1 * rng.standard_normal(width)).astype(np.float32)
        channels = width
    return out


def _torch_trunk(torch, state_dict, widths):
    """torchvision's `features[:30]` rebuilt from torch.nn layers (cfg E with these widths) holding `state_dict`."""
    cfg = [widths[0]] * 2 + ["M"] + [widths[1]] * 2 + ["M"] + [widths[2]] * 4 + ["M"] + [widths[3]] * 4 + ["M"]
    layers, channels = [], 3
    for v in [*cfg, widths[4]]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [torch.nn.Conv2d(channels, v, kernel_size=3, padding=1), torch.nn.ReLU()]
            channels = v
    trunk = torch.nn.Sequential(*layers)
    trunk.load_state_dict({k.removeprefix("features."): torch.from_numpy(v) for k, v in state_dict.items()})
    return trunk.eval()


def _torch_features(torch, trunk, images_nhwc):
    """The relu_k_1 activations of NHWC numpy images, as NHWC numpy."""
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    out = []
    with torch.no_grad():
        for index, layer in enumerate(trunk):
            x = layer(x)
            if index in RELU_K_1:
                out.append(x.numpy().transpose(0, 2, 3, 1))
    return out


def _features_fn(widths):
    return jax.jit(vgg.VGG19Features(widths=widths).apply)


def test_vgg19_features_equal_torch_layers_at_every_relu_k_1():
    torch = import_torch()
    state_dict = _state_dict(vgg.VGG19_WIDTHS)
    params = vgg.from_torchvision(state_dict)
    assert set(params) == {f"features_{i}" for i in TORCHVISION_CONVS}  # nothing after relu5_1
    images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ours = _features_fn(vgg.VGG19_WIDTHS)({"params": params}, images)
    theirs = _torch_features(torch, _torch_trunk(torch, state_dict, vgg.VGG19_WIDTHS), images)
    for k, (a, b, width) in enumerate(zip(ours, theirs, vgg.VGG19_WIDTHS)):
        chex.assert_shape(a, (2, 32 >> k, 32 >> k, width))
        assert np.abs(b).max() > 0.1  # the comparison is not of zeros
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, rtol=1e-4, err_msg=vgg.LAYERS[k])


def test_from_torchvision_refuses_missing_and_unexpected_keys_by_name():
    state_dict = _state_dict(TINY)
    del state_dict["features.21.bias"]
    with pytest.raises(WeightsError, match=r"missing: features\.21\.bias"):
        vgg.from_torchvision(state_dict)
    state_dict = _state_dict(TINY)
    state_dict["features.3.weight"] = np.zeros((4, 4, 3, 3), np.float32)  # a ReLU has no weight
    with pytest.raises(WeightsError, match=r"unexpected: features\.3\.weight"):
        vgg.from_torchvision(state_dict)
    state_dict = _state_dict(TINY)
    state_dict["features.2.weight"] = state_dict["features.2.weight"][:, :, :1]
    with pytest.raises(WeightsError, match=r"shape mismatch: features\.2\.weight is \(4, 4, 1, 3\)"):
        vgg.from_torchvision(state_dict)


def test_from_torchvision_drops_the_layers_after_relu5_1_and_transposes_kernels():
    state_dict = _state_dict(TINY)
    for layer in ("features.30", "features.32", "features.34", "classifier.0", "classifier.3", "classifier.6"):
        state_dict[f"{layer}.weight"] = np.zeros((2, 2), np.float32)
        state_dict[f"{layer}.bias"] = np.zeros(2, np.float32)
    params = vgg.from_torchvision(state_dict)
    assert len(params) == len(TORCHVISION_CONVS)
    weight = state_dict["features.7.weight"]  # O I H W
    np.testing.assert_array_equal(params["features_7"]["kernel"][1, 2, 3, 4], weight[4, 3, 1, 2])


def _save(torch, state_dict, path):
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    return path


def test_load_vgg19_reads_a_torchvision_named_file_and_refuses_other_names(tmp_path):
    torch = import_torch()
    state_dict = _state_dict(TINY, seed=2)
    saved = _save(torch, state_dict, tmp_path / "saved.pth")
    named = tmp_path / f"vgg19-{pretrained.sha256(saved)[:8]}.pth"
    shutil.copy(saved, named)
    features_fn, variables = perceptual.load_vgg19(named)
    images = np.random.default_rng(3).standard_normal((1, 16, 16, 3)).astype(np.float32)
    ours = jax.jit(features_fn)(variables, images)
    theirs = _torch_features(torch, _torch_trunk(torch, state_dict, TINY), images)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5, rtol=1e-5)

    with pytest.raises(WeightsError, match=r"must be named vgg19-<sha256 prefix>\.pth.*download torchvision.s https://"):
        perceptual.load_vgg19(saved)
    wrong = tmp_path / "vgg19-dcbb9e9d.pth"  # the real file's name on other bytes
    shutil.copy(saved, wrong)
    with pytest.raises(WeightsError, match=r"sha256 mismatch.*prefix dcbb9e9d.*vgg19-dcbb9e9d\.pth"):
        perceptual.load_vgg19(wrong)
    with pytest.raises(WeightsError, match="not found"):
        perceptual.load_vgg19(tmp_path / "vgg19-00000000.pth")


def _torch_downsample(torch, x, scale):
    """FOMM's AntiAliasInterpolation2d on NCHW: zero-padded 2-D Gaussian depthwise conv, then every 1/scale-th pixel."""
    if scale == 1:
        return x
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    ka = size // 2
    kb = ka - 1 if size % 2 == 0 else ka
    g = torch.arange(size, dtype=torch.float64)
    g = torch.exp(-((g - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, size, size)
    out = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (ka, kb, ka, kb)), weight, groups=channels)
    stride = int(1 / scale)
    return out[:, :, ::stride, ::stride]


def _torch_pyramid(torch, trunk, prediction, target, scales, weights):
    """FOMM's perceptual loss in torch (float64 accumulation) on NHWC numpy images in [0, 1]."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    total = 0.0
    with torch.no_grad():
        for scale in scales:
            feats = []
            for images in (prediction, target):
                x = _torch_downsample(torch, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), scale)
                x = (x - mean) / std
                out = []
                for index, layer in enumerate(trunk):
                    x = layer(x)
                    if index in RELU_K_1:
                        out.append(x)
                feats.append(out)
            for w, a, b in zip(weights, *feats):
                total += w * torch.abs(a.double() - b.double()).mean().item()
    return total


@functools.cache
def _tiny_vgg(seed=4):
    state_dict = _state_dict(TINY, seed)
    return state_dict, {"params": vgg.from_torchvision(state_dict)}


@jax.jit
def _loss(variables, prediction, target):
    return perceptual.VGGPyramid(vgg.VGG19Features(widths=TINY).apply, scales=(1.0,))(
        variables, prediction, target)


@pytest.mark.parametrize("size,scales,weights", [
    (32, (1.0, 0.5), perceptual.FOMM_LAYER_WEIGHTS),
    (128, perceptual.FOMM_SCALES, (1.0, 2.0, 3.0, 4.0, 5.0)),
])
def test_pyramid_loss_equals_fomm_in_torch(size, scales, weights):
    torch = import_torch()
    state_dict, variables = _tiny_vgg()
    rng = np.random.default_rng(size)
    prediction, target = rng.uniform(size=(2, 2, size, size, 3)).astype(np.float32)
    features_fn = vgg.VGG19Features(widths=TINY).apply
    loss = jax.jit(lambda v, p, t: perceptual.pyramid_loss(functools.partial(features_fn, v), p, t, scales, weights))
    expected = _torch_pyramid(torch, _torch_trunk(torch, state_dict, TINY), prediction, target, scales, weights)
    assert expected > 1.0
    np.testing.assert_allclose(float(loss(variables, prediction, target)), expected, rtol=1e-4)


def test_pyramid_loss_is_zero_on_identical_images_and_its_gradient_reaches_only_the_prediction():
    _, variables = _tiny_vgg()
    rng = np.random.default_rng(5)
    prediction, target = jnp.asarray(rng.uniform(size=(2, 2, 16, 16, 3)), jnp.float32)
    assert float(_loss(variables, target, target)) == 0.0
    g_vars, g_pred, g_target = jax.jit(jax.grad(_loss, argnums=(0, 1, 2)))(variables, prediction, target)
    assert float(jnp.abs(g_pred).max()) > 0
    assert float(jnp.abs(g_target).max()) == 0
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g_vars))


def test_scales_that_shrink_images_below_16_px_are_refused():
    perceptual.check_image_size(256, 256)  # FOMM's frames: 32 px at 0.125
    perceptual.check_image_size(64, 64, (1.0, 0.5, 0.25))
    with pytest.raises(ConfigError, match=r"scales \[0\.125\].*at least 128 px"):
        perceptual.check_image_size(64, 64)
    _, variables = _tiny_vgg()
    with pytest.raises(ConfigError, match=r"scales \[0\.25, 0\.125\]"):
        perceptual.pyramid_loss(functools.partial(vgg.VGG19Features(widths=TINY).apply, variables),
                                jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))
