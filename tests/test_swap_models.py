"""DFL-style face-swap autoencoders: shapes per variant, validation, which weights each path uses, bf16."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import create_model, list_models

SMALL = dict(e_dims=8, ae_dims=32, d_dims=8, d_mask_dims=8)
ARCHIS = ["swap_df", "swap_liae"]


def _model(name, resolution=64, opts="", **kw):
    return create_model(name, resolution=resolution, opts=opts, **SMALL, **kw)


@functools.cache
def _params(name, resolution=64, opts=""):
    """f32 params per config, shared by tests (init dominates this file's run time); bf16 models reuse them."""
    model = _model(name, resolution=resolution, opts=opts)
    return model.init(jax.random.key(0), *model.example_inputs())["params"]


def _images(res, batch=2, seed=0):
    ka, kb = jax.random.split(jax.random.key(seed))
    shape = (batch, res, res, 3)
    return jax.random.uniform(ka, shape), jax.random.uniform(kb, shape)


def _check_output(out, batch, res, dtype=jnp.float32):
    rgb, mask = out
    chex.assert_shape(rgb, (batch, res, res, 3))
    chex.assert_shape(mask, (batch, res, res, 1))
    chex.assert_type([rgb, mask], dtype)
    chex.assert_tree_all_finite((rgb, mask))
    for a in (rgb, mask):
        a = np.asarray(a, np.float32)
        assert a.min() >= 0.0 and a.max() <= 1.0


@pytest.mark.parametrize("opts", ["", "u", "d", "t", "ud"])
@pytest.mark.parametrize("name", ARCHIS)
def test_shapes_per_variant(name, opts):
    model = _model(name, opts=opts)
    params = _params(name, opts=opts)
    x_src, x_dst = _images(64)
    out = model.apply({"params": params}, x_src, x_dst)
    assert set(out) == {"src", "dst"}
    for side in ("src", "dst"):
        _check_output(out[side], 2, 64)
    for direction in ("a2b", "b2a"):
        _check_output(model.apply({"params": params}, x_dst, direction, method="swap"), 2, 64)
    z = model.apply({"params": params}, x_src, method="encode")
    code = model.apply({"params": params}, z, method="inter_code")
    side = 64 // (32 if "d" in opts else 16) * (1 if "t" in opts else 2)
    chex.assert_shape(code, (2, side, side, 32 * (4 if name == "swap_liae" else 1)))


@pytest.mark.parametrize("name,opts", [("swap_df", "ud"), ("swap_liae", "udt")])
def test_shapes_at_128(name, opts):
    model = _model(name, resolution=128, opts=opts)
    params = _params(name, resolution=128, opts=opts)
    out = model.apply({"params": params}, *_images(128, batch=1))
    _check_output(out["src"], 1, 128)
    _check_output(out["dst"], 1, 128)


@pytest.mark.parametrize("name", ARCHIS)
@pytest.mark.parametrize("resolution,opts", [(48, ""), (100, ""), (528, ""), (1024, "u"), (80, "d"), (112, "ud")])
def test_bad_resolution_raises(name, resolution, opts):
    model = _model(name, resolution=resolution, opts=opts)
    step = "32" if "d" in opts else "16"
    with pytest.raises(ValueError, match=rf"resolution {resolution} .*multiple of {step} .*\[64, 512\]"):
        model.init(jax.random.key(0), *model.example_inputs())


@pytest.mark.parametrize("name", ARCHIS)
@pytest.mark.parametrize("opts", ["x", "uu", "c"])
def test_bad_opts_raise(name, opts):
    model = _model(name, opts=opts)
    with pytest.raises(ValueError, match="opts"):
        model.init(jax.random.key(0), *model.example_inputs())


def _grads_of_side_loss(name, opts, side):
    model, params = _model(name, opts=opts), _params(name, opts=opts)
    x_src, x_dst = _images(64)

    def loss(p):
        rgb, mask = model.apply({"params": p}, x_src, x_dst)[side]
        return jnp.mean(jnp.square(rgb - x_src)) + jnp.mean(mask)

    return params, jax.jit(jax.grad(loss))(params)


def _all_zero(tree):
    return all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(tree))


def _any_nonzero_everywhere(tree):
    return all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(tree))


@pytest.mark.parametrize("opts", ["", "ud"])
def test_df_src_loss_leaves_dst_decoder_untouched(opts):
    params, grads = _grads_of_side_loss("swap_df", opts, "src")
    assert set(params) == {"encoder", "inter", "decoder_src", "decoder_dst"}
    assert _all_zero(grads["decoder_dst"])
    for part in ("encoder", "inter", "decoder_src"):
        assert _any_nonzero_everywhere(grads[part]), part


@pytest.mark.parametrize("opts", ["", "ud"])
def test_liae_src_loss_leaves_inter_b_untouched(opts):
    params, grads = _grads_of_side_loss("swap_liae", opts, "src")
    assert set(params) == {"encoder", "inter_AB", "inter_B", "decoder"}
    assert _all_zero(grads["inter_B"])
    for part in ("encoder", "inter_AB", "decoder"):
        assert _any_nonzero_everywhere(grads[part]), part
    _, grads = _grads_of_side_loss("swap_liae", opts, "dst")
    assert _any_nonzero_everywhere(grads["inter_B"])


def test_df_swap_uses_the_named_decoder():
    model = _model("swap_df", opts="ud")
    variables = {"params": _params("swap_df", opts="ud")}
    x = _images(64)[1]

    def manual(m, x, which):
        return m.decode(m.inter_code(m.encode(x)), which)

    for direction, which in (("b2a", "src"), ("a2b", "dst")):
        got = model.apply(variables, x, direction, method="swap")
        want = model.apply(variables, x, which, method=manual)
        chex.assert_trees_all_close(got, want, rtol=0, atol=0)
    b2a = model.apply(variables, x, "b2a", method="swap")[0]
    a2b = model.apply(variables, x, "a2b", method="swap")[0]
    assert float(jnp.max(jnp.abs(b2a - a2b))) > 1e-4
    src_recon = model.apply(variables, x, jnp.zeros_like(x))["src"]
    chex.assert_trees_all_close(src_recon, model.apply(variables, x, "b2a", method="swap"), atol=0)


def test_liae_swap_codes_follow_dfl():
    model = _model("swap_liae", opts="u")
    variables = {"params": _params("swap_liae", opts="u")}
    x = _images(64)[1]

    def manual(m, x, direction):
        z = m.encode(x)
        ab = m.inter_AB(z)
        first = ab if direction == "b2a" else m.inter_B(z)
        return m.decode(jnp.concatenate([first, ab], axis=-1))

    for direction in ("b2a", "a2b"):
        got = model.apply(variables, x, direction, method="swap")
        want = model.apply(variables, x, direction, method=manual)
        chex.assert_trees_all_close(got, want, rtol=0, atol=0)
    dst_recon = model.apply(variables, jnp.zeros_like(x), x)["dst"]
    chex.assert_trees_all_close(dst_recon, model.apply(variables, x, "a2b", method="swap"), atol=0)


@pytest.mark.parametrize("name", ARCHIS)
def test_bad_direction_and_side_raise(name):
    model = _model(name)
    variables = {"params": _params(name)}
    x = model.example_inputs()[0]
    with pytest.raises(ValueError, match="direction"):
        model.apply(variables, x, "src2dst", method="swap")
    z = model.apply(variables, x, method="encode")
    if name == "swap_df":
        code = model.apply(variables, z, method="inter_code")
        with pytest.raises(ValueError, match="side"):
            model.apply(variables, code, "A", method="decode")
    else:
        with pytest.raises(ValueError, match="side"):
            model.apply(variables, z, "A", method="inter_code")


@pytest.mark.parametrize("name,opts", [("swap_df", "ud"), ("swap_liae", "t")])
def test_bf16_compute_keeps_f32_params(name, opts):
    model = _model(name, opts=opts, dtype=jnp.bfloat16)
    params = _params(name, opts=opts)
    bf16_init = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
    chex.assert_trees_all_equal_shapes_and_dtypes(bf16_init, params)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    x_src, x_dst = _images(64)
    out = jax.jit(model.apply)({"params": params}, x_src, x_dst)
    _check_output(out["src"], 2, 64, jnp.bfloat16)
    _check_output(out["dst"], 2, 64, jnp.bfloat16)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, x_src, x_dst)["src"][0].astype(jnp.float32))

    grads = jax.jit(jax.grad(loss))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    chex.assert_tree_all_finite(grads)


def test_registered_with_example_inputs():
    assert {"swap_df", "swap_liae"} <= set(list_models("swap_*"))
    for name in ARCHIS:
        x_src, x_dst = create_model(name, resolution=96, opts="u").example_inputs()
        chex.assert_shape([x_src, x_dst], (1, 96, 96, 3))
        assert float(jnp.abs(x_src).sum() + jnp.abs(x_dst).sum()) == 0.0
