"""zoo.layers against flax.linen: same params give the same outputs and the same gradients."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import layers

# (batch, h, w, in_ch, features, kernel, stride, padding)
CASES = [
    (2, 8, 8, 3, 4, 3, 1, "SAME"),
    (2, 7, 5, 1, 2, 3, 2, "SAME"),
    (2, 8, 8, 16, 8, 4, 2, "SAME"),
    (1, 9, 6, 5, 16, 4, 2, "VALID"),
    (2, 5, 7, 8, 3, 5, 2, "SAME"),
    (2, 6, 6, 4, 1, 5, 2, "VALID"),
    (2, 4, 4, 16, 16, 5, 1, "SAME"),
    (3, 7, 7, 2, 5, 3, 2, "VALID"),
    (2, 6, 9, 6, 7, 4, 1, "VALID"),
    (2, 5, 5, 3, 4, 2, 3, "SAME"),
    (2, 6, 7, 3, 2, 3, 2, ((1, 0), (2, 1))),
    (2, 8, 8, 4, 6, 4, (1, 2), ((2, 1), (0, 2))),
    (2, 2, 2, 8, 12, 3, 1, "SAME"),  # maps smaller than the kernel: the windowed GEMM
    (2, 1, 3, 4, 5, 3, 1, "SAME"),
    (2, 3, 3, 4, 5, 4, 1, ((2, 1), (1, 2))),
    (2, 2, 4, 3, 2, 3, 1, ((-1, 2), (0, 0))),
]
PAIRS = {"conv_transpose": (layers.ConvTranspose, nn.ConvTranspose), "conv": (layers.Conv, nn.Conv)}


def _modules(kind: str, features: int, kernel: int, stride, padding, **kw) -> tuple[nn.Module, nn.Module]:
    """(ours, flax) modules of one kind with identical fields."""
    ours, ref = PAIRS[kind]
    fields = dict(features=features, kernel_size=(kernel, kernel), strides=stride, padding=padding, **kw)
    return ours(**fields), ref(**fields)


def _assert_close(actual, expected, rtol: float = 1e-5) -> None:
    """Every leaf within rtol of the reference's largest magnitude (sums of many products differ by order)."""
    chex.assert_trees_all_equal_shapes_and_dtypes(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * max(np.abs(e).max(), 1e-6))


def _random_params(module: nn.Module, x: np.ndarray, rng: np.random.Generator):
    """Gaussian params of module's flax shapes, built in numpy: no per-shape jax.random compiles."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def _value_and_grads(module: nn.Module, params, x: np.ndarray, ct: np.ndarray):
    """Output and d(sum(out * ct))/d(params, x), in one compile."""

    def f(params, x):
        out, vjp = jax.vjp(module.apply, params, x)
        return out, vjp(ct)

    return jax.jit(f)(params, x)


def _check_against_flax(kind: str, case: tuple, seed: int = 0) -> None:
    """Outputs and input/kernel/bias gradients of ours and flax at the same params and cotangent."""
    n, h, w, cin, features, kernel, stride, padding = case
    ours, ref = _modules(kind, features, kernel, stride, padding)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, cin)).astype(np.float32)
    params = _random_params(ref, x, rng)
    chex.assert_trees_all_equal_shapes(jax.eval_shape(ours.init, jax.random.key(0), x), params)
    out_shape = jax.eval_shape(ref.apply, params, x).shape
    ct = rng.normal(size=out_shape).astype(np.float32)
    expected, actual = _value_and_grads(ref, params, x, ct), _value_and_grads(ours, params, x, ct)
    chex.assert_shape(actual[0], out_shape)
    _assert_close(actual, expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_matches_flax_forward_and_grads(kind: str, case: tuple) -> None:
    _check_against_flax(kind, case)


def test_both_input_gradient_forms_of_a_strided_conv_are_tested() -> None:
    """CASES has strided convs on each side of the few-channel limit, so both backward forms meet flax."""
    strided = [c[3] for c in CASES if c[6] != 1]
    assert min(strided) <= layers._FEW_INPUT_CHANNELS < max(strided)


def test_df_encoder_last_conv_matches_flax() -> None:
    """The DF encoder's 5x5 stride-2 conv 8x8x64 -> 4x4x128, the case XLA:CPU is slowest at."""
    _check_against_flax("conv", (2, 8, 8, 64, 128, 5, 2, "SAME"))


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_no_bias_and_batch_dims(kind: str) -> None:
    ours, ref = _modules(kind, 3, 4, 2, "SAME", use_bias=False)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6, 6, 5)).astype(np.float32)
    params = _random_params(ref, x, rng)
    assert "bias" not in params["params"]
    _assert_close(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x))
    _assert_close(jax.jit(ours.apply)(params, x[0, 0]), jax.jit(ref.apply)(params, x[0, 0]))


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_bf16(kind: str) -> None:
    ours, ref = _modules(kind, 8, 4, 2, "SAME", dtype=jnp.bfloat16)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    params = _random_params(ref, x, rng)

    def value_and_grad(module: nn.Module):
        loss = lambda p: jnp.sum(module.apply(p, x).astype(jnp.float32) ** 2)
        return jax.jit(lambda p: (module.apply(p, x), jax.grad(loss)(p)))(params)

    (y, g_ours), (y_ref, g_ref) = value_and_grad(ours), value_and_grad(ref)
    chex.assert_type(y, jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(g_ours, params)
    _assert_close(y, y_ref, rtol=2e-2)
    _assert_close(g_ours, g_ref, rtol=5e-2)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_vmap_and_pmap(kind: str) -> None:
    ours, ref = _modules(kind, 4, 3, 2, "SAME")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(jax.local_device_count(), 2, 6, 6, 3)).astype(np.float32)
    params = _random_params(ref, x[0], rng)

    def grad_fn(module: nn.Module):
        return jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))

    expected = jax.jit(jax.vmap(grad_fn(ref), in_axes=(None, 0)))(params, x)
    _assert_close(jax.jit(jax.vmap(grad_fn(ours), in_axes=(None, 0)))(params, x), expected)
    _assert_close(jax.pmap(grad_fn(ours), in_axes=(None, 0))(params, x), expected)


def test_functions_take_strings_ints_and_pairs() -> None:
    x, k = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    chex.assert_shape(layers.conv_transpose(x, k, 2, "SAME"), (1, 10, 10, 4))
    chex.assert_shape(layers.conv_transpose(x, k, 2, "VALID"), (1, 11, 11, 4))
    chex.assert_shape(layers.strided_conv(x, k, 2, 1), (1, 3, 3, 4))
    chex.assert_shape(layers.strided_conv(x, k, (1, 2), [(0, 1), 2]), (1, 4, 4, 4))
    with pytest.raises(ValueError, match="CIRCULAR"):
        layers.strided_conv(x, k, 2, "CIRCULAR")


def test_pixel_shuffle() -> None:
    x = jnp.arange(2 * 3 * 4 * 12, dtype=jnp.float32).reshape(2, 3, 4, 12)
    y = layers.pixel_shuffle(x, 2)
    chex.assert_shape(y, (2, 6, 8, 3))
    b, h, w, c, i, j = 1, 2, 3, 1, 1, 0
    assert y[b, h * 2 + i, w * 2 + j, c] == x[b, h, w, c * 4 + i * 2 + j]


@pytest.mark.parametrize("in_channels", [3, 8])  # XLA's own input gradient, then the phase convs
def test_grad_of_grad_through_the_fast_conv_matches_flax(in_channels):
    """A gradient penalty's parameter gradient (reverse over reverse) equals flax's nn.Conv."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, in_channels))
    fast, reference = layers.Conv(4, (5, 5), strides=(2, 2)), nn.Conv(4, (5, 5), strides=(2, 2))
    params = reference.init(jax.random.key(1), x)

    def penalty_grad(module):
        def penalty(p):
            g = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(p, x))))(x)
            return jnp.sum(g**2)
        return jax.grad(penalty)(params)["params"]["kernel"]

    np.testing.assert_allclose(penalty_grad(fast), penalty_grad(reference), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,features", [((64, 512), 32), ((3, 5, 40), 7), ((4, 300), 512), ((2, 9), 1)])
def test_dense_matches_flax_in_params_output_and_both_gradients(shape, features):
    """Both input-gradient forms (transposed cotangent when small, direct when large) equal nn.Dense's."""
    x = jax.random.normal(jax.random.key(0), shape)
    params = nn.Dense(features).init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(params, layers.Dense(features).init(jax.random.key(1), x))
    cotangent = jax.random.normal(jax.random.key(2), shape[:-1] + (features,))

    def grads(module):
        return jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * cotangent), argnums=(0, 1)))(params, x)

    np.testing.assert_allclose(layers.Dense(features).apply(params, x), nn.Dense(features).apply(params, x),
                               rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(grads(layers.Dense(features)), grads(nn.Dense(features)), rtol=1e-5, atol=1e-5)


def test_dense_large_cotangent_keeps_the_direct_form(monkeypatch):
    """Above the size limit the input gradient is the plain product, so the two paths are both tested."""
    g, kernel = jnp.ones((4, 8)), jnp.arange(24.0).reshape(3, 8)
    expected = np.asarray(g) @ np.asarray(kernel).T
    for limit in (0, 1 << 20):
        monkeypatch.setattr(layers, "_SMALL_COTANGENT", limit)
        text = str(jax.make_jaxpr(lambda g, k: layers._dense_input_grad(g, k))(g, kernel))  # fresh: no trace cache
        assert ("optimization_barrier" in text) == (limit > g.size)
        np.testing.assert_allclose(layers._dense_input_grad(g, kernel), expected)


def test_grad_of_grad_through_the_fast_dense_matches_flax():
    """A gradient penalty through a Dense layer (reverse over reverse) equals flax's nn.Dense."""
    x = jax.random.normal(jax.random.key(0), (6, 20))
    params = nn.Dense(5).init(jax.random.key(1), x)

    def penalty_grad(module):
        def penalty(p):
            g = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(p, x))))(x)
            return jnp.sum(g**2)
        return jax.grad(penalty)(params)["params"]

    chex.assert_trees_all_close(penalty_grad(layers.Dense(5)), penalty_grad(nn.Dense(5)), rtol=1e-5, atol=1e-6)


# A strided conv each side of the few-channel limit, phase convs, a tiny map's GEMM, mixed strides, negative pads
FORM_CASES = [CASES[i] for i in (1, 2, 4, 11, 12, 15)]


def _public_layer(kind: str, features: int, kernel: int, stride, padding) -> nn.Module:
    """The zoo.layers module of one kind, as models build it."""
    return _modules(kind, features, kernel, stride, padding)[0]


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_plain_and_fast_selections_give_equal_values_and_grads(kind: str, case: tuple) -> None:
    """Forcing either selection on this backend, the public layer gives the same output and gradients."""
    n, h, w, cin, features, kernel, stride, padding = case
    module = _public_layer(kind, features, kernel, stride, padding)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, h, w, cin)).astype(np.float32)
    params = _random_params(module, x, rng)
    ct = rng.normal(size=jax.eval_shape(module.apply, params, x).shape).astype(np.float32)
    with layers.use_forms("plain"):
        plain = _value_and_grads(module, params, x, ct)
    with layers.use_forms("fast"):
        fast = _value_and_grads(module, params, x, ct)
    _assert_close(fast, plain)


@pytest.mark.parametrize("shape,features", [((64, 512), 32), ((3, 5, 40), 7)])
def test_dense_plain_and_fast_selections_give_equal_values_and_grads(shape, features) -> None:
    module = layers.Dense(features)
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape).astype(np.float32)
    params = _random_params(module, x, rng)
    ct = rng.normal(size=shape[:-1] + (features,)).astype(np.float32)
    with layers.use_forms("plain"):
        plain = _value_and_grads(module, params, x, ct)
    with layers.use_forms("fast"):
        fast = _value_and_grads(module, params, x, ct)
    _assert_close(fast, plain)


def _traces_custom_vjp(module: nn.Module, x: jax.Array) -> bool:
    """Whether the module's forward, traced now, goes through one of the fast forms' custom VJPs."""
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    return "custom_vjp" in str(jax.make_jaxpr(module.apply)(params, x))


def test_the_backend_picks_the_forms_unless_a_setting_forces_them(monkeypatch) -> None:
    """Auto: fast forms on CPU only; $ZOO_LAYER_FORMS forces one; `use_forms` overrides both; bad names fail."""
    monkeypatch.delenv(layers.FORMS_ENV, raising=False)
    x = jnp.ones((2, 8, 8, 8))
    conv, deconv, dense = layers.Conv(4, (3, 3), strides=2), layers.ConvTranspose(4, (3, 3)), layers.Dense(3)
    for backend, fast in (("cpu", True), ("gpu", False), ("tpu", False)):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert layers.fast_forms_enabled() == fast
        assert all(_traces_custom_vjp(m, x) == fast for m in (conv, deconv, dense))
    monkeypatch.setenv(layers.FORMS_ENV, "fast")  # backend still "tpu"
    assert layers.fast_forms_enabled() and _traces_custom_vjp(conv, x)
    with layers.use_forms("plain"):
        assert not layers.fast_forms_enabled() and not _traces_custom_vjp(deconv, x)
        with layers.use_forms("auto"):
            assert not layers.fast_forms_enabled()
    assert layers.fast_forms_enabled()
    monkeypatch.setenv(layers.FORMS_ENV, "quick")
    with pytest.raises(ValueError, match="ZOO_LAYER_FORMS.*auto, fast, plain"):
        layers.fast_forms_enabled()
    with pytest.raises(ValueError, match="auto, fast, plain"), layers.use_forms("slow"):
        pass
