"""train.diffaugment: each op against a NumPy reference fed the same random draws, keys, gradients, jit."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import diffaugment as D

N, H, W = 4, 16, 24  # non-square, so a swapped axis shows up


def _images(c: int = 3, seed: int = 0) -> np.ndarray:
    """A random NHWC batch in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (N, H, W, c)).astype(np.float32)


def _ref_color(x: np.ndarray, b: np.ndarray, s: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.empty_like(x, dtype=np.float64)
    for i, img in enumerate(x.astype(np.float64)):
        img = img + b[i]
        img = (img - img.mean(-1, keepdims=True)) * s[i] + img.mean(-1, keepdims=True)
        out[i] = (img - img.mean()) * c[i] + img.mean()
    return out


def _ref_translation(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Pixel loop: out[i, j] = x[i + dy, j + dx] when that lies in the image, else 0."""
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                si, sj = i + dy[n], j + dx[n]
                if 0 <= si < x.shape[1] and 0 <= sj < x.shape[2]:
                    out[n, i, j] = x[n, si, sj]
    return out


def _ref_hole(top: np.ndarray, left: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean [N, h, w] cutout squares, built with clipped slices."""
    hole = np.zeros((len(top), h, w), bool)
    ch, cw = D.cutout_size(h), D.cutout_size(w)
    for n, (t, l) in enumerate(zip(top, left)):
        hole[n, max(t, 0):max(t + ch, 0), max(l, 0):max(l + cw, 0)] = True
    return hole


def _draws(key: jax.Array, op: str, h: int = H, w: int = W, n: int = N) -> tuple[np.ndarray, ...]:
    """The per-example parameters `diff_augment` draws for `op` under `key`."""
    k = D.op_keys(key)[op]
    args = {"color": (k, n), "translation": (k, n, h, w), "cutout": (k, n, h, w)}[op]
    fn = {"color": D.sample_color, "translation": D.sample_translation, "cutout": D.sample_cutout}[op]
    return tuple(np.asarray(a) for a in fn(*args))


@pytest.mark.parametrize("c", [1, 3])
def test_color_matches_reference(c: int) -> None:
    x, key = _images(c), jax.random.key(1)
    got = D.diff_augment(jnp.asarray(x), key, ("color",))
    chex.assert_shape(got, x.shape)
    np.testing.assert_allclose(got, _ref_color(x, *_draws(key, "color")), atol=1e-5)


def test_translation_matches_reference() -> None:
    x, key = _images(), jax.random.key(2)
    dy, dx = _draws(key, "translation")
    assert np.any(dy != 0) and np.any(dx != 0)
    got = D.diff_augment(jnp.asarray(x), key, ("translation",))
    chex.assert_shape(got, x.shape)
    np.testing.assert_array_equal(got, _ref_translation(x, dy, dx))


def test_cutout_matches_reference() -> None:
    x, key = _images(), jax.random.key(3)
    hole = _ref_hole(*_draws(key, "cutout"), H, W)
    got = D.diff_augment(jnp.asarray(x), key, ("cutout",))
    chex.assert_shape(got, x.shape)
    np.testing.assert_array_equal(got, np.where(hole[..., None], 0.0, x))


def test_full_policy_is_color_then_translation_then_cutout() -> None:
    x, key = _images(), jax.random.key(4)
    ref = _ref_color(x, *_draws(key, "color")).astype(np.float32)
    ref = _ref_translation(ref, *_draws(key, "translation"))
    ref = np.where(_ref_hole(*_draws(key, "cutout"), H, W)[..., None], 0.0, ref)
    got = D.diff_augment(jnp.asarray(x), key, ("cutout", "translation", "color"))  # listed order is ignored
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("size", [16, 20, 32])
def test_translation_range_matches_official(size: int) -> None:
    """torch.randint(-s, s + 1) with s = int(size / 8 + 0.5): every shift in [-s, s] occurs, none beyond."""
    s = int(size * 0.125 + 0.5)
    dy, dx = D.sample_translation(jax.random.key(0), 2000, size, size)
    for d in (dy, dx):
        assert set(np.asarray(d).tolist()) == set(range(-s, s + 1))


@pytest.mark.parametrize("size", [13, 15, 32])
def test_cutout_offsets_match_official(size: int) -> None:
    """Centre offset ~ randint(0, size + 1 - c % 2), top = offset - c // 2, with c = int(size / 2 + 0.5)."""
    c = int(size * 0.5 + 0.5)
    top, left = D.sample_cutout(jax.random.key(0), 4000, size, size)
    for t in (top, left):
        assert set((np.asarray(t) + c // 2).tolist()) == set(range(0, size + 1 - c % 2))


def test_color_ranges() -> None:
    b, s, c = (np.asarray(v) for v in D.sample_color(jax.random.key(0), 2000))
    assert -0.5 <= b.min() < -0.45 and 0.45 < b.max() < 0.5
    assert 0.0 <= s.min() < 0.05 and 1.95 < s.max() < 2.0
    assert 0.5 <= c.min() < 0.55 and 1.45 < c.max() < 1.5


def test_keys_determine_output_and_examples_ignore_batch_size() -> None:
    x, pol = jnp.asarray(_images()), D.POLICIES
    a = D.diff_augment(x, jax.random.key(5), pol)
    chex.assert_trees_all_equal(a, D.diff_augment(x, jax.random.key(5), pol))
    assert not np.allclose(a, D.diff_augment(x, jax.random.key(6), pol))
    chex.assert_trees_all_close(D.diff_augment(x[:2], jax.random.key(5), pol), a[:2], atol=1e-6)
    assert not np.allclose(a[0], a[1])  # examples get their own draws


def test_empty_policy_is_identity() -> None:
    x = jnp.asarray(_images())
    assert D.parse_policy("") == ()
    chex.assert_trees_all_equal(D.diff_augment(x, jax.random.key(0), ()), x)


def test_gradients_translation_and_cutout() -> None:
    """d sum(out) / dx: 1 where a source pixel lands in the output (translation), 0 in the square (cutout)."""
    x, key = jnp.asarray(_images()), jax.random.key(7)
    ones = np.ones(x.shape, np.float32)
    g = jax.grad(lambda v: D.diff_augment(v, key, ("translation",)).sum())(x)
    dy, dx = _draws(key, "translation")
    # A source pixel is used iff it equals out[i, j] for some i, j: pull the pixel loop back with negated shifts.
    np.testing.assert_array_equal(g, _ref_translation(ones, -dy, -dx))
    assert np.any(np.asarray(g) == 0)
    g = jax.grad(lambda v: D.diff_augment(v, key, ("cutout",)).sum())(x)
    np.testing.assert_array_equal(g, np.where(_ref_hole(*_draws(key, "cutout"), H, W)[..., None], 0.0, ones))


def test_gradient_flows_through_full_policy_under_jit() -> None:
    x, key = jnp.asarray(_images()), jax.random.key(8)
    f = jax.jit(D.diff_augment, static_argnames="policy")
    chex.assert_trees_all_close(f(x, key, policy=D.POLICIES), D.diff_augment(x, key, D.POLICIES), atol=1e-6)
    g = jax.jit(jax.grad(lambda v, k: (D.diff_augment(v, k, D.POLICIES) ** 2).sum()))(x, key)
    chex.assert_shape(g, x.shape)
    chex.assert_tree_all_finite(g)
    assert np.abs(np.asarray(g)).sum() > 0


def test_parse_policy() -> None:
    assert D.parse_policy("color, translation,cutout") == D.POLICIES
    with pytest.raises(ValueError, match=r"'flip'.*color, translation, cutout"):
        D.parse_policy("color,flip")
    with pytest.raises(ValueError, match="'blur'"):
        D.diff_augment(jnp.zeros((1, 8, 8, 3)), jax.random.key(0), ("blur",))
