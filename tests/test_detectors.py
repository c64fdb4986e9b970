"""Detector models: spectral features against NumPy/SciPy, the fitted spectral head against scikit-learn,
the separable conv against lax, published parameter counts, shapes and bad input."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from sklearn.linear_model import LogisticRegression

from train import spectral_head
from zoo import create_model, detectors, layers, list_models, spectral
from zoo.errors import ConfigError, DataError

NAMES = ("xception_detector", "resnet_detector", "spectrum_durall_detector", "spectrum_frank_detector")
TINY = {"xception_detector": dict(width=4, middle_blocks=1), "resnet_detector": dict(stages=(1, 1), widths=(4, 8))}


def _n_params(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _init(module, x, seed=0):
    """Variables of `module` for input `x` drawn in NumPy: kernels N(0, 1/fan_in), batch norm at identity.

    module.init compiles a threefry program per parameter, which takes tens of seconds for Xception
    on a loaded CPU; this fills the same shapes (from eval_shape) in milliseconds.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(0, 1 / math.sqrt(math.prod(leaf.shape[:-1])), leaf.shape), leaf.dtype)
        return (jnp.ones if name in ("scale", "var", "std") else jnp.zeros)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(module.init, jax.random.key(0), x))


# ---------------------------------------------------------------------------------------------------
# spectral features


def _durall_reference(images):
    """Durall's profile in float64: BT.601 grey, fft2, fftshift, 20 ln(|F| + 1e-8), mean per integer radius."""
    grey = images[..., 0] if images.shape[-1] == 1 else images @ np.array([0.299, 0.587, 0.114])
    _, h, w = grey.shape
    mag = 20 * np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey.astype(np.float64)), axes=(1, 2))) + 1e-8)
    rows, cols = np.indices((h, w))
    radius = np.sqrt((rows - h // 2) ** 2 + (cols - w // 2) ** 2)
    profile = []
    for r in range(int(np.floor(np.sqrt((h // 2) ** 2 + (w // 2) ** 2))) + 1):
        ring = (radius >= r) & (radius < r + 1)
        profile.append(mag[:, ring].mean(axis=1))
    return np.stack(profile, axis=1)


@pytest.mark.parametrize("shape", [(3, 16, 16, 3), (2, 15, 15, 3), (2, 12, 20, 3), (2, 16, 16, 1)])
def test_durall_features_match_a_numpy_reference(shape):
    images = _images(shape)
    got = np.asarray(spectral.durall_features(jnp.asarray(images)))
    want = _durall_reference(images)
    chex.assert_shape(got, (shape[0], spectral.durall_length(*shape[1:3])))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)


def test_durall_length_is_floor_sqrt2_half_size_plus_one():
    assert spectral.durall_length(64, 64) == 46  # floor(sqrt(2) * 32) + 1
    assert spectral.durall_length(299, 299) == 211  # floor(sqrt(2) * 149) + 1
    assert spectral.durall_features(jnp.zeros((1, 64, 64, 3))).shape == (1, 46)


def test_frank_features_match_scipy_dctn():
    images = _images((2, 16, 12, 3), seed=1)
    grey = images @ np.array([0.299, 0.587, 0.114])
    coeffs = scipy.fft.dctn(grey, type=2, norm="ortho", axes=(1, 2))
    np.testing.assert_allclose(np.asarray(spectral.dct2(jnp.asarray(grey, jnp.float32))), coeffs, atol=2e-5)
    got = np.asarray(spectral.frank_features(jnp.asarray(images))).reshape(coeffs.shape)
    big = np.abs(coeffs) > 1e-3  # where float32 rounding cannot swing the log
    np.testing.assert_allclose(got[big], np.log(np.abs(coeffs[big]) + 1e-12), atol=1e-3)

    per_channel = scipy.fft.dctn(images, type=2, norm="ortho", axes=(1, 2))
    got = np.asarray(spectral.frank_features(jnp.asarray(images), per_channel=True)).reshape(per_channel.shape)
    big = np.abs(per_channel) > 1e-3
    np.testing.assert_allclose(got[big], np.log(np.abs(per_channel[big])), atol=1e-3)


def test_spectral_features_refuse_images_without_a_colour_axis():
    with pytest.raises(DataError, match=r"\[B, H, W, C\]"):
        spectral.durall_features(jnp.zeros((2, 16, 16)))
    with pytest.raises(DataError, match="C = 3"):
        spectral.frank_features(jnp.zeros((2, 16, 16, 4)))


# ---------------------------------------------------------------------------------------------------
# the fitted spectral head


def _checkerboard_toy(n, size, seed):
    """Smooth random images (label 0) and the same kind with a faint +-0.04 checkerboard added (label 1)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.2, 0.8, (n, size // 4, size // 4, 3))
    smooth = np.asarray(jax.image.resize(noise, (n, size, size, 3), "bilinear"))
    labels = rng.permutation(np.arange(n) % 2)
    board = (np.indices((size, size)).sum(0) % 2 * 2 - 1)[None, :, :, None] * 0.04
    return np.clip(smooth + labels[:, None, None, None] * board, 0, 1).astype(np.float32), labels


def _sklearn_probabilities(features_train, labels, features_test, l2, **kw):
    """scikit-learn's fit of the same objective on features standardised in NumPy (ddof 0, constant -> std 1)."""
    mean, std = features_train.mean(0), features_train.std(0)
    std = np.where(std > 0, std, 1.0)
    clf = LogisticRegression(C=1 / (len(labels) * l2), tol=1e-10, max_iter=10_000, **kw)
    clf.fit((features_train - mean) / std, labels)
    return clf.predict_proba((features_test - mean) / std)[:, 1]


@pytest.mark.parametrize("name", ["spectrum_durall_detector", "spectrum_frank_detector"])
def test_fit_spectral_head_separates_a_checkerboard_and_agrees_with_sklearn(name):
    module = create_model(name)
    train_x, train_y = _checkerboard_toy(120, 16, seed=0)
    test_x, test_y = _checkerboard_toy(60, 16, seed=1)
    variables = spectral_head.fit_spectral_head(module, train_x, train_y, l2=1e-2)
    assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(module.init, jax.random.key(0), train_x))
    probs = np.asarray(jax.nn.sigmoid(jax.jit(module.apply)(variables, test_x)))
    assert ((probs > 0.5) == test_y).mean() == 1.0

    feats = lambda x: np.asarray(module.features(jnp.asarray(x)), np.float64)
    want = _sklearn_probabilities(feats(train_x), train_y, feats(test_x), l2=1e-2)
    np.testing.assert_allclose(probs, want, atol=1e-3)


def test_balanced_fit_agrees_with_sklearn_balanced_class_weights():
    module = create_model("spectrum_durall_detector")
    images, labels = _checkerboard_toy(90, 16, seed=2)
    labels = (np.arange(90) % 3 == 0).astype(np.int32)  # one fake in three, so the weights matter
    variables = spectral_head.fit_spectral_head(module, images, labels, l2=3e-2, balanced=True)
    probs = np.asarray(jax.nn.sigmoid(module.apply(variables, images)))
    feats = np.asarray(module.features(jnp.asarray(images)), np.float64)
    want = _sklearn_probabilities(feats, labels, feats, l2=3e-2, class_weight="balanced")
    np.testing.assert_allclose(probs, want, atol=1e-3)


def test_fit_feature_stats_are_the_training_mean_and_std():
    module = create_model("spectrum_frank_detector")
    images = _images((10, 8, 8, 3))
    stats = spectral_head.fit_feature_stats(module, images, batch_size=4)
    feats = np.asarray(spectral.frank_features(jnp.asarray(images)))
    np.testing.assert_allclose(stats["mean"], feats.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["std"], feats.std(0), rtol=1e-4, atol=1e-5)


def test_fit_spectral_head_refuses_bad_labels_and_penalty():
    module = create_model("spectrum_durall_detector")
    images = _images((6, 8, 8, 3))
    with pytest.raises(DataError, match="0 \\(real\\) and 1 \\(fake\\)"):
        spectral_head.fit_spectral_head(module, images, np.zeros(6))
    with pytest.raises(DataError, match="0 \\(real\\) and 1 \\(fake\\)"):
        spectral_head.fit_spectral_head(module, images, np.array([0, 1, 2, 0, 1, 0]))
    with pytest.raises(DataError, match="l2"):
        spectral_head.fit_spectral_head(module, images, np.arange(6) % 2, l2=0.0)


def test_a_spectral_detector_refuses_images_of_another_size():
    module = create_model("spectrum_durall_detector")
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(DataError, match="training size"):
        module.apply(variables, jnp.zeros((1, 32, 32, 3)))


# ---------------------------------------------------------------------------------------------------
# CNNs


def _grouped_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


@pytest.mark.parametrize("forms", ["fast", "plain"])
def test_separable_conv_is_a_depthwise_grouped_conv_then_a_1x1_conv(forms):
    x = jnp.asarray(_images((2, 9, 7, 4)))
    module = detectors.SeparableConv(5)
    params = module.init(jax.random.key(0), x)["params"]
    chex.assert_shape(params["depthwise"]["kernel"], (3, 3, 1, 4))
    chex.assert_shape(params["pointwise"]["kernel"], (1, 1, 4, 5))
    want = jnp.einsum("bhwc,cf->bhwf", _grouped_conv(x, params["depthwise"]["kernel"]),
                      params["pointwise"]["kernel"][0, 0])
    with layers.use_forms(forms):
        got = module.apply({"params": params}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_the_fast_depthwise_conv_and_its_gradients_equal_the_grouped_conv(kernel_size):
    x = jnp.asarray(_images((2, 6, 5, 3)))
    kernel = jnp.asarray(_images((kernel_size, kernel_size, 1, 3), seed=1) - 0.5)
    cotangent = jnp.asarray(_images((2, 6, 5, 3), seed=2))
    with layers.use_forms("fast"):
        got, vjp = jax.vjp(detectors.depthwise_conv, x, kernel)
        got_grads = vjp(cotangent)
    want, vjp = jax.vjp(_grouped_conv, x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, vjp(cotangent)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_published_xception_has_keras_parameter_count_less_the_imagenet_head():
    """Keras's Xception: 22,910,480 parameters (the 22.9M), 22,855,952 trainable; its head is 2048 * 1000 + 1000.

    Here the head is one logit (2048 + 1), and the 54,528 non-trainable values are the "batch_stats".
    """
    module = create_model("xception_detector", input_size=299, width=32, middle_blocks=8)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    imagenet_head, logit_head = 2048 * 1000 + 1000, 2048 + 1
    assert _n_params(shapes["params"]) == 22_855_952 - imagenet_head + logit_head == 20_809_001
    assert _n_params(shapes["params"]) + _n_params(shapes["batch_stats"]) == 22_910_480 - imagenet_head + logit_head
    assert detectors.xception_widths(32) == (32, 64, 128, 256, 728, 1024, 1536, 2048)


def test_resnet18_fields_give_torchvision_parameter_count_less_the_imagenet_head():
    module = create_model("resnet_detector", stages=(2, 2, 2, 2), widths=(64, 128, 256, 512))
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert _n_params(shapes["params"]) == 11_689_512 - (512 * 1000 + 1000) + (512 + 1)


def test_the_resnet_detector_and_tpsmms_encoder_share_one_trunk():
    """Same parameters under the same names; the detector's logit is its head on the encoder's pooled features of
    the image mapped to [-1, 1]."""
    from zoo.reenact import ResNetEncoder

    x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    detector = create_model("resnet_detector", stages=(1, 2), widths=(4, 8))
    variables = detector.init(jax.random.key(1), x)
    trunk = {k: v for k, v in variables["params"].items() if k != "head"}
    encoder_vars = ResNetEncoder(widths=(4, 8), stages=(1, 2)).init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(encoder_vars["params"], trunk)
    assert set(trunk) == {"stem", "stem_bn", "stage0_block0", "stage1_block0", "stage1_block1"}
    features = ResNetEncoder(widths=(4, 8), stages=(1, 2)).apply(
        {"params": trunk, "batch_stats": variables["batch_stats"]}, 2 * x - 1)
    head = variables["params"]["head"]
    expected = (features @ head["kernel"] + head["bias"])[:, 0]
    np.testing.assert_allclose(detector.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [pytest.param("xception_detector", marks=pytest.mark.slow), "resnet_detector"])
def test_cnn_logits_are_one_float32_per_image_at_32_64_and_299_px(name):
    """At input_size 32 no resize runs; 64 and 299 px images are resized to 32 inside the module."""
    module = create_model(name, input_size=32, **TINY[name])
    variables = _init(module, jnp.zeros((1, 32, 32, 3)))
    for size in (32, 64, 299):
        logits = module.apply(variables, jnp.asarray(_images((2, size, size, 3))))
        chex.assert_shape(logits, (2,))
        chex.assert_type(logits, jnp.float32)
        chex.assert_tree_all_finite(logits)


@pytest.mark.slow  # 8.5 s; test_xception_resizes_inputs_of_another_size_and_takes_grey_images keeps xception fast
def test_xception_runs_at_299_px_without_resizing():
    module = create_model("xception_detector", input_size=299, **TINY["xception_detector"])
    x = jnp.asarray(_images((1, 299, 299, 3)))
    logits = module.apply(_init(module, x), x)
    chex.assert_shape(logits, (1,))
    chex.assert_tree_all_finite(logits)


def test_xception_resizes_inputs_of_another_size_and_takes_grey_images():
    module = create_model("xception_detector", **TINY["xception_detector"])  # input_size 64
    grey = jnp.asarray(_images((3, 32, 32, 1)))
    variables = _init(module, grey)
    chex.assert_shape(module.apply(variables, grey), (3,))
    chex.assert_shape(module.apply(variables, jnp.asarray(_images((3, 80, 48, 1)))), (3,))


def test_batch_norm_uses_the_batch_in_training_and_the_running_statistics_in_evaluation():
    module = create_model("resnet_detector", **TINY["resnet_detector"])
    x = jnp.asarray(_images((4, 32, 32, 3)))
    variables = _init(module, x)
    train = lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"])
    evaluate = module.apply
    logits, state = train(variables, x)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # In training an example's logit depends on the rest of the batch; in evaluation it does not.
    assert not np.allclose(train(variables, x[:2])[0], logits[:2])
    np.testing.assert_allclose(evaluate(variables, x[:2]), evaluate(variables, x)[:2], rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_still_returns_float32_logits():
    module = create_model("resnet_detector", dtype=jnp.bfloat16, **TINY["resnet_detector"])
    x = jnp.asarray(_images((2, 32, 32, 3)))
    chex.assert_type(jax.tree.leaves(jax.eval_shape(module.init, jax.random.key(0), x)["params"]), jnp.float32)
    variables = _init(module, x)
    chex.assert_type(module.apply(variables, x), jnp.float32)


def test_bad_fields_and_inputs_are_named():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ConfigError, match="model.widths"):
        create_model("resnet_detector", stages=(1, 1), widths=(4,)).init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match="model.input_size"):
        create_model("xception_detector", input_size=5).init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match="model.width"):
        create_model("xception_detector", width=0).init(jax.random.key(0), x)
    with pytest.raises(DataError, match="C = 3 or 1"):
        create_model("xception_detector").init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))


# ---------------------------------------------------------------------------------------------------
# registry


def test_every_detector_is_created_by_name():
    assert set(NAMES) <= set(list_models("*detector"))
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    for name in NAMES:
        module = create_model(name, **TINY.get(name, {}))
        variables = jax.eval_shape(module.init, jax.random.key(0), x)
        out = jax.eval_shape(module.apply, variables, x)
        assert out.shape == (2,) and out.dtype == jnp.float32, name
