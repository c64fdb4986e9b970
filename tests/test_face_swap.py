"""zoo.face_swap: the batched swap call equals the model's own swap, for any batch size and input type."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import face_swap, registry


@pytest.fixture(scope="module")
def model_and_params():
    model = registry.create_model("swap_liae", resolution=64, opts="u", ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=4)
    params = model.init(jax.random.key(0), *model.example_inputs())["params"]
    return model, params


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_chunked_swap_equals_the_model_swap(model_and_params, direction):
    model, params = model_and_params
    faces = np.random.default_rng(0).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    rgb, masks = face_swap.make_swap(model, chunk=3)(params, faces, direction)
    chex.assert_shape([rgb, masks], [(7, 64, 64, 3), (7, 64, 64, 1)])
    ref_rgb, ref_mask = model.apply({"params": params}, jnp.asarray(faces / 255.0, jnp.float32), direction,
                                    method=model.swap)
    np.testing.assert_allclose(rgb, ref_rgb, atol=2e-6)
    np.testing.assert_allclose(masks, ref_mask, atol=2e-6)
    floats, _ = face_swap.make_swap(model)(params, faces[2] / 255.0, direction)
    np.testing.assert_allclose(floats[0], rgb[2], atol=2e-6)


def test_bad_inputs_name_the_fix(model_and_params):
    model, params = model_and_params
    swap = face_swap.make_swap(model)
    with pytest.raises(ValueError, match=r"\[N, 64, 64, 3\] aligned RGB crops"):
        swap(params, np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="divide by 255"):
        swap(params, np.full((1, 64, 64, 3), 200.0))
    with pytest.raises(ValueError, match="direction"):
        swap(params, np.zeros((1, 64, 64, 3), np.uint8), "ab")
    with pytest.raises(TypeError, match="not a swap model"):
        face_swap.make_swap(registry.create_model("vae_mlp", image_shape=(8, 8, 1)))
