"""Reenactment models (zoo.reenact) and their warps (zoo.warp): sampler, TPS, keypoint equivariance, sizes, shapes."""
import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_torch

from zoo import create_model, list_models, reenact, warp
from zoo.errors import ConfigError, DataError

# A 32 px model small enough to init and run in seconds; the same code as the published one.
TINY = {
    "fomm": dict(image_shape=(32, 32, 3), num_kp=3, kp_block_expansion=4, kp_max_features=16, kp_num_blocks=2,
                 kp_padding=3, dm_block_expansion=4, dm_max_features=16, dm_num_blocks=2, gen_block_expansion=4,
                 gen_max_features=16, gen_num_bottleneck_blocks=1),
    "tpsmm": dict(image_shape=(32, 32, 3), num_kp=3, kp_widths=(4, 8), kp_stages=(1, 1), dm_block_expansion=4,
                  dm_max_features=16, dm_num_blocks=2, dm_scale_factor=0.5, gen_block_expansion=4,
                  gen_max_features=16, gen_num_down_blocks=2, gen_num_bottleneck_blocks=1),
}


def _init_key(seed=0):
    """An RBG key for `init`: XLA:CPU compiles threefry's many per-parameter draws 4-5x slower (13 s vs 2.7 s here)."""
    return jax.random.key(seed, impl="rbg")


@functools.cache
def _tiny(name, **overrides):
    model = create_model(name, **{**TINY[name], **overrides})
    return model, jax.jit(model.init)(_init_key(), *model.example_inputs())


def _apply(model, variables, *args, method=None, **kw):
    """model.apply compiled: op-by-op dispatch of these many small ops is what made this file slow."""
    return jax.jit(functools.partial(model.apply, method=method, **kw))(variables, *args)


def _same_frame(model, x):
    """`animate` with the source's own keypoints as the driving ones."""
    kp = model.keypoints(x)
    return model.animate(x, kp, kp)


def _images(shape, batch=2, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, *shape))


# ---------------------------------------------------------------------------------------------------- grid_sample


def _np_grid_sample(image, grid, padding, align_corners):
    """Bilinear sampling written from PyTorch's documentation, point by point (reflection by repeated mirroring)."""
    b_, h, w, c = image.shape
    out = np.zeros((*grid.shape[:3], c))
    for b, i, j in itertools.product(range(b_), range(grid.shape[1]), range(grid.shape[2])):
        p = []
        for coord, n in zip(grid[b, i, j], (w, h)):
            x = (coord + 1) / 2 * (n - 1) if align_corners else ((coord + 1) * n - 1) / 2
            if padding == "border":
                x = min(max(x, 0.0), n - 1.0)
            elif padding == "reflection":
                lo, hi = (0.0, n - 1.0) if align_corners else (-0.5, n - 0.5)
                while x < lo or x > hi:
                    x = 2 * lo - x if x < lo else 2 * hi - x
                x = min(max(x, 0.0), n - 1.0)
            p.append(x)
        x, y = p
        x0, y0 = math.floor(x), math.floor(y)
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    out[b, i, j] += wx * wy * image[b, yy, xx]
    return out


def _border_grid(w, h):
    """(x, y) points on, just inside, just outside and far outside the borders in both conventions, plus the middle."""
    def ticks(n):
        return [-3.7, -1.6, -1 - 1 / n, -1, -1 + 0.5 / n, -0.3, 0.0, 1 - 1 / n, 1, 1 + 0.5 / n, 1 + 1 / n, 2.2, 4.1]
    xs, ys = ticks(w), ticks(h)
    grid = np.array([[(x, y) for x in xs] for y in ys], np.float32)
    return np.stack([grid, grid[::-1, ::-1]])


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding", warp.PADDINGS)
def test_grid_sample_equals_a_numpy_reference_at_the_borders(padding, align_corners):
    image = np.random.default_rng(0).normal(size=(2, 5, 7, 2)).astype(np.float32)
    grid = _border_grid(7, 5)
    got = warp.grid_sample(jnp.asarray(image), jnp.asarray(grid), padding, align_corners=align_corners)
    np.testing.assert_allclose(got, _np_grid_sample(image, grid, padding, align_corners), atol=2e-5)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding", warp.PADDINGS)
def test_grid_sample_equals_torch(padding, align_corners):
    torch = import_torch()
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 6, 9, 3)).astype(np.float32)
    grid = np.concatenate([_border_grid(9, 6), rng.uniform(-2.5, 2.5, (2, 13, 13, 2)).astype(np.float32)], axis=1)
    want = torch.nn.functional.grid_sample(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(grid),
                                           mode="bilinear", padding_mode=padding, align_corners=align_corners)
    got = warp.grid_sample(jnp.asarray(image), jnp.asarray(grid), padding, align_corners=align_corners)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_bilinear_equals_torch_interpolate(align_corners):
    torch = import_torch()
    image = np.random.default_rng(2).normal(size=(1, 5, 6, 2)).astype(np.float32)
    for size in [(9, 13), (3, 4)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(image).permute(0, 3, 1, 2), size=size,
                                               mode="bilinear", align_corners=align_corners)
        got = warp.resize_bilinear(jnp.asarray(image), size, align_corners=align_corners)
        np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("padding", warp.PADDINGS)
def test_identity_grids_reproduce_the_image(padding):
    image = _images((5, 7, 3))
    grid = jnp.broadcast_to(warp.make_coordinate_grid(5, 7), (2, 5, 7, 2))
    np.testing.assert_allclose(warp.grid_sample(image, grid, padding, align_corners=True), image, atol=1e-6)
    centres = [(2 * jnp.arange(n) + 1) / n - 1 for n in (7, 5)]  # pixel centres when -1, 1 are the outer edges
    grid = jnp.broadcast_to(jnp.stack(jnp.meshgrid(*centres, indexing="xy"), -1), (2, 5, 7, 2))
    np.testing.assert_allclose(warp.grid_sample(image, grid, padding, align_corners=False), image, atol=1e-6)


def test_coordinate_grid_and_gaussians():
    grid = warp.make_coordinate_grid(3, 5)
    chex.assert_shape(grid, (3, 5, 2))
    np.testing.assert_allclose(grid[0, :, 0], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(grid[:, 0, 1], [-1, 0, 1])
    kp = jnp.asarray([[[0.5, -1.0], [0.0, 0.1]]])
    maps = warp.kp2gaussian(kp, (3, 5), 0.01)
    chex.assert_shape(maps, (1, 3, 5, 2))
    assert maps[0, 0, 3, 0] == pytest.approx(1.0)  # x = 0.5, y = -1
    assert maps[0, 1, 2, 1] == pytest.approx(math.exp(-0.5 * 0.1**2 / 0.01), rel=1e-5)
    with pytest.raises(ConfigError, match="2x2"):
        warp.make_coordinate_grid(1, 4)


def _np_antialias(image, scale):
    """FOMM's definition: zero-pad, convolve with the normalised 2-D Gaussian, keep every 1/scale-th pixel."""
    s = round(1 / scale)
    sigma = (s - 1) / 2
    size = 2 * round(sigma * 4) + 1
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    half = size // 2
    padded = np.pad(image, ((0, 0), (half, half), (half, half), (0, 0)))
    b, h, w, c = image.shape
    out = np.zeros_like(image)
    for i, j in itertools.product(range(h), range(w)):
        out[:, i, j] = np.einsum("bhwc,hw->bc", padded[:, i:i + size, j:j + size], kernel)
    return out[:, ::s, ::s]


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_antialias_downsample_is_fomms_blur_and_stride(scale):
    image = np.random.default_rng(3).uniform(size=(1, 12, 10, 2)).astype(np.float32)
    got = warp.antialias_downsample(jnp.asarray(image), scale)
    np.testing.assert_allclose(got, _np_antialias(image, scale), atol=1e-5)
    with pytest.raises(ConfigError, match="1/n"):
        warp.antialias_downsample(jnp.asarray(image), 0.3)


# ---------------------------------------------------------------------------------------------------- TPS


def _control(seed, shape=(2, 3, 5)):
    return jax.random.uniform(jax.random.key(seed), (*shape, 2), minval=-1, maxval=1)


def test_tps_solve_interpolates_its_control_points():
    control, targets = _control(0), _control(1)
    exact = warp.tps_solve(control, targets, regularization=0.0)
    np.testing.assert_allclose(warp.tps_warp(control, exact), targets, atol=1e-4)
    # TPSMM's +0.01 I: the first N rows of the system say f(c_i) + 0.01 w_i = target_i.
    smooth = warp.tps_solve(control, targets)
    np.testing.assert_allclose(warp.tps_warp(control, smooth) + 0.01 * smooth.weights, targets, atol=1e-4)
    assert float(jnp.max(jnp.abs(warp.tps_warp(control, smooth) - targets))) > 1e-4  # it does not interpolate


def test_tps_of_an_affine_map_is_that_map_everywhere():
    control = _control(2)
    a, t = jnp.asarray([[0.9, 0.2], [-0.1, 1.1]]), jnp.asarray([0.05, -0.2])
    params = warp.tps_solve(control, control @ a + t, regularization=0.0)
    points = _control(3, (7,))
    np.testing.assert_allclose(warp.tps_warp(points, params), jnp.broadcast_to(points @ a + t, (2, 3, 7, 2)), atol=1e-4)


def test_tps_with_identity_params_is_the_identity():
    control = _control(4)
    points = _control(5, (2, 3, 11))
    np.testing.assert_allclose(warp.tps_warp(points, warp.tps_identity(control)), points, atol=1e-6)
    np.testing.assert_allclose(warp.tps_warp(points, warp.tps_solve(control, control, 0.0)), points, atol=1e-4)


def test_random_tps_jacobian_matches_finite_differences():
    t = warp.random_tps(jax.random.key(0), 2, sigma_affine=0.2, sigma_tps=0.05)
    coords = _control(6, (2, 4))
    jac = jax.jit(warp.random_tps_jacobian)(t, coords)
    chex.assert_shape(jac, (2, 4, 2, 2))
    eps = 1e-3
    for j in range(2):
        step = jnp.zeros(2).at[j].set(eps)
        fd = (warp.random_tps_warp(t, coords + step) - warp.random_tps_warp(t, coords - step)) / (2 * eps)
        np.testing.assert_allclose(jac[..., :, j], fd, atol=2e-3)
    identity = warp.random_tps(jax.random.key(0), 2, sigma_affine=0.0, sigma_tps=0.0)
    frame = _images((6, 6, 1))
    np.testing.assert_allclose(warp.random_tps_frame(identity, frame), frame, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- models


def test_registered_and_misconfigurations_fail_by_name():
    assert {"fomm", "tpsmm"} <= set(list_models())
    model = create_model("fomm", **{**TINY["fomm"], "multi_mask": True})
    with pytest.raises(ConfigError, match="multi_mask"):
        jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    model = create_model("tpsmm", **{**TINY["tpsmm"], "estimate_jacobian": True})
    with pytest.raises(ConfigError, match="estimate_jacobian"):
        jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    model = create_model("fomm", **TINY["fomm"])
    variables = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    with pytest.raises(DataError, match="image_shape"):
        jax.eval_shape(functools.partial(model.apply, method="keypoints"), variables, jnp.zeros((1, 16, 16, 3)))


def _detector(norm):
    return reenact.KeypointDetector(num_kp=3, block_expansion=4, max_features=16, num_blocks=2, scale_factor=0.5,
                                    kp_padding=3, norm=norm, padding_mode="circular")


@pytest.mark.parametrize("norm", reenact.NORMS)
def test_keypoints_of_a_translated_image_move_by_the_translation(norm):
    """With circular padding everywhere, shifting by a multiple of the detector's stride (2 x 2^2 = 8 px) rolls the
    heatmaps exactly; the expected coordinate then moves by the shift, less one period for the mass that wraps round.

    Heatmaps are n = 16 px wide (x_i = -1 + i d, d = 2 / 15); shifting by s = 4 heatmap pixels moves mass p_i to
    i + s, so E[x] grows by s d, minus n d times the mass in the last s columns (which lands at the start).
    The Jacobians, heatmap-weighted means of rolled maps, do not change.
    """
    detector = _detector(norm)
    image = _images((32, 32, 3), batch=1)
    variables = jax.jit(detector.init)(_init_key(1), image)
    apply = jax.jit(detector.apply)
    base = apply(variables, image)
    n, s, d = 16, 4, 2 / 15
    for axis in (0, 1):  # x, y
        moved = apply(variables, jnp.roll(image, 2 * s, axis=2 - axis))
        # Exact but for float rounding, which the temperature (0.1) magnifies tenfold; a broken symmetry shows as 1e-1.
        np.testing.assert_allclose(moved["heatmap"], jnp.roll(base["heatmap"], s, axis=2 - axis), rtol=1e-4, atol=1e-5)
        wrapped = base["heatmap"][0, :, -s:].sum((0, 1)) if axis == 0 else base["heatmap"][0, -s:].sum((0, 1))
        want = base["value"].at[0, :, axis].add(s * d - n * d * wrapped)
        np.testing.assert_allclose(moved["value"], want, atol=5e-5)
        np.testing.assert_allclose(moved["jacobian"], base["jacobian"], atol=5e-5)


def test_jacobian_head_initialises_to_identity():
    detector = _detector("batch")
    image = _images((32, 32, 3))
    variables = jax.jit(detector.init)(_init_key(2), image)
    jac = jax.jit(detector.apply)(variables, image)["jacobian"]
    np.testing.assert_allclose(jac, jnp.broadcast_to(jnp.eye(2), (2, 3, 2, 2)), atol=1e-6)
    model, full = _tiny("fomm")
    kp = _apply(model, full, image, method="keypoints")
    np.testing.assert_allclose(kp["jacobian"], jnp.broadcast_to(jnp.eye(2), (2, 3, 2, 2)), atol=1e-6)


def test_an_identity_flow_reproduces_the_source_features():
    features = _images((16, 16, 5))
    flow = jnp.broadcast_to(warp.make_coordinate_grid(8, 8), (2, 8, 8, 2))  # the dense-motion size, upsampled
    np.testing.assert_allclose(jax.jit(reenact.deform)(features, flow), features, atol=1e-5)


def test_same_keypoints_give_the_identity_flow_in_fomm():
    model, variables = _tiny("fomm")
    source = _images((32, 32, 3))
    out = _apply(model, variables, source, method=_same_frame)
    np.testing.assert_allclose(out["deformation"], jnp.broadcast_to(warp.make_coordinate_grid(8, 8), (2, 8, 8, 2)),
                               atol=1e-5)
    small = warp.antialias_downsample(source, 0.25)
    np.testing.assert_allclose(out["sparse_deformed"], jnp.broadcast_to(small[:, None], (2, 4, 8, 8, 3)), atol=1e-5)
    np.testing.assert_allclose(out["deformed"], source, atol=1e-5)


def test_same_keypoints_give_the_identity_flow_in_tpsmm_without_regularisation():
    model, variables = _tiny("tpsmm")
    model = model.clone(tps_regularization=0.0)  # the solve has no parameters: same variables
    source = _images((32, 32, 3))
    out = _apply(model, variables, source, method=_same_frame)
    np.testing.assert_allclose(out["deformation"],
                               jnp.broadcast_to(warp.make_coordinate_grid(16, 16), (2, 16, 16, 2)), atol=1e-4)


@functools.cache
def _published_counts(name):
    model = create_model(name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    return {k: sum(x.size for x in jax.tree_util.tree_leaves(v)) for k, v in shapes["params"].items()}


def test_published_fomm_has_the_published_parameter_count():
    counts = _published_counts("fomm")
    # First-order-model's vox-256 networks counted from its code: 14.2M + 37.7M + 7.8M = 59.8M.
    millions = {k: round(v / 1e6, 1) for k, v in counts.items()}
    assert millions == {"kp_detector": 14.2, "dense_motion": 37.7, "generator": 7.8}
    assert round(sum(counts.values()) / 1e6, 1) == 59.8
    assert counts == {"kp_detector": 14_215_368, "dense_motion": 37_730_268, "generator": 7_845_123}


def test_published_tpsmm_has_the_published_parameter_count():
    counts = _published_counts("tpsmm")
    resnet18 = 11_689_512 - (512 * 1000 + 1000)  # torchvision's count without its ImageNet head
    assert counts["kp_detector"] == resnet18 + 512 * 100 + 100  # 10 TPS x 5 points x 2
    assert counts["bg_predictor"] == resnet18 + 3 * 64 * 7 * 7 + 512 * 6 + 6  # 6-channel stem, affine head
    millions = {k: round(v / 1e6, 1) for k, v in counts.items()}
    assert millions == {"kp_detector": 11.2, "bg_predictor": 11.2, "dense_motion": 37.9, "generator": 24.7}
    assert round(sum(counts.values()) / 1e6, 1) == 85.1


@pytest.mark.parametrize("name", ["fomm", "tpsmm"])
def test_cpu_preset_forward_shapes(name):
    model = create_model(name, **reenact.CPU_PRESETS[name])
    source, driving = _images((64, 64, 3)), _images((64, 64, 3), seed=1)
    variables = jax.eval_shape(model.init, jax.random.key(0), source, driving)
    out, state = jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"]),
                                variables, source, driving)
    k = 10
    n = k if name == "fomm" else 5 * k
    chex.assert_shape(out["prediction"], (2, 64, 64, 3))
    chex.assert_shape(out["deformed"], (2, 64, 64, 3))
    chex.assert_shape(out["deformation"], (2, 16, 16, 2))
    chex.assert_shape(out["masks"], (2, 16, 16, k + 1))
    chex.assert_shape(out["sparse_deformed"], (2, k + 1, 16, 16, 3))
    chex.assert_shape(out["kp_source"]["value"], (2, n, 2))
    chex.assert_shape(out["bg_param"], (2, 3, 3))
    assert set(state) == {"batch_stats"}
    if name == "fomm":
        chex.assert_shape(out["kp_driving"]["jacobian"], (2, k, 2, 2))
        chex.assert_shape(out["occlusion"], [(2, 16, 16, 1)])
    else:
        chex.assert_shape(out["occlusion"], [(2, s, s, 1) for s in (8, 16, 32, 64)])
        chex.assert_shape(out["warped_encoder_maps"], [(2, 8, 8, 128), (2, 16, 16, 64), (2, 32, 32, 32),
                                                       (2, 64, 64, 16)])


@pytest.mark.parametrize("name", ["fomm", "tpsmm"])
def test_tiny_training_pass_runs_and_stays_in_range(name):
    model, variables = _tiny(name)
    source, driving = _images((32, 32, 3)), _images((32, 32, 3), seed=1)
    out, state = _apply(model, variables, source, driving, train=True, mutable=["batch_stats"])
    chex.assert_tree_all_finite(out)
    assert 0 <= float(out["prediction"].min()) and float(out["prediction"].max()) <= 1
    np.testing.assert_allclose(out["masks"].sum(-1), 1.0, atol=1e-5)
    if name == "tpsmm":
        np.testing.assert_allclose(out["bg_param"], jnp.broadcast_to(jnp.eye(3), (2, 3, 3)), atol=1e-6)
        targets = _apply(model, variables, driving, out["occlusion"], method="encode_driving")
        assert [t.shape for t in targets] == [m.shape for m in out["warped_encoder_maps"][::-1]]
