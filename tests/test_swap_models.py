"""Face-swap autoencoders (DFL df/liae, faceswap Original/IAE): shapes, validation, which weights each path uses."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import create_model, layers, list_models, swap

SMALL = dict(e_dims=8, ae_dims=32, d_dims=8, d_mask_dims=8)
ARCHIS = ["swap_df", "swap_liae"]
SMALL_FS = dict(e_dims=8, encoder_dim=32, inter_dims=16, d_dims=8)
FACESWAP = ["swap_original", "swap_iae"]


def _model(name, resolution=64, opts="", **kw):
    if name in FACESWAP:
        assert not opts, "the faceswap models have no opts"
        return create_model(name, resolution=resolution, **SMALL_FS, **kw)
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
@pytest.mark.parametrize("opts", ["x", "uu", "cc", "C"])
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


@pytest.mark.parametrize("name", ARCHIS + FACESWAP)
def test_bad_direction_and_side_raise(name):
    model = _model(name)
    variables = {"params": _params(name)}
    x = model.example_inputs()[0]
    with pytest.raises(ValueError, match="direction"):
        model.apply(variables, x, "src2dst", method="swap")
    z = model.apply(variables, x, method="encode")
    code = model.apply(variables, z, method="inter_code")
    with pytest.raises(ValueError, match="side"):
        model.apply(variables, z, "A", method="inter_code")
    with pytest.raises(ValueError, match="side"):
        model.apply(variables, code, "A", method="decode")


@pytest.mark.parametrize("name", ARCHIS + FACESWAP)
def test_one_interface_encode_inter_code_decode(name):
    """Every model reconstructs a side as decode(inter_code(encode(x), side), side), the path the trainer takes."""
    model = _model(name)
    variables = {"params": _params(name)}
    x_src, x_dst = _images(64)
    out = model.apply(variables, x_src, x_dst)

    def manual(m, x, side):
        return m.decode(m.inter_code(m.encode(x), side), side)

    for side, x in (("src", x_src), ("dst", x_dst)):
        chex.assert_trees_all_equal(model.apply(variables, x, side, method=manual), out[side])


@pytest.mark.parametrize("name,opts", [("swap_df", "ud"), ("swap_liae", "t"), ("swap_iae", "")])
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
    assert set(ARCHIS + FACESWAP) <= set(list_models("swap_*"))
    assert create_model("swap_original").resolution == 64 and create_model("swap_iae").resolution == 64
    for name in ARCHIS + FACESWAP:
        kw = {} if name in FACESWAP else dict(opts="u")
        x_src, x_dst = create_model(name, resolution=96, **kw).example_inputs()
        chex.assert_shape([x_src, x_dst], (1, 96, 96, 3))
        assert float(jnp.abs(x_src).sum() + jnp.abs(x_dst).sum()) == 0.0


# --- DFL's `c` opt: x*cos(x) in place of LeakyReLU ---------------------------------------------------


def test_activate():
    x = jnp.linspace(-3.0, 3.0, 13)
    chex.assert_trees_all_close(swap.activate(x, "xcos", 0.1), x * jnp.cos(x))
    chex.assert_trees_all_close(swap.activate(x, "leaky_relu", 0.2), jnp.where(x > 0, x, 0.2 * x))
    with pytest.raises(ValueError, match="activation"):
        swap.activate(x, "relu", 0.1)


@pytest.mark.parametrize("activation", ["leaky_relu", "xcos"])
def test_down_and_upscale_apply_their_activation(activation):
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 3))
    expect = {"leaky_relu": lambda h: jnp.where(h > 0, h, 0.1 * h), "xcos": lambda h: h * jnp.cos(h)}[activation]
    down = swap._Downscale(4, activation)
    p = down.init(jax.random.key(0), x)["params"]
    conv = layers.Conv(4, (5, 5), strides=(2, 2)).apply({"params": p["Conv_0"]}, x)
    chex.assert_trees_all_close(down.apply({"params": p}, x), expect(conv), atol=1e-6)
    up = swap._Upscale(2, activation)
    p = up.init(jax.random.key(0), x)["params"]
    conv = layers.Conv(8, (3, 3)).apply({"params": p["Conv_0"]}, x)
    chex.assert_trees_all_close(up.apply({"params": p}, x), layers.pixel_shuffle(expect(conv), 2), atol=1e-6)


@pytest.mark.parametrize("name,opts", [("swap_df", "ud"), ("swap_liae", "t")])
def test_c_opt_changes_activation_not_params(name, opts):
    model, model_c = _model(name, opts=opts), _model(name, opts=opts + "c")
    params = _params(name, opts=opts)
    c_init = jax.eval_shape(model_c.init, jax.random.key(0), *model_c.example_inputs())["params"]
    chex.assert_trees_all_equal_shapes_and_dtypes(c_init, params)
    x_src, x_dst = _images(64)
    out = model.apply({"params": params}, x_src, x_dst)
    out_c = model_c.apply({"params": params}, x_src, x_dst)
    for side in ("src", "dst"):
        _check_output(out_c[side], 2, 64)
        for a, b in zip(out[side], out_c[side]):
            assert float(jnp.max(jnp.abs(a - b))) > 1e-4, side
    _check_output(model_c.apply({"params": params}, x_dst, "b2a", method="swap"), 2, 64)

    def loss(p):
        rgb, mask = model_c.apply({"params": p}, x_src, x_dst)["src"]
        return jnp.mean(jnp.square(rgb - x_src)) + jnp.mean(mask)

    chex.assert_tree_all_finite(jax.jit(jax.grad(loss))(params))


# --- faceswap Original and IAE ---------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [64, 128])
@pytest.mark.parametrize("name", FACESWAP)
def test_faceswap_shapes(name, resolution):
    model = _model(name, resolution=resolution)
    params = _params(name, resolution=resolution)
    keys = {"swap_original": {"encoder", "inter", "decoder_a", "decoder_b"},
            "swap_iae": {"encoder", "inter_a", "inter_b", "inter_both", "decoder"}}[name]
    assert set(params) == keys
    x_src, x_dst = _images(resolution)
    out = model.apply({"params": params}, x_src, x_dst)
    assert set(out) == {"src", "dst"}
    for side in ("src", "dst"):
        _check_output(out[side], 2, resolution)
    for direction in ("a2b", "b2a"):
        _check_output(model.apply({"params": params}, x_dst, direction, method="swap"), 2, resolution)
    z = model.apply({"params": params}, x_src, method="encode")
    chex.assert_shape(z, (2, 8 * 8 * (resolution // 16) ** 2))
    code = model.apply({"params": params}, z, method="inter_code")
    if name == "swap_original":  # Dense to res/16, one Upscale to 8 * d_dims
        chex.assert_shape(code, (2, resolution // 8, resolution // 8, 8 * 8))
    else:  # concat of two res/16 inter maps of inter_dims channels
        chex.assert_shape(code, (2, resolution // 16, resolution // 16, 2 * 16))


def test_original_swap_uses_the_named_decoder():
    model = _model("swap_original")
    variables = {"params": _params("swap_original")}
    x = _images(64)[1]

    def manual(m, x, decoder):
        return getattr(m, decoder)(m.inter(m.encoder(x)))

    for direction, decoder in (("b2a", "decoder_a"), ("a2b", "decoder_b")):
        got = model.apply(variables, x, direction, method="swap")
        want = model.apply(variables, x, decoder, method=manual)
        chex.assert_trees_all_close(got, want, rtol=0, atol=0)
    b2a = model.apply(variables, x, "b2a", method="swap")[0]
    a2b = model.apply(variables, x, "a2b", method="swap")[0]
    assert float(jnp.max(jnp.abs(b2a - a2b))) > 1e-4
    src_recon = model.apply(variables, x, jnp.zeros_like(x))["src"]
    chex.assert_trees_all_close(src_recon, model.apply(variables, x, "b2a", method="swap"), atol=0)


def test_iae_swap_codes_follow_faceswap():
    model = _model("swap_iae")
    variables = {"params": _params("swap_iae")}
    x = _images(64)[0]

    def manual(m, x, inter):
        z = m.encoder(x)
        return m.decoder(jnp.concatenate([getattr(m, inter)(z), m.inter_both(z)], axis=-1))

    for direction, inter in (("a2b", "inter_b"), ("b2a", "inter_a")):
        got = model.apply(variables, x, direction, method="swap")
        want = model.apply(variables, x, inter, method=manual)
        chex.assert_trees_all_close(got, want, rtol=0, atol=0)
    b2a = model.apply(variables, x, "b2a", method="swap")[0]
    a2b = model.apply(variables, x, "a2b", method="swap")[0]
    assert float(jnp.max(jnp.abs(b2a - a2b))) > 1e-4
    recon = model.apply(variables, x, x)
    chex.assert_trees_all_close(recon["src"], model.apply(variables, x, "b2a", method="swap"), atol=0)
    chex.assert_trees_all_close(recon["dst"], model.apply(variables, x, "a2b", method="swap"), atol=0)


def test_original_a_loss_leaves_decoder_b_untouched():
    _, grads = _grads_of_side_loss("swap_original", "", "src")
    assert _all_zero(grads["decoder_b"])
    for part in ("encoder", "inter", "decoder_a"):
        assert _any_nonzero_everywhere(grads[part]), part
    _, grads = _grads_of_side_loss("swap_original", "", "dst")
    assert _all_zero(grads["decoder_a"]) and _any_nonzero_everywhere(grads["decoder_b"])


def test_iae_a_loss_leaves_inter_b_untouched():
    _, grads = _grads_of_side_loss("swap_iae", "", "src")
    assert _all_zero(grads["inter_b"])
    for part in ("encoder", "inter_a", "inter_both", "decoder"):
        assert _any_nonzero_everywhere(grads[part]), part
    _, grads = _grads_of_side_loss("swap_iae", "", "dst")
    assert _all_zero(grads["inter_a"]) and _any_nonzero_everywhere(grads["inter_b"])


@pytest.mark.parametrize("name", FACESWAP)
@pytest.mark.parametrize("resolution", [48, 100, 528, 1024])
def test_faceswap_bad_resolution_raises(name, resolution):
    model = _model(name, resolution=resolution)
    with pytest.raises(ValueError, match=rf"resolution {resolution} .*multiple of 16 in \[64, 512\]"):
        model.init(jax.random.key(0), *model.example_inputs())


@pytest.mark.parametrize("name", FACESWAP)
@pytest.mark.parametrize("field,value", [("e_dims", 0), ("encoder_dim", -1), ("inter_dims", 0), ("d_dims", 8.0)])
def test_faceswap_bad_dims_raise(name, field, value):
    model = create_model(name, **{**SMALL_FS, field: value})
    with pytest.raises(ValueError, match=rf"^{field} must be a positive int"):
        model.init(jax.random.key(0), *model.example_inputs())
