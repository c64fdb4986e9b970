"""StyleGAN2's building blocks against independent references: scipy, explicit per-example convs, the paper's formulas."""
from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from jax import lax

from zoo import layers, registry, resample, stylegan2

SMALL_G = dict(image_shape=(16, 16, 3), latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
SMALL_D = dict(image_shape=(16, 16, 3), channel_base=256, channel_max=16)


def _upfirdn_1d_scipy(x: np.ndarray, taps: np.ndarray, up: int, down: int, axis: int) -> np.ndarray:
    return np.apply_along_axis(lambda v: scipy.signal.upfirdn(taps, v, up, down), axis, x)


@pytest.mark.parametrize("forms", ["plain", "fast"])
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_upfirdn2d_equals_scipy_upfirdn_along_both_axes(up, down, forms):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
    f2 = np.outer(taps, taps)
    # scipy's full convolution is upfirdn2d with pads (len - 1, len - up): the zero insertion leaves up - 1 trailing zeros.
    p0, p1 = len(taps) - 1, len(taps) - up
    with layers.use_forms(forms):
        got = np.asarray(resample.upfirdn2d(jnp.asarray(x), f2, up=up, down=down, pad=(p0, p1, p0, p1)))
    want = _upfirdn_1d_scipy(_upfirdn_1d_scipy(x, taps, up, down, axis=1), taps, up, down, axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,down,taps", [(2, 1, (1.0, 3.0, 3.0, 1.0)), (1, 2, (1.0, 3.0, 3.0, 1.0)), (1, 1, (1.0, 2.0, 1.0))])
def test_upfirdn2d_fast_form_has_the_depthwise_convs_value_and_gradient(up, down, taps):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 5)), jnp.float32)
    reference = None
    f = resample.fir_filter(taps)

    def loss(x, forms):
        with layers.use_forms(forms):
            y = resample.upfirdn2d(x, f, up=up, down=down, pad=(2, 1, 1, 2), gain=up * up)
        return jnp.sum(y * jnp.sin(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))

    for forms in ("plain", "fast"):
        value, grad = jax.value_and_grad(loss)(x, forms)
        if reference is None:
            reference = value, grad
        else:
            np.testing.assert_allclose(value, reference[0], rtol=1e-5)
            np.testing.assert_allclose(grad, reference[1], rtol=1e-5, atol=1e-6)


def test_a_filter_that_is_not_separable_keeps_the_depthwise_conv():
    f = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert resample.separable_factors(f) is None
    column, row = resample.separable_factors(resample.fir_filter())
    np.testing.assert_allclose(np.outer(column, row), resample.fir_filter(), rtol=1e-6)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 5, 2)), jnp.float32)
    with layers.use_forms("fast"):
        got = resample.upfirdn2d(x, f)
    want = np.stack([scipy.signal.convolve2d(np.asarray(x)[0, :, :, c], f, mode="valid") for c in range(2)], -1)
    np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-5, atol=1e-6)


def test_upsample_and_downsample_keep_a_constant_image_constant_and_halve_or_double_the_size():
    x = jnp.full((1, 8, 8, 2), 0.75)
    up = resample.upsample2d(x, resample.fir_filter())
    down = resample.downsample2d(x, resample.fir_filter())
    chex.assert_shape(up, (1, 16, 16, 2))
    chex.assert_shape(down, (1, 4, 4, 2))
    # Away from the zero-padded border, a constant stays the same constant (unit DC gain after the gain of 4).
    np.testing.assert_allclose(np.asarray(up)[:, 2:-2, 2:-2], 0.75, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(down)[:, 1:-1, 1:-1], 0.75, rtol=1e-6)


def _per_example_modulated_conv(x, weight, styles, demodulate, up):
    """The paper's Eq. 1-3 literally: weights w'_oik = s_i w_oik (/ sigma_o), one conv per example."""
    outs = []
    for xb, sb in zip(np.asarray(x), np.asarray(styles)):
        w = np.asarray(weight) * sb[None, None, :, None]
        if demodulate:
            w = w / np.sqrt(np.sum(w**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        xb = jnp.asarray(xb)[None]
        k = w.shape[0]
        if up:
            # PyTorch's conv_transpose2d(stride 2): scatter each input pixel times the kernel, stride 2.
            h, wd, _ = xb.shape[1:]
            out = np.zeros((2 * h + k - 2, 2 * wd + k - 2, w.shape[-1]))
            for i in range(h):
                for j in range(wd):
                    out[2 * i:2 * i + k, 2 * j:2 * j + k] += np.einsum("c,hwco->hwo", np.asarray(xb[0, i, j]), w)
            out = resample.upfirdn2d(jnp.asarray(out, jnp.float32)[None], resample.fir_filter(), pad=(1, 1, 1, 1),
                                     gain=4.0)
        else:
            out = lax.conv_general_dilated(xb, jnp.asarray(w, jnp.float32), (1, 1), [(k // 2, k // 2)] * 2,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        outs.append(np.asarray(out)[0])
    return np.stack(outs)


@pytest.mark.parametrize("demodulate,up", [(True, False), (False, False), (True, True)])
def test_modulated_conv_equals_an_explicit_per_example_conv(demodulate, up):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 6, 6, 5)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(3, 3, 5, 4)), jnp.float32)
    styles = jnp.asarray(rng.normal(size=(3, 5)) + 1.0, jnp.float32)
    y, dcoefs = stylegan2.modulated_conv(x, weight, styles, demodulate=demodulate, up=up, fir=resample.fir_filter())
    if demodulate:
        y = y * dcoefs[:, None, None, :]
    want = _per_example_modulated_conv(x, weight, styles, demodulate, up)
    chex.assert_shape(y, want.shape)
    np.testing.assert_allclose(np.asarray(y), want, rtol=2e-4, atol=2e-4)


def test_demodulation_gives_unit_output_variance_for_unit_inputs():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(4, 48, 48, 32)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(3, 3, 32, 16)) * rng.uniform(0.1, 3.0, size=(1, 1, 32, 16)), jnp.float32)
    styles = jnp.asarray(rng.uniform(0.2, 5.0, size=(4, 32)), jnp.float32)
    y, dcoefs = stylegan2.modulated_conv(x, weight, styles)
    y = np.asarray(y * dcoefs[:, None, None, :])[:, 1:-1, 1:-1]  # the interior: full receptive fields
    # Unit-variance i.i.d. inputs and unit-norm per-output weights: every output channel has variance 1.
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=0.06)


def test_fully_connected_applies_the_equalised_learning_rate():
    layer = stylegan2.FullyConnected(7, lr_mul=0.01, bias_init=0.5)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(5, 40)), jnp.float32)
    v = layer.init(jax.random.PRNGKey(0), x)
    w, b = np.asarray(v["params"]["weight"]), np.asarray(v["params"]["bias"])
    assert abs(w.std() * 0.01 - 1.0) < 0.1  # stored as N(0, 1) / lr_mul
    np.testing.assert_allclose(b, 0.5)  # stored at its init, scaled at run time
    want = np.asarray(x) @ (w * 0.01 / math.sqrt(40)) + b * 0.01
    np.testing.assert_allclose(np.asarray(layer.apply(v, x)), want, rtol=1e-5, atol=1e-6)


def test_discriminator_conv_applies_the_equalised_learning_rate_and_lrelu_gain():
    layer = stylegan2.DConv(4, 3)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 5, 6)), jnp.float32)
    v = layer.init(jax.random.PRNGKey(0), x)
    w = np.asarray(v["params"]["weight"])
    pre = lax.conv_general_dilated(x, jnp.asarray(w / math.sqrt(6 * 9)), (1, 1), [(1, 1)] * 2,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    want = np.where(pre > 0, pre, 0.2 * pre) * math.sqrt(2.0)
    np.testing.assert_allclose(np.asarray(layer.apply(v, x)), want, rtol=1e-5, atol=1e-5)


def test_channels_follow_nvidias_base_and_max():
    assert [stylegan2.channels_at(r, 32768, 512) for r in (4, 64, 128, 256, 512, 1024)] == [512, 512, 256, 128, 64,
                                                                                               32]
    assert stylegan2.channels_at(256, 16384, 512) == 64  # paper256


@functools.lru_cache(maxsize=None)
def _init(name: str, **kw):
    """A model and its variables, initialised under jit (eager init of the many small layers takes far longer)."""
    model = registry.create_model(name, **kw)
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), *model.example_inputs())


def _g(**kw):
    return _init("stylegan2_g", **(SMALL_G | kw))


def _run(model, v, *args, method=None, mutable=False, **kw):
    """model.apply under jit, keyword arguments static (train, psi, noise_mode, ...)."""
    fn = functools.partial(model.apply, method=method, mutable=mutable, **kw)
    return jax.jit(fn)(v, *args)


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_num_ws_and_output_shape():
    model, v = _g()
    assert model.num_ws == 6  # 2 log2(16) - 2
    assert registry.create_model("stylegan2_g", image_shape=(1024, 1024, 3)).num_ws == 18
    out = _run(model, v, jnp.ones((2, 16)))
    chex.assert_shape(out, (2, 16, 16, 3))
    chex.assert_type(out, jnp.float32)


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_w_avg_tracks_the_mean_w_as_an_ema_and_truncation_pulls_toward_it():
    model, v = _g()
    beta = model.w_avg_beta
    w_avg = np.zeros(16)
    for i in range(3):
        z = jax.random.normal(jax.random.PRNGKey(10 + i), (6, 16))
        ws = np.asarray(_run(model, v, z, method=model.map_latents))
        _, upd = _run(model, v, z, train=True, noise_mode="none", mutable=["buffers"])
        w_avg = ws[:, 0].mean(0) + beta * (w_avg - ws[:, 0].mean(0))
        v = {**v, **upd}
        np.testing.assert_allclose(np.asarray(v["buffers"]["mapping"]["w_avg"]), w_avg, rtol=1e-5, atol=1e-6)
    z = jax.random.normal(jax.random.PRNGKey(20), (4, 16))
    ws = np.asarray(_run(model, v, z, method=model.map_latents))
    at0 = np.asarray(_run(model, v, z, psi=0.0, method=model.map_latents))
    np.testing.assert_allclose(at0, np.broadcast_to(w_avg, at0.shape), rtol=1e-5, atol=1e-6)
    half = np.asarray(_run(model, v, z, psi=0.5, cutoff=3, method=model.map_latents))
    np.testing.assert_allclose(half[:, :3], w_avg + 0.5 * (ws[:, :3] - w_avg), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half[:, 3:], ws[:, 3:], rtol=1e-6)
    # Evaluation does not move w_avg.
    _, same = _run(model, v, z, train=False, mutable=["buffers"])
    np.testing.assert_array_equal(np.asarray(same["buffers"]["mapping"]["w_avg"]),
                                  np.asarray(v["buffers"]["mapping"]["w_avg"]))


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_style_mixing_uses_a_second_w_from_the_crossover_on():
    model, v = _g()
    z = jax.random.normal(jax.random.PRNGKey(1), (16, 16))
    keys = jax.random.split(jax.random.PRNGKey(2), 16)
    ws = np.asarray(_run(model, v, z, method=model.map_latents))
    mixed = np.asarray(_run(model, v, ws, None, keys, 1.0, method=model.mix))
    cuts = []
    for i in range(16):
        same = np.all(mixed[i] == ws[i], axis=-1)
        cut = int(np.argmin(same))
        assert 1 <= cut < model.num_ws and same[:cut].all() and not same[cut:].any()
        # Past the crossover every layer holds one and the same second w.
        np.testing.assert_array_equal(mixed[i, cut:], np.broadcast_to(mixed[i, cut], mixed[i, cut:].shape))
        cuts.append(cut)
    assert len(set(cuts)) > 1
    untouched = np.asarray(_run(model, v, ws, None, keys, 0.0, method=model.mix))
    np.testing.assert_array_equal(untouched, ws)


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_an_examples_image_depends_on_its_own_key_not_on_the_batch():
    model, v = _g()
    z = jax.random.normal(jax.random.PRNGKey(1), (6, 16))
    keys = jax.random.split(jax.random.PRNGKey(2), 6)
    full = _run(model, v, z, keys=keys, mixing_prob=0.9)
    part = _run(model, v, z[2:5], keys=keys[2:5], mixing_prob=0.9)
    np.testing.assert_allclose(np.asarray(part), np.asarray(full)[2:5], rtol=1e-5, atol=1e-5)
    # Noise matters once it has strength: random noise differs from the stored constant noise.
    v2 = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.5 if p[-1].key == "noise_strength" else a, v)
    assert not np.allclose(_run(model, v2, z, keys=keys), _run(model, v2, z, noise_mode="const"))


def test_minibatch_stddev_groups_consecutive_examples():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 4, 4, 6)).astype(np.float32)
    out = np.asarray(stylegan2._minibatch_std(jnp.asarray(x), 4, 2))
    chex.assert_shape(out, (8, 4, 4, 8))
    for g in range(2):
        grp = x[4 * g:4 * g + 4].reshape(4, 4, 4, 2, 3)
        want = np.sqrt(grp.var(axis=0) + 1e-8).mean(axis=(0, 1, 3))
        np.testing.assert_allclose(out[4 * g:4 * g + 4, :, :, 6:], np.broadcast_to(want, (4, 4, 4, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of mbstd_group"):
        stylegan2._minibatch_std(jnp.asarray(x[:6]), 4, 1)


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_discriminator_conditional_and_unconditional_logits():
    d, v = _init("stylegan2_d", **SMALL_D)
    x = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, size=(8, 16, 16, 3)), jnp.float32)
    chex.assert_shape(_run(d, v, x), (8,))
    dc, vc = _init("stylegan2_d", num_classes=3, mapping_layers=2, **SMALL_D)
    a, b = _run(dc, vc, x, jnp.zeros(8, jnp.int32)), _run(dc, vc, x, jnp.ones(8, jnp.int32))
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="needs int labels"):
        dc.apply(vc, x)


@pytest.mark.slow  # compiles the whole network (several seconds each on 2 cores)
def test_bf16_top_resolutions_stay_close_to_float32():
    model, v = _g()
    bf = registry.create_model("stylegan2_g", **(SMALL_G | dict(num_bf16_res=2, conv_clamp=256.0)))
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 16))
    a, b = _run(model, v, z), _run(bf, v, z)
    chex.assert_type(b, jnp.float32)
    assert float(jnp.max(jnp.abs(a - b))) < 0.05 * float(jnp.max(jnp.abs(a)))


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match="8 to 1024"):
        _g(image_shape=(48, 48, 3))
    with pytest.raises(ValueError, match="num_bf16_res"):
        _g(num_bf16_res=4)
