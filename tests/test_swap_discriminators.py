"""SAEHD discriminators: patch_archi's receptive fields (measured by gradients), head shapes, validation."""
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.swap_discriminators import CodeDiscriminator, UNetPatchDiscriminator, patch_archi, receptive_field

TINY = dict(base_dims=2, max_dims=4)

# patch_size -> (strides, receptive field), worked by hand from rf += 2 * jump; jump *= stride.
EXPECTED_ARCHI = {
    8: ((2, 2), 7),  # 7 and 9 tie at distance 1; 7 needs 2 layers, 9 needs 3
    16: ((2, 2, 2), 15),  # DFL's default res // 8 at 128 px
    32: ((2, 2, 2, 2), 31),
    70: ((2, 2, 1, 2, 2, 2), 71),  # 1 + 2 * (1 + 2 + 4 + 4 + 8 + 16)
}


def _n_params(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _ones_like(tree):
    return jax.tree.map(jnp.ones_like, tree)


@pytest.mark.parametrize("patch_size", sorted(EXPECTED_ARCHI))
def test_patch_archi_table(patch_size):
    strides, rf = EXPECTED_ARCHI[patch_size]
    archi = patch_archi(patch_size)
    assert archi == [(3, s) for s in strides]
    assert receptive_field(archi) == rf


def _reachable_rfs(max_layers=6):
    """rf -> fewest layers, enumerated independently of patch_archi: m_j >= 1 layers see jump 2^j, j = 0..J."""
    best = {}
    for top in range(max_layers):
        for counts in itertools.product(range(1, max_layers + 1), repeat=top + 1):
            if sum(counts) <= max_layers:
                rf = 1 + 2 * sum(m * 2**j for j, m in enumerate(counts))
                best[rf] = min(best.get(rf, max_layers), sum(counts))
    return best


def test_patch_archi_is_closest_with_fewest_layers():
    reachable = _reachable_rfs()
    assert max(reachable) == 127
    for p in range(1, 140):
        archi = patch_archi(p)
        dist = min(abs(rf - p) for rf in reachable)
        assert abs(receptive_field(archi) - p) == dist, p
        assert len(archi) == min(n for rf, n in reachable.items() if abs(rf - p) == dist), p
    assert len(patch_archi(1000, max_layers=3)) == 3


@pytest.mark.parametrize("patch_size", sorted(EXPECTED_ARCHI))
def test_center_logit_sees_exactly_its_patch(patch_size):
    """With all-ones weights every path is positive, so d center[i, j] / d x is > 0 on exactly the receptive field."""
    rf = EXPECTED_ARCHI[patch_size][1]
    model = UNetPatchDiscriminator(patch_size, **TINY)
    step = model.downscale()
    side = step * -(-3 * rf // step)
    x = jax.random.uniform(jax.random.key(0), (1, side, side, 3))
    params = _ones_like(model.init(jax.random.key(1), x[:, :step, :step]))
    i = side // step // 2

    @jax.jit
    def grad(x):
        return jax.grad(lambda x: model.apply(params, x)[0][0, i, i, 0])(x)

    g = np.asarray(jnp.abs(grad(x)).sum(-1)[0])
    rows, cols = np.nonzero(g.any(1))[0], np.nonzero(g.any(0))[0]
    assert 0 < rows[0] and rows[-1] < side - 1 and 0 < cols[0] and cols[-1] < side - 1, "window clipped by border"
    assert rows[-1] - rows[0] + 1 == rf and cols[-1] - cols[0] + 1 == rf
    window = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert (window > 0).all(), "every pixel of the patch must matter"
    assert np.count_nonzero(g) == rf * rf, "no pixel outside the patch may matter"


@pytest.mark.parametrize("res", [64, 128])
def test_unet_shapes(res):
    model = UNetPatchDiscriminator(16, **TINY)
    x = jax.ShapeDtypeStruct((2, res, res, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    center, pixel = jax.eval_shape(model.apply, params, x)
    chex.assert_shape(center, (2, res // 8, res // 8, 1))
    chex.assert_shape(pixel, (2, res, res, 1))
    assert center.dtype == pixel.dtype == jnp.float32


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_unet_runs_bf16_and_differentiates():
    """A real forward and parameter gradient through the transposed convs, 70-px patches (a stride-1 level)."""
    model = UNetPatchDiscriminator(70, dtype=jnp.bfloat16, **TINY)
    x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    params = model.init(jax.random.key(1), x)
    center, pixel = model.apply(params, x)
    chex.assert_shape([center, pixel], [(2, 2, 2, 1), (2, 64, 64, 1)])
    chex.assert_type([center, pixel], jnp.float32)

    def loss(p):
        c, px = model.apply(p, x)
        return c.mean() + px.mean()

    grads = jax.jit(jax.grad(loss))(params)
    chex.assert_tree_all_finite(grads)
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


def test_unet_param_count_default():
    """gan_dims 16, patch 16: widths 16/32/64/128; counted by hand, layer by layer."""
    model = UNetPatchDiscriminator(16, base_dims=16)
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32))
    by_hand = (3 * 16 + 16 + 9 * 16 * 32 + 32 + 9 * 32 * 64 + 64 + 9 * 64 * 128 + 128 + 129  # encoder, center
               + 9 * 128 * 64 + 64 + 9 * 128 * 32 + 32 + 9 * 64 * 16 + 16 + 33)  # decoder, pixel head
    assert _n_params(params) == by_hand == 217138


@pytest.mark.parametrize("side", [4, 8])
def test_code_discriminator_shapes(side):
    model = CodeDiscriminator(base_dims=8)
    code = jax.ShapeDtypeStruct((3, side, side, 64), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), code)["params"]
    chex.assert_shape(jax.eval_shape(model.apply, {"params": params}, code), (3, 2, 2, 1))
    assert params["conv_0"]["kernel"].shape == (4, 4, 64, 8)
    assert ("conv_1" in params) == (side == 8)
    if side == 8:
        assert params["conv_1"]["kernel"].shape == (3, 3, 8, 16)


def test_code_discriminator_runs():
    model = CodeDiscriminator(base_dims=4)
    code = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    params = model.init(jax.random.key(1), code)
    grads = jax.jit(jax.grad(lambda p: model.apply(p, code).mean()))(params)
    chex.assert_tree_all_finite(grads)
    assert [CodeDiscriminator.num_downscales(s) for s in (1, 2, 4, 5, 8, 16, 32)] == [1, 1, 1, 2, 2, 3, 4]


def test_bad_sizes_raise():
    x = jnp.zeros((1, 100, 100, 3))
    with pytest.raises(ValueError, match="multiples of 8.*resize or crop"):
        UNetPatchDiscriminator(16, **TINY).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="64x62.*multiples of 4"):
        UNetPatchDiscriminator(8, **TINY).init(jax.random.key(0), jnp.zeros((1, 64, 62, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        UNetPatchDiscriminator(8, **TINY).init(jax.random.key(0), jnp.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        UNetPatchDiscriminator(0, **TINY).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="base_dims must be a positive int"):
        UNetPatchDiscriminator(8, base_dims=0).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="patch_size"):
        patch_archi(0)
    with pytest.raises(ValueError, match="max_layers"):
        patch_archi(16, max_layers=0)
    with pytest.raises(ValueError, match="NHWC"):
        CodeDiscriminator(8).init(jax.random.key(0), jnp.zeros((8, 8, 64)))
    with pytest.raises(ValueError, match="base_dims"):
        CodeDiscriminator(0).init(jax.random.key(0), jnp.zeros((1, 8, 8, 64)))
