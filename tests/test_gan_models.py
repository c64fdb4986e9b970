"""GAN models (DCGAN, WGAN-GP critic, SNGAN/projection D): shapes, ranges, state collections, spectral norm vs SVD."""
import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import create_model, gan, list_models
from zoo.registry import model_fields

SMALL = {
    "dcgan_g": dict(latent_dim=8, ngf=4),
    "dcgan_d": dict(ndf=4),
    "sngan_g": dict(latent_dim=8, ngf=8),
    "sngan_d": dict(ndf=8),
}
B = 2


def _model(name, image_shape, **kw):
    return create_model(name, image_shape=image_shape, **{**SMALL[name], **kw})


@functools.cache
def _variables(name, image_shape, **kw):
    model = _model(name, image_shape, **kw)
    return model.init(jax.random.key(0), *model.example_inputs())


def _inputs(model, seed=0, batch=B):
    kz, ky = jax.random.split(jax.random.key(seed))
    if isinstance(model, (gan.DCGANGenerator, gan.SNGANGenerator)):
        x = jax.random.normal(kz, (batch, model.latent_dim))
    else:
        x = jax.random.uniform(kz, (batch, *model.image_shape), minval=-1.0, maxval=1.0)
    labels = jax.random.randint(ky, (batch,), 0, model.num_classes) if model.num_classes else None
    return x, labels


def _state(variables):
    return {k: v for k, v in variables.items() if k != "params"}


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _check_g_output(images, shape):
    chex.assert_shape(images, (B, *shape))
    chex.assert_type(images, jnp.float32)
    chex.assert_tree_all_finite(images)
    assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0


def test_registered_with_config_fields():
    assert {"dcgan_g", "dcgan_d", "sngan_g", "sngan_d"} <= set(list_models("*gan_*"))
    assert model_fields("dcgan_g") == ("image_shape", "latent_dim", "ngf", "dtype", "param_dtype")
    assert model_fields("dcgan_d") == ("image_shape", "ndf", "norm", "dtype", "param_dtype")
    assert model_fields("sngan_g") == ("image_shape", "latent_dim", "ngf", "num_classes", "dtype", "param_dtype")
    assert model_fields("sngan_d") == ("image_shape", "ndf", "num_classes", "spectral_norm", "dtype", "param_dtype")
    from train.config import model_section

    section = model_section("sngan_d", num_classes=10)
    assert dict(section) == dict(name="sngan_d", ndf=128, num_classes=10, spectral_norm=True, dtype="float32")


@pytest.mark.parametrize("image_shape", [(32, 32, 1), pytest.param((64, 64, 3), marks=pytest.mark.slow)])
def test_dcgan_shapes_and_range(image_shape):
    g, d = _model("dcgan_g", image_shape), _model("dcgan_d", image_shape)
    gv, dv = _variables("dcgan_g", image_shape), _variables("dcgan_d", image_shape)
    z, _ = _inputs(g)
    _check_g_output(g.apply(gv, z), image_shape)
    images, _ = g.apply(gv, z, train=True, mutable=["batch_stats"])
    _check_g_output(images, image_shape)
    logits = d.apply(dv, images)
    chex.assert_shape(logits, (B,))
    chex.assert_type(logits, jnp.float32)
    logits, _ = d.apply(dv, images, train=True, mutable=["batch_stats"])
    chex.assert_shape(logits, (B,))
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize("num_classes", [pytest.param(0, marks=pytest.mark.slow), 10])
def test_sngan_shapes_and_range(num_classes):
    shape = (32, 32, 3)
    g, d = _model("sngan_g", shape, num_classes=num_classes), _model("sngan_d", shape, num_classes=num_classes)
    gv = _variables("sngan_g", shape, num_classes=num_classes)
    dv = _variables("sngan_d", shape, num_classes=num_classes)
    assert set(gv) == {"params", "batch_stats"} and set(dv) == {"params", "spectral"}
    z, labels = _inputs(g)
    images, _ = g.apply(gv, z, labels, train=True, mutable=["batch_stats"])
    _check_g_output(images, shape)
    _check_g_output(g.apply(gv, z, labels), shape)
    logits, _ = d.apply(dv, images, labels, train=True, mutable=["spectral"])
    chex.assert_shape(logits, (B,))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    if num_classes:
        other = (labels + 1) % num_classes
        assert not np.allclose(d.apply(dv, images, labels), d.apply(dv, images, other))
        # cBN starts class-neutral (gains 1, biases 0); distinct class biases make G depend on the label
        chex.assert_trees_all_close(g.apply(gv, z, labels), g.apply(gv, z, other))
        params = flax.core.unfreeze(gv["params"])
        beta = params["block_0"]["bn_0"]["beta"]["embedding"]
        params["block_0"]["bn_0"]["beta"]["embedding"] = jax.random.normal(jax.random.key(1), beta.shape)
        shifted = {**gv, "params": params}
        assert not np.allclose(g.apply(shifted, z, labels), g.apply(shifted, z, other))


@pytest.mark.parametrize("name,shape,kw", [
    ("dcgan_g", (32, 32, 3), {}),
    ("dcgan_d", (32, 32, 3), {}),
    ("sngan_g", (32, 32, 3), dict(num_classes=10)),
])
def test_batch_stats_update_only_in_train(name, shape, kw):
    model, variables = _model(name, shape, **kw), _variables(name, shape, **kw)
    x, labels = _inputs(model)
    _, frozen = model.apply(variables, x, labels, train=False, mutable=["batch_stats"])
    chex.assert_trees_all_equal(frozen["batch_stats"], variables["batch_stats"])
    _, updated = model.apply(variables, x, labels, train=True, mutable=["batch_stats"])
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), updated["batch_stats"],
                                     variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    with pytest.raises(flax.errors.ModifyScopeVariableError):
        model.apply(variables, x, labels, train=True)


def _sn_pairs(params, spectral, prefix=()):
    """(path, raw weight, stored sigma) for every spectrally normalised weight."""
    for key, sub in spectral.items():
        if key == "sn":
            weight = params.get("kernel", params.get("embedding"))
            yield prefix, np.asarray(weight), float(sub["sigma"])
        else:
            yield from _sn_pairs(params[key], sub, prefix + (key,))


def test_spectral_norm_sigma_matches_svd():
    """Acceptance: repeated training calls of the SN discriminator converge every sigma to the kernel's top singular value."""
    shape = (32, 32, 3)
    d, variables = _model("sngan_d", shape, num_classes=3), _variables("sngan_d", shape, num_classes=3)
    x, labels = _inputs(d, batch=1)

    # Evaluation calls neither need nor change the power-iteration state.
    chex.assert_trees_all_equal(d.apply(variables, x, labels), d.apply(variables, x, labels))
    _, same = d.apply(variables, x, labels, mutable=["spectral"])
    chex.assert_trees_all_equal(same["spectral"], variables["spectral"])

    @jax.jit
    def iterate(spectral):
        def step(_, s):
            return d.apply({"params": variables["params"], "spectral": s}, x, labels, train=True,
                           mutable=["spectral"])[1]["spectral"]
        return jax.lax.fori_loop(0, 300, step, spectral)

    spectral = iterate(variables["spectral"])
    pairs = list(_sn_pairs(variables["params"], spectral))
    assert len(pairs) == 12  # 10 convs, the head and the class embedding
    for path, weight, sigma in pairs:
        top = np.linalg.svd(weight.reshape(-1, weight.shape[-1]), compute_uv=False)[0]
        np.testing.assert_allclose(sigma, top, rtol=1e-3, err_msg="/".join(path))

    # The normalised weight that the layers use has unit top singular value.
    weight = variables["params"]["blocks_1"]["conv_0"]["kernel"]
    sn = gan.SpectralNorm()
    normalised = sn.apply({"spectral": spectral["blocks_1"]["conv_0"]["sn"]}, weight, update_stats=False)
    top = np.linalg.svd(np.asarray(normalised).reshape(-1, weight.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(top, 1.0, rtol=1e-3)


def test_spectral_norm_matches_flax_spectral_norm():
    """From the same weight and u, one power iteration gives flax.linen.SpectralNorm's u and sigma (README, GANs).

    flax's form is not used because it stores u as [1, n] under "<layer>/kernel/u", which would break
    the "spectral" collection of existing checkpoints; this pins that the values are the same.
    """
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))
    u = jax.random.normal(jax.random.key(1), (16,))
    u = u / jnp.linalg.norm(u)
    normalised, ours = gan.SpectralNorm().apply({"spectral": {"u": u, "sigma": jnp.ones(())}}, kernel,
                                                update_stats=True, mutable=["spectral"])
    theirs = flax.linen.SpectralNorm(flax.linen.Conv(16, (3, 3), use_bias=False), collection_name="spectral")
    variables = {"params": {"layer_instance": {"kernel": kernel}},
                 "spectral": {"layer_instance/kernel/u": u[None], "layer_instance/kernel/sigma": jnp.ones(())}}
    _, theirs = theirs.apply(variables, jnp.zeros((1, 6, 6, 8)), update_stats=True, mutable=["spectral"])
    sigma = theirs["spectral"]["layer_instance/kernel/sigma"]
    np.testing.assert_allclose(ours["spectral"]["sigma"], sigma, rtol=1e-6)
    np.testing.assert_allclose(ours["spectral"]["u"], theirs["spectral"]["layer_instance/kernel/u"][0], atol=1e-6)
    np.testing.assert_allclose(normalised, kernel / sigma, rtol=1e-6)


def test_projection_discriminator_adds_class_inner_product():
    shape = (32, 32, 3)
    d = _model("sngan_d", shape, num_classes=4, spectral_norm=False)
    variables = _variables("sngan_d", shape, num_classes=4, spectral_norm=False)
    assert set(variables) == {"params"}
    x, _ = _inputs(d)
    labels = jnp.array([0, 3])
    out = d.apply(variables, x, labels)
    assert not np.allclose(out, d.apply(variables, x, jnp.array([1, 2])))
    params = variables["params"]
    zeroed = {"params": {**params, "embed": {"embedding": jnp.zeros_like(params["embed"]["embedding"])}}}
    unconditional = d.apply(zeroed, x, labels)
    h = d.apply(variables, x, method="features")
    chex.assert_shape(h, (B, 8))
    head = params["head"]
    np.testing.assert_allclose(unconditional, (h @ head["kernel"] + head["bias"])[:, 0], rtol=1e-5, atol=1e-5)
    projection = jnp.sum(params["embed"]["embedding"][labels] * h, axis=-1)
    np.testing.assert_allclose(out, unconditional + projection, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_wgan_gp_critic(norm):
    shape = (32, 32, 3)
    d, variables = _model("dcgan_d", shape, norm=norm), _variables("dcgan_d", shape, norm=norm)
    assert set(variables) == {"params"}
    x, _ = _inputs(d)
    out = d.apply(variables, x)
    # per-sample: changing one image leaves the other's score alone (no batch statistics)
    out2 = d.apply(variables, x.at[1].set(0.0))
    np.testing.assert_allclose(out[0], out2[0], rtol=1e-6)

    def penalty(params):
        grad = jax.grad(lambda xs: jnp.sum(d.apply({"params": params}, xs)))(x)
        return jnp.mean((jnp.sqrt(jnp.sum(grad**2, axis=(1, 2, 3))) - 1.0) ** 2)

    grads = jax.jit(jax.grad(penalty))(variables["params"])
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["down_0"]["kernel"]).sum()) > 0


def test_param_counts():
    g = create_model("dcgan_g", image_shape=(64, 64, 3))
    gv = jax.eval_shape(lambda: g.init(jax.random.key(0), *g.example_inputs()))
    # dense 100 -> 4*4*512 (no bias), transposed 4x4 convs 512-256-128-64-3 (no bias), BN scale+bias 512..64
    hand = 100 * 4 * 4 * 512 + 16 * (512 * 256 + 256 * 128 + 128 * 64 + 64 * 3) + 2 * (512 + 256 + 128 + 64)
    assert hand == 3_576_704  # PyTorch's DCGAN example's generator
    assert _count(gv["params"]) == hand
    assert _count(gv["batch_stats"]) == 2 * (512 + 256 + 128 + 64)  # running means and variances
    d = create_model("dcgan_d", image_shape=(64, 64, 3))
    dv = jax.eval_shape(lambda: d.init(jax.random.key(0), *d.example_inputs()))
    assert _count(dv["params"]) == 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512) + 2 * (128 + 256 + 512)


@pytest.mark.parametrize("name,bad", [
    ("dcgan_g", (28, 28, 1)), ("dcgan_d", (128, 128, 3)), ("dcgan_d", (32, 64, 3)),
    ("sngan_g", (64, 64, 3)), ("sngan_d", (28, 28, 1)),
])
def test_bad_image_shape_names_supported_sizes(name, bad):
    model = _model(name, bad)
    supported = "(32, 32, C), (64, 64, C)" if name.startswith("dcgan") else "(32, 32, C)"
    with pytest.raises(ValueError, match=r"supports image_shape " + supported.replace("(", r"\(").replace(")", r"\)")):
        model.init(jax.random.key(0), *model.example_inputs())


def test_bad_arguments():
    shape = (32, 32, 3)
    with pytest.raises(ValueError, match="norm 'group'"):
        d = _model("dcgan_d", shape, norm="group")
        d.init(jax.random.key(0), *d.example_inputs())
    g = _model("sngan_g", shape, num_classes=10)
    with pytest.raises(ValueError, match="needs int labels"):
        g.apply(_variables("sngan_g", shape, num_classes=10), jnp.zeros((B, 8)))
    g = _model("dcgan_g", shape)
    with pytest.raises(ValueError, match="unconditional"):
        g.apply(_variables("dcgan_g", shape), jnp.zeros((B, 8)), jnp.zeros((B,), jnp.int32))
    d = _model("dcgan_d", shape)
    with pytest.raises(ValueError, match="built for images"):
        d.apply(_variables("dcgan_d", shape), jnp.zeros((B, 64, 64, 3)))


def test_bfloat16_compute_keeps_float32_outputs():
    shape = (32, 32, 3)
    d = _model("sngan_d", shape, dtype=jnp.bfloat16)
    x, _ = _inputs(d)
    logits = d.apply(_variables("sngan_d", shape), x)
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
