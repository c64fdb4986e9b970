"""train.ada: ADA's ops against NumPy pixel moves, analytic images and colour algebra; its draws' statistics;
determinism, gradients and jit; the p controller on toy discriminators, one of them closed through `augment`."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import ada
from zoo.errors import ConfigError

V = np.full(3, 1 / math.sqrt(3))  # the paper's luma axis


def _images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Random NHWC in [-1, 1]: neighbouring pixels differ, so any wrong pixel move shows."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32)


def _keys(n: int, seed: int = 0) -> jax.Array:
    return ada.example_keys(jax.random.key(seed), n)


def _wave(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """A smooth test image as a function of continuous centred coordinates (periods 14 and 19 pixels)."""
    return np.sin(2 * np.pi * xc / 14 + 0.3) * np.cos(2 * np.pi * yc / 19 + 0.1)


def _centred(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of each pixel centre relative to the image centre, as [h, w] arrays."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return c - (w - 1) / 2, r - (h - 1) / 2


def _augment(x: np.ndarray, p: float, pipe: ada.Pipe, seed: int = 0) -> np.ndarray:
    out = ada.augment(jnp.asarray(x), _keys(len(x), seed), p, pipe)
    chex.assert_shape(out, x.shape)
    return np.asarray(out)


def test_sym6_is_the_orthonormal_symlet() -> None:
    """The hard-coded coefficients have the properties that define the sym6 scaling filter."""
    h, n = ada.SYM6, np.arange(len(ada.SYM6))
    assert len(h) == 12
    np.testing.assert_allclose(h.sum(), math.sqrt(2), atol=1e-12)
    for k in range(6):
        np.testing.assert_allclose(np.dot(h[: len(h) - 2 * k], h[2 * k:]), float(k == 0), atol=1e-11)
        np.testing.assert_allclose(np.sum((-1.0) ** n * n ** k * h), 0.0, atol=1e-8)  # six vanishing moments


@pytest.mark.parametrize("c", [1, 3])
def test_p_zero_returns_x_bitwise(c: int) -> None:
    x = _images(4, 16, 16, c)
    x[0, 0, 0, 0] = -0.0  # a sign of zero that an identity matrix product would lose
    np.testing.assert_array_equal(_augment(x, 0.0, ada.BGC).view(np.uint32), x.view(np.uint32))


def test_xflip_only_flips_about_half_exactly() -> None:
    x = _images(64, 12, 20)  # non-square: a swapped axis would show
    out = _augment(x, 1.0, ada.Pipe(xflip=1))
    flipped = [bool(np.array_equal(o, xi[:, ::-1])) for o, xi in zip(out, x)]
    for o, xi, f in zip(out, x, flipped):
        assert f or np.array_equal(o, xi)
    assert 20 <= sum(flipped) <= 44


def test_rotate90_only_gives_exact_quarter_turns() -> None:
    x = _images(64, 16, 16)
    out = _augment(x, 1.0, ada.Pipe(rotate90=1))
    turns = []
    for o, xi in zip(out, x):
        k = [k for k in range(4) if np.array_equal(o, np.rot90(xi, k, axes=(0, 1)))]
        assert len(k) == 1
        turns += k
    assert set(turns) == {0, 1, 2, 3}


def test_integer_translation_is_an_exact_shift_with_reflect_padding() -> None:
    """out = a window of np.pad(x, mode='reflect') (edge pixel not repeated) at a whole-pixel offset within the bound."""
    n, h, w = 64, 16, 24
    x = _images(n, h, w)
    out = _augment(x, 1.0, ada.Pipe(xint=1))
    bh, bw = round(0.125 * h), round(0.125 * w)
    shifts = []
    for o, xi in zip(out, x):
        padded = {m: np.pad(xi, ((bh, bh), (bw, bw), (0, 0)), mode=m) for m in ("reflect", "symmetric")}
        found = [(dy, dx) for dy in range(-bh, bh + 1) for dx in range(-bw, bw + 1)
                 if np.array_equal(o, padded["reflect"][bh + dy: bh + dy + h, bw + dx: bw + dx + w])]
        assert len(found) == 1
        dy, dx = found[0]
        shifts.append(found[0])
        if dy or dx:
            assert not np.array_equal(o, padded["symmetric"][bh + dy: bh + dy + h, bw + dx: bw + dx + w])
    dys, dxs = zip(*shifts)
    assert {min(dys), max(dys), min(dxs), max(dxs)} == {-bh, bh, -bw, bw}


def test_identity_resampling_reproduces_the_image() -> None:
    """Upsampling and downsampling are adjoint orthonormal filter banks: through an identity map even noise survives."""
    x = _images(3, 16, 24)
    out = ada.transform(jnp.asarray(x), jnp.broadcast_to(jnp.eye(3), (3, 3, 3)))
    chex.assert_shape(out, x.shape)
    np.testing.assert_allclose(out, x, atol=2e-6)
    np.testing.assert_array_equal(_augment(x, 1.0, ada.Pipe(scale=1, scale_std=0.0)), x)


def test_filter_gradients_are_autodiff_transposes() -> None:
    """The hand-written VJPs (each filter's adjoint is the other) against autodiff of the plain forward code."""
    rng = np.random.default_rng(0)
    inputs = {ada._upsample_axis: rng.normal(size=(2, 9, 11, 3)), ada._downsample_axis: rng.normal(size=(2, 30, 32, 3))}

    def both(x: jax.Array, ct: jax.Array, f_index: int, axis: int) -> tuple[jax.Array, ...]:
        f = list(inputs)[f_index]
        y, custom = jax.vjp(lambda v: f(v, axis), x)
        _, plain = jax.vjp(lambda v: f.fun(v, axis), x)
        return y, custom(ct)[0], plain(ct)[0]
    for i, (f, x) in enumerate(inputs.items()):
        for axis in (1, 2):
            shape = list(x.shape)
            shape[axis] = 2 * shape[axis] + 10 if f is ada._upsample_axis else shape[axis] // 2 - 5
            ct = rng.normal(size=shape)
            y, custom, plain = jax.jit(both, static_argnums=(2, 3))(x.astype(np.float32), ct.astype(np.float32), i, axis)
            chex.assert_shape(y, tuple(shape))
            np.testing.assert_allclose(custom, plain, atol=1e-5)
            np.testing.assert_allclose(np.vdot(y, ct), np.vdot(x, custom), rtol=1e-5)


def test_second_order_gradients_through_resampling() -> None:
    """R1 on augmented reals differentiates D's input gradient again: grad of a grad through `augment` works."""
    x, keys = jnp.asarray(_images(2, 8, 8)), _keys(2, 14)
    w = jnp.asarray(_images(2, 8, 8, seed=1))
    pipe = ada.pipe_from_spec("g")
    r1 = lambda w_: jnp.sum(jax.grad(lambda v: jnp.sum(jnp.tanh(w_ * ada.augment(v, keys, 1.0, pipe))))(x) ** 2)
    r1_and_grad = jax.jit(jax.value_and_grad(r1))
    _, g = r1_and_grad(w)
    chex.assert_tree_all_finite(g)
    eps, d = 1e-2, jnp.asarray(_images(2, 8, 8, seed=2))
    fd = (r1_and_grad(w + eps * d)[0] - r1_and_grad(w - eps * d)[0]) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g, d), fd, rtol=2e-2)


def test_fractional_translation_matches_the_shifted_wave() -> None:
    n, h, w = 8, 32, 32
    xc, yc = _centred(h, w)
    x = np.broadcast_to(_wave(xc, yc)[None, :, :, None], (n, h, w, 1)).astype(np.float32)
    pipe = ada.Pipe(xfrac=1)
    out = _augment(x, 1.0, pipe, seed=3)
    g = np.asarray(ada.sample(_keys(n, 3), 1.0, pipe, h, w).geom)
    np.testing.assert_array_equal(g[:, :2, :2], np.broadcast_to(np.eye(2), (n, 2, 2)))
    t = g[:, :2, 2]
    assert np.abs(t).max() > 2 and np.mean(np.abs(t - np.round(t)) > 0.05) > 0.7  # mostly fractional, some large
    for o, (tx, ty) in zip(out[..., 0], t):
        want = _wave(xc + tx, yc + ty)  # out(q) = in(q + t)
        my, mx = 4 + math.ceil(abs(ty)), 4 + math.ceil(abs(tx))  # away from the reflected border
        np.testing.assert_allclose(o[my:h - my, mx:w - mx], want[my:h - my, mx:w - mx], atol=0.02)
        assert np.abs(o - _wave(xc - tx, yc - ty))[my:h - my, mx:w - mx].max() > 0.05 or abs(tx) + abs(ty) < 0.1


@pytest.mark.parametrize("name, a", [
    ("rotate 90", np.array([[0.0, -1.0], [1.0, 0.0]])),
    ("rotate 30", np.array([[math.cos(0.5236), -math.sin(0.5236)], [math.sin(0.5236), math.cos(0.5236)]])),
    ("zoom 1.25", np.diag([1.25, 1.25])),
    ("aniso 1.2", np.diag([1.2, 1 / 1.2])),
])
def test_resampling_about_the_centre_matches_the_analytic_image(name: str, a: np.ndarray) -> None:
    """out(q) = in(A q) for centred q: checks where the filter bank puts the image centre, and the map's direction."""
    h = w = 32
    xc, yc = _centred(h, w)
    x = _wave(xc, yc)[None, :, :, None].astype(np.float32)
    g = np.eye(3, dtype=np.float32)
    g[:2, :2] = a
    out = np.asarray(ada.transform(jnp.asarray(x), jnp.asarray(g[None])))[0, :, :, 0]
    sx, sy = a[0, 0] * xc + a[0, 1] * yc, a[1, 0] * xc + a[1, 1] * yc
    inside = (np.abs(sx) < w / 2 - 5) & (np.abs(sy) < h / 2 - 5)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(out[inside], _wave(sx, sy)[inside], atol=0.015)


def test_op_probabilities_and_magnitudes() -> None:
    """Each op fires with probability p (xflip flips half of those); the two rotations together fire with p;
    the magnitudes are the paper's. One op per pipe, so each parameter can be read off its matrix."""
    n, p, size = 4000, 0.4, 32
    pipes = {op: ada.Pipe(**{op: 1.0}) for op in ("xflip", "xint", "scale", "rotate", "aniso", "xfrac",
                                                  "brightness", "contrast", "saturation")}

    @jax.jit
    def draws(keys: jax.Array) -> dict[str, tuple[ada.Draws, ada.Draws]]:
        return {op: (ada.sample(keys, p, pipe, size, size), ada.sample(keys, 1.0, pipe, size, size))
                for op, pipe in pipes.items()}
    d = jax.tree.map(np.asarray, draws(_keys(n, 7)))
    changed = lambda m: np.any(m != np.eye(m.shape[-1]), axis=(1, 2)).mean()
    assert abs((d["xflip"][0].blit[:, 0, 0] == -1).mean() - p / 2) < 0.03
    assert abs(changed(d["rotate"][0].geom) - p) < 0.03  # 1 - (1 - p_rot)^2 = p; p_rot = p would give 0.64
    for op in ("scale", "xfrac"):
        assert abs(changed(d[op][0].geom) - p) < 0.03
    assert abs(changed(d["brightness"][0].colour) - p) < 0.03

    g = d["scale"][1].geom
    assert abs(np.log2(g[:, 0, 0]).std() - 0.2) < 0.01 and np.array_equal(g[:, 0, 0], g[:, 1, 1])
    g = d["aniso"][1].geom
    assert abs(np.log2(g[:, 0, 0]).std() - 0.2) < 0.01
    np.testing.assert_allclose(g[:, 0, 0] * g[:, 1, 1], 1.0, rtol=1e-6)
    assert abs(d["xfrac"][1].geom[:, :2, 2].std() - 0.125 * size) < 0.2
    assert set(np.unique(d["xint"][1].blit[:, :2, 2])) == set(range(-4, 5))  # round(U(-0.125, 0.125) x 32)
    assert abs(d["brightness"][1].colour[:, 0, 3].std() - 0.2) < 0.01
    assert abs(np.log2(d["contrast"][1].colour[:, 0, 0]).std() - 0.5) < 0.02
    c = d["saturation"][1].colour
    s = (np.trace(c[:, :3, :3], axis1=1, axis2=2) - 1) / 2  # v v^T + (I - v v^T) s has trace 1 + 2 s
    assert abs(np.log2(s).std() - 1.0) < 0.04


def test_brightness_adds_one_constant_per_example() -> None:
    x = _images(8, 16, 16)
    diff = (_augment(x, 1.0, ada.Pipe(brightness=1)) - x).reshape(8, -1)
    np.testing.assert_allclose(diff, np.broadcast_to(diff[:, :1], diff.shape), atol=1e-6)
    assert np.unique(np.round(diff[:, 0], 4)).size == 8


def test_contrast_scales_about_zero() -> None:
    x = _images(8, 16, 16)
    out = _augment(x, 1.0, ada.Pipe(contrast=1))
    ratio = (out / x).reshape(8, -1)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
    assert np.all(ratio > 0)


def test_luma_flip_is_the_householder_reflection() -> None:
    x = _images(32, 8, 8)
    householder = np.eye(3) - 2 * np.outer(V, V)
    out = _augment(x, 1.0, ada.Pipe(lumaflip=1))
    flipped = []
    for o, xi in zip(out, x):
        f = np.allclose(o, xi @ householder.T, atol=1e-6)
        assert f or np.array_equal(o, xi)
        flipped.append(f)
        if f:
            np.testing.assert_allclose(o.mean(-1), -xi.mean(-1), atol=1e-6)  # luma negated about 0
            np.testing.assert_allclose(o - o.mean(-1, keepdims=True), xi - xi.mean(-1, keepdims=True), atol=1e-6)
    assert 6 <= sum(flipped) <= 26


def test_hue_rotation_keeps_luma_and_chroma_length() -> None:
    x = _images(8, 16, 16)
    out = _augment(x, 1.0, ada.Pipe(hue=1))
    np.testing.assert_allclose(out.mean(-1), x.mean(-1), atol=1e-6)
    chroma = lambda a: np.linalg.norm(a - a.mean(-1, keepdims=True), axis=-1)
    np.testing.assert_allclose(chroma(out), chroma(x), atol=1e-5)
    assert np.abs(out - x).max() > 0.1


def test_saturation_keeps_luma_and_scales_chroma() -> None:
    x = _images(8, 16, 16)
    np.testing.assert_allclose(_augment(x, 1.0, ada.Pipe(saturation=1, saturation_std=0.0)), x, atol=1e-6)
    out = _augment(x, 1.0, ada.Pipe(saturation=1))
    np.testing.assert_allclose(out.mean(-1), x.mean(-1), atol=1e-5)
    chroma = lambda a: a - a.mean(-1, keepdims=True)
    for o, xi in zip(out, x):
        s = np.sum(chroma(o) * chroma(xi)) / np.sum(chroma(xi) ** 2)
        assert s > 0
        np.testing.assert_allclose(chroma(o), s * chroma(xi), atol=1e-5)


def test_grey_images_are_treated_as_grey_rgb() -> None:
    """C = 1 gives the channel mean of the RGB pipeline on (g, g, g); grey stays grey; luma flip negates."""
    x1 = _images(4, 16, 16, c=1)
    x3 = np.repeat(x1, 3, axis=-1)
    out1, out3 = _augment(x1, 1.0, ada.BGC), _augment(x3, 1.0, ada.BGC)
    np.testing.assert_allclose(out3, np.repeat(out3.mean(-1, keepdims=True), 3, axis=-1), atol=1e-5)
    np.testing.assert_allclose(out1, out3.mean(-1, keepdims=True), atol=1e-5)
    x1 = _images(16, 8, 8, c=1)
    flip = _augment(x1, 1.0, ada.Pipe(lumaflip=1))
    negated = [np.allclose(o, -xi, atol=1e-6) for o, xi in zip(flip, x1)]
    assert all(n or np.array_equal(o, xi) for n, o, xi in zip(negated, flip, x1)) and 2 <= sum(negated) <= 14


def test_an_example_depends_only_on_its_key() -> None:
    x, keys = jnp.asarray(_images(4, 16, 16)), _keys(4, 11)
    full = ada.augment(x, keys, 0.8)
    part = ada.augment(x[2:4], keys[2:4], 0.8)
    chex.assert_trees_all_close(part, full[2:4], atol=1e-6)
    assert not np.allclose(full, ada.augment(x, _keys(4, 12), 0.8))
    offset = ada.example_keys(jax.random.key(11), 2, offset=2)  # a second device's shard of the same batch
    chex.assert_trees_all_close(ada.augment(x[2:], offset, 0.8), full[2:], atol=1e-6)


def test_a_batch_split_over_devices_gives_the_same_images() -> None:
    """Sharded jit and pmap (each device keying its examples by their global index) reproduce the one-device batch."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    n = 2 * len(devices)
    x, key = jnp.asarray(_images(n, 8, 8)), jax.random.key(3)
    ref = ada.augment(x, ada.example_keys(key, n), 0.7)
    data = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
    sharded = jax.jit(lambda v, k: ada.augment(v, ada.example_keys(k, n), 0.7), in_shardings=(data, None))
    chex.assert_trees_all_close(sharded(jax.device_put(x, data), key), ref, atol=1e-6)
    per_device = jax.pmap(lambda v, k: ada.augment(v, ada.example_keys(k, 2, 2 * jax.lax.axis_index("d")), 0.7),
                          axis_name="d", in_axes=(0, None))
    got = per_device(x.reshape(len(devices), 2, 8, 8, 3), key).reshape(x.shape)
    chex.assert_trees_all_close(got, ref, atol=1e-6)


def test_gradient_and_one_compilation_for_any_p() -> None:
    x, keys = jnp.asarray(_images(4, 16, 16)), _keys(4, 13)
    g = jax.grad(lambda v: ada.augment(v, keys, 0.5).sum())(x)
    chex.assert_shape(g, x.shape)
    chex.assert_tree_all_finite(g)
    assert np.abs(np.asarray(g)).sum() > 0
    traces = []

    @jax.jit
    def f(v: jax.Array, k: jax.Array, p: jax.Array) -> jax.Array:
        traces.append(1)
        return ada.augment(v, k, p)
    a, b = f(x, keys, jnp.float32(0.3)), f(x, keys, jnp.float32(0.9))
    assert len(traces) == 1 and not np.allclose(a, b)
    chex.assert_trees_all_close(a, ada.augment(x, keys, 0.3), atol=1e-6)


def test_pipe_from_spec() -> None:
    assert ada.BGC == ada.pipe_from_spec("bgc") == ada.Pipe(**{op: 1.0 for op in ada.BLIT + ada.GEOM + ada.COLOUR})
    bg = ada.pipe_from_spec("bg")
    assert bg.any_on(ada.BLIT) and bg.any_on(ada.GEOM) and not bg.any_on(ada.COLOUR)
    assert ada.pipe_from_spec("gc") == ada.pipe_from_spec("cg")
    for bad in ("bgx", "", "bb", "bgcf"):
        with pytest.raises(ValueError, match=r"valid letters are b .*g .*c "):
            ada.pipe_from_spec(bad)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="1 \\(grey\\) or 3 \\(RGB\\) channels, got 2"):
        ada.augment(jnp.zeros((2, 8, 8, 2)), _keys(2), 0.5)
    chex.assert_shape(ada.augment(jnp.zeros((2, 8, 8, 2)), _keys(2), 0.5, ada.pipe_from_spec("bg")), (2, 8, 8, 2))
    with pytest.raises(ConfigError, match="rotate90 needs square images, got 8x12"):
        ada.augment(jnp.zeros((2, 8, 12, 3)), _keys(2), 0.5)
    with pytest.raises(ConfigError, match="one key per example"):
        ada.augment(jnp.zeros((2, 8, 8, 3)), _keys(3), 0.5)


def test_sign_stats_accumulate_r_t() -> None:
    logits = [np.array([1.5, -0.2, 0.0, 3.0]), np.array([[-1.0], [2.0]])]
    stats = ada.SignStats.zeros()
    for batch in logits:
        stats = stats.add(jnp.asarray(batch))
    signs = np.concatenate([np.sign(b).ravel() for b in logits])
    assert float(stats.count) == len(signs)
    np.testing.assert_allclose(stats.mean(), signs.mean(), rtol=1e-6)
    assert float(ada.SignStats.zeros().mean()) == 0.0


def _controller(p0: float, logit: float, adjustments: int, batch: int = 64) -> list[float]:
    """Run the controller against a D whose real logits are all `logit`, four steps per adjustment."""
    p, ps = jnp.float32(p0), []
    for _ in range(adjustments):
        stats = ada.SignStats.zeros()
        for _ in range(ada.INTERVAL):
            stats = stats.add(jnp.full((batch,), logit))
        p = ada.adjust_p(p, stats.mean(), batch * ada.INTERVAL)
        ps.append(float(p))
    return ps


def test_controller_raises_p_when_d_overfits() -> None:
    step = 64 * ada.INTERVAL / (ada.ADA_KIMG * 1000)
    ps = _controller(0.0, 2.0, 10)
    np.testing.assert_allclose(np.diff([0.0] + ps), step, rtol=1e-4)
    np.testing.assert_allclose(ps[-1], 10 * step, rtol=1e-5)


def test_controller_lowers_p_and_stops_at_zero() -> None:
    step = 64 * ada.INTERVAL / (ada.ADA_KIMG * 1000)
    ps = _controller(3.5 * step, -2.0, 10)
    np.testing.assert_allclose(ps[:3], [2.5 * step, 1.5 * step, 0.5 * step], rtol=1e-4)
    assert ps[3:] == [0.0] * 7
    assert float(ada.adjust_p(0.3, ada.TARGET, 256)) == pytest.approx(0.3)  # r_t on target: no change


def test_closed_loop_settles_where_r_t_meets_the_target() -> None:
    """A toy D that scores 'left half brighter' sees flipped reals as fake: r_t = 1 - p, so p settles near 0.4."""
    n, size, step = 32, 8, 0.01
    cols = np.arange(size)
    base = np.where(cols < size // 2, 0.8, -0.8)[None, None, :, None]
    reals = np.random.default_rng(0).normal(base, 0.2, (256, size, size, 1)).astype(np.float32)
    pipe = ada.Pipe(xflip=1)

    @jax.jit
    def real_logits(x: jax.Array, key: jax.Array, p: jax.Array) -> jax.Array:
        aug = ada.augment(x, ada.example_keys(key, x.shape[0]), p, pipe)
        return aug[:, :, : size // 2].mean(axis=(1, 2, 3)) - aug[:, :, size // 2:].mean(axis=(1, 2, 3))

    p, ps, key = jnp.float32(0.0), [], jax.random.key(5)
    for a in range(150):
        stats = ada.SignStats.zeros()
        for s in range(ada.INTERVAL):
            i = a * ada.INTERVAL + s
            batch = reals[(i * n) % 256: (i * n) % 256 + n]
            stats = stats.add(real_logits(jnp.asarray(batch), jax.random.fold_in(key, i), p))
        p = ada.adjust_p(p, stats.mean(), n * ada.INTERVAL, ada_kimg=n * ada.INTERVAL / (step * 1000))
        ps.append(float(p))
    assert ps[30] > 0.25  # rose from 0 at one step per adjustment
    assert abs(np.mean(ps[60:]) - 0.4) < 0.05 and max(ps[60:]) < 0.55 and min(ps[60:]) > 0.25
