"""Adaptive discriminator augmentation (Karras et al., "Training Generative Adversarial Networks with Limited Data",
NeurIPS 2020, arXiv 2006.06676, Appendix B and C), as pure JAX functions.

With few training images D overfits: it memorises the real set and its logits for real images drift positive. ADA
applies one stochastic augmentation to every image D sees (real, fake, and the reals inside R1), each op with a
probability p, and tunes p so that D's overfitting statistic r_t = E[sign(D(x_real))] stays near a target (0.6).
Applied with p < 1 every op is invertible in distribution, so G is not pushed to reproduce them (the paper
finds leaks unlikely while p stays below about 0.8). Written
from the paper; NVIDIA's code (stylegan2-ada-pytorch) is under a non-commercial licence and only its behaviour and
constants carry over.

Pipeline 'bgc' (`augment`), in the paper's order, each op independently active per example with probability
p x its `Pipe` multiplier:

- b, pixel blitting (exact pixel moves): xflip (flip with probability 1/2 when active), rotate90 (k x 90 degrees,
  k uniform in 0..3), integer translation (uniform in [-0.125, 0.125] of the size, rounded to whole pixels).
- g, general geometric: isotropic scale (2^N(0, 0.2^2), i.e. lognormal with std 0.2 ln 2), pre-rotation (uniform in
  [-pi, pi]), anisotropic scale (s and 1/s on the two axes, s = 2^N(0, 0.2^2)), post-rotation, fractional translation
  (N(0, 0.125^2) of the size). The two rotations each fire with p_rot = 1 - sqrt(1 - p), so that at least one of them
  does with probability p.
- c, colour (a 4x4 matrix on homogeneous RGB): brightness (add b ~ N(0, 0.2^2)), contrast (multiply by
  2^N(0, 0.5^2) about 0, the middle of [-1, 1], as in the paper: not about the image mean), luma flip (Householder
  reflection I - 2 v v^T with i in {0, 1}), hue rotation (about v by uniform [-pi, pi]), saturation (scale the part
  orthogonal to v by 2^N(0, 1)). The luma axis is v = (1, 1, 1)/sqrt(3), so luma is the channel mean.

Geometry. Coordinates are pixel centres relative to the image centre, x along width, y along height; each transform
is a 3x3 matrix mapping an output pixel to where it samples the input (its inverse), composed op by op. Blit ops
form an integer matrix applied as one gather with reflection outside the image (numpy's `mode='reflect'`, the edge
pixel not repeated, as torch's 'reflect' padding that NVIDIA's implementation uses), so an image touched only by
blit ops is an exact pixel move. The general ops then form one float matrix applied by ONE resampling: reflect-pad by
size - 1 (the most reflection allows, and the cap of NVIDIA's draw-dependent margin; static here so shapes never depend
on the draws), upsample 2x
with the symlet-6 low-pass filter, sample bilinearly, low-pass and downsample 2x with the same filter. The two
filters are adjoint (orthonormal wavelet), so downsample(upsample(x)) = x and an identity matrix reproduces the image
to rounding. Doing blits first rather than folding them into the resampling is what makes them exact (sym6 is not
symmetric, so a flip inside the filter bank would blur); the only difference from one combined matrix is at the
border, where the general ops then reflect the already-translated image. Examples whose general matrix is the
identity skip the resampling (a select), and a batch where none is active skips it altogether (`lax.cond`).
The fine buffer is about 36x the image: the price of never clipping a rotated corner.

Greyscale (C = 1): the image is treated as the RGB image (g, g, g) and the output is the channel mean of the colour
matrix applied to it. That is exactly brightness and contrast as for RGB, hue and saturation as the identity (grey
lies on the luma axis), and luma flip as negation g -> -g. Other channel counts are refused by the colour ops.

Randomness and determinism: one PRNG key per example, from which it draws one random vector with a fixed slot per op,
so example i's augmentation depends only on its key and p (not on its position, the batch size or the other ops in the
pipe), and a batch split over devices gives the same images when each device keys its examples by their global index
(`example_keys(key, n, offset)`). The draws do not depend on p, only which ops fire does. p may be traced (no
recompilation as it changes); probabilities use p clipped to [0, 1]; p = 0 returns x bitwise.

The p controller (`adjust_p`): every 4 D steps, p += sign(r_t - target) x batch_images / (ada_kimg x 1000), clamped
at >= 0 only (as NVIDIA's code; nothing caps it above, the op probabilities saturate at 1). r_t is the mean sign of
D's logits for the (augmented) reals seen since the last adjustment; `SignStats` accumulates it inside a train state.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from zoo.errors import ConfigError

#: Symlet-6 decomposition low-pass filter (PyWavelets `pywt.Wavelet("sym6").dec_lo`, the published coefficients):
#: sum sqrt(2), unit norm, orthogonal to its even shifts, six vanishing moments.
SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
])
#: Where the filter bank puts a coarse pixel on the fine grid: fine index t sits at coarse coordinate (t - c) / 2.
#: It is the filter's centroid; both polyphase parts share it because the first moment of its high-pass twin vanishes.
SYM6_DELAY = float(np.sum(np.arange(len(SYM6)) * SYM6) / np.sum(SYM6))

TARGET = 0.6       # r_t the controller steers towards
INTERVAL = 4       # D steps between adjustments
ADA_KIMG = 500.0   # thousands of images for p to move by 1

BLIT = ("xflip", "rotate90", "xint")
GEOM = ("scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
SPEC_GROUPS = {"b": BLIT, "g": GEOM, "c": COLOUR}
#: Fixed slots in each example's random vector (uniforms, then uniforms mapped to normals), so one op's draws never
#: depend on which other ops are on, and one PRNG call per example instead of two per op (threefry dominated compiles).
_COINS = BLIT + GEOM + ("rotate_post",) + COLOUR
_UNIFORM = {name: i for i, name in enumerate(_COINS + ("xflip_i", "rotate90_k", "xint_x", "xint_y", "rotate_theta",
                                                      "rotate_post_theta", "lumaflip_i", "hue_theta"))}
_NORMAL = {name: i for i, name in enumerate(("scale", "aniso", "xfrac_x", "xfrac_y", "brightness", "contrast",
                                             "saturation"))}

_LUMA = np.full(3, 1.0 / math.sqrt(3.0))


@dataclasses.dataclass(frozen=True)
class Pipe:
    """Per-op probability multipliers (op fires with probability p x multiplier; 0 = off) and the paper's magnitudes.

    Frozen and hashable, so it can be a static argument of `jax.jit`.
    """

    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    xint_max: float = 0.125         # of the image size
    scale_std: float = 0.2          # log2 units
    rotate_max: float = 1.0         # x pi
    aniso_std: float = 0.2          # log2 units
    xfrac_std: float = 0.125        # of the image size
    brightness_std: float = 0.2
    contrast_std: float = 0.5       # log2 units
    hue_max: float = 1.0            # x pi
    saturation_std: float = 1.0     # log2 units

    def any_on(self, ops: tuple[str, ...]) -> bool:
        """Whether any of `ops` has a non-zero multiplier (decided at trace time)."""
        return any(getattr(self, op) != 0 for op in ops)


def pipe_from_spec(spec: str) -> Pipe:
    """'bgc', 'bg', 'gc', ... -> a Pipe with those groups' ops on (multiplier 1), so a config names a pipe by letters."""
    valid = "valid letters are b (blit: xflip, rotate90, integer translation), g (geometric: scale, rotation, " \
            "anisotropic scale, fractional translation) and c (colour: brightness, contrast, luma flip, hue, " \
            "saturation), each at most once, e.g. 'bgc' (the paper's default); the paper's filter, noise and cutout " \
            "pipes are not implemented"
    letters = list(spec)
    if not letters or any(ch not in SPEC_GROUPS for ch in letters) or len(set(letters)) != len(letters):
        raise ConfigError(f"unknown ADA pipe {spec!r}: {valid}")
    return Pipe(**{op: 1.0 for ch in letters for op in SPEC_GROUPS[ch]})


BGC = pipe_from_spec("bgc")


def example_keys(key: jax.Array, n: int, offset: int | jax.Array = 0) -> jax.Array:
    """Key for example i = fold_in(key, offset + i): a global index, so a device's shard draws what it would unsplit."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, offset + jnp.arange(n))


class Draws(NamedTuple):
    """One example's (or a batch's, with a leading axis) sampled transforms."""

    blit: jax.Array    # [3, 3] int32: output -> input pixel map (flip, rotate90, integer translation)
    geom: jax.Array    # [3, 3] float32: output -> input map of the general geometric ops
    colour: jax.Array  # [4, 4] float32: homogeneous RGB -> RGB


def _eye(n: int, dtype=jnp.float32) -> jax.Array:
    return jnp.eye(n, dtype=dtype)


def _affine(a: jax.Array, t: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[[a, t], [0, 1]] for a 2x2 block a and a translation t."""
    m = _eye(3, dtype)
    return m.at[:2, :2].set(a.astype(dtype)).at[:2, 2].set(t.astype(dtype))


def _rotation(theta: jax.Array) -> jax.Array:
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _affine(jnp.array([[c, -s], [s, c]]), jnp.zeros(2))


def _embed3(a: jax.Array, t: jax.Array | None = None) -> jax.Array:
    """A 3x3 colour map (and offset) as a 4x4 homogeneous matrix whose last row stays (0, 0, 0, 1)."""
    m = _eye(4).at[:3, :3].set(a)
    return m if t is None else m.at[:3, 3].set(t)


def _draw(key: jax.Array, p: jax.Array, pipe: Pipe, height: int, width: int) -> Draws:
    """Sample one example's transforms; an op that does not fire contributes the identity."""
    p = jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)

    draws = jax.random.uniform(key, (len(_UNIFORM) + len(_NORMAL),))
    uniform = draws[:len(_UNIFORM)]
    signed = jnp.clip(2.0 * draws[len(_UNIFORM):] - 1.0, np.nextafter(np.float32(-1), np.float32(0)), 1.0)
    normal = math.sqrt(2.0) * jax.scipy.special.erfinv(signed)  # as jax.random.normal maps uniforms
    u = lambda name: uniform[_UNIFORM[name]]
    z = lambda name: normal[_NORMAL[name]]

    def fires(op: str, coin: str | None = None, prob: jax.Array | None = None) -> jax.Array:
        prob = jnp.clip(p * getattr(pipe, op), 0.0, 1.0) if prob is None else prob
        return u(coin or op) < prob

    def chain(m: jax.Array, op_m: jax.Array, on: jax.Array) -> jax.Array:
        return m @ jnp.where(on, op_m, jnp.eye(m.shape[0], dtype=m.dtype))

    size = jnp.array([width, height], jnp.float32)
    blit = _eye(3, jnp.int32)
    if pipe.xflip:
        i = (u("xflip_i") < 0.5).astype(jnp.int32)
        blit = chain(blit, _affine(jnp.diag(jnp.stack([1 - 2 * i, 1])), jnp.zeros(2), jnp.int32), fires("xflip"))
    if pipe.rotate90:
        k = jnp.minimum(jnp.floor(u("rotate90_k") * 4), 3).astype(jnp.int32)
        c, s = jnp.array([1, 0, -1, 0])[k], jnp.array([0, 1, 0, -1])[k]
        rot = _affine(jnp.array([[c, -s], [s, c]]), jnp.zeros(2), jnp.int32)
        blit = chain(blit, rot, fires("rotate90"))
    if pipe.xint:
        t = (jnp.stack([u("xint_x"), u("xint_y")]) * 2 - 1) * pipe.xint_max
        shift = jnp.round(t * size).astype(jnp.int32)
        blit = chain(blit, _affine(jnp.eye(2), shift, jnp.int32), fires("xint"))

    geom = _eye(3)
    p_rot = 1.0 - jnp.sqrt(jnp.clip(1.0 - p * pipe.rotate, 0.0, 1.0))
    if pipe.scale:
        s = jnp.exp2(z("scale") * pipe.scale_std)
        geom = chain(geom, _affine(jnp.diag(jnp.stack([s, s])), jnp.zeros(2)), fires("scale"))
    if pipe.rotate:
        theta = (u("rotate_theta") * 2 - 1) * math.pi * pipe.rotate_max
        geom = chain(geom, _rotation(theta), fires("rotate", prob=p_rot))
    if pipe.aniso:
        s = jnp.exp2(z("aniso") * pipe.aniso_std)
        geom = chain(geom, _affine(jnp.diag(jnp.stack([s, 1.0 / s])), jnp.zeros(2)), fires("aniso"))
    if pipe.rotate:
        theta = (u("rotate_post_theta") * 2 - 1) * math.pi * pipe.rotate_max
        geom = chain(geom, _rotation(theta), fires("rotate", "rotate_post", p_rot))
    if pipe.xfrac:
        t = jnp.stack([z("xfrac_x"), z("xfrac_y")]) * pipe.xfrac_std * size
        geom = chain(geom, _affine(jnp.eye(2), t), fires("xfrac"))

    colour = _eye(4)
    v = jnp.asarray(_LUMA, jnp.float32)
    vv = jnp.outer(v, v)

    def then(m: jax.Array, op_m: jax.Array, on: jax.Array) -> jax.Array:
        return jnp.where(on, op_m, _eye(4)) @ m

    if pipe.brightness:
        b = z("brightness") * pipe.brightness_std
        colour = then(colour, _embed3(jnp.eye(3), jnp.full(3, b)), fires("brightness"))
    if pipe.contrast:
        c = jnp.exp2(z("contrast") * pipe.contrast_std)
        colour = then(colour, _embed3(jnp.eye(3) * c), fires("contrast"))
    if pipe.lumaflip:
        i = (u("lumaflip_i") < 0.5).astype(jnp.float32)
        colour = then(colour, _embed3(jnp.eye(3) - 2.0 * i * vv), fires("lumaflip"))
    if pipe.hue:
        theta = (u("hue_theta") * 2 - 1) * math.pi * pipe.hue_max
        cross = jnp.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
        rot = jnp.cos(theta) * jnp.eye(3) + jnp.sin(theta) * cross + (1.0 - jnp.cos(theta)) * vv
        colour = then(colour, _embed3(rot), fires("hue"))
    if pipe.saturation:
        s = jnp.exp2(z("saturation") * pipe.saturation_std)
        colour = then(colour, _embed3(vv + (jnp.eye(3) - vv) * s), fires("saturation"))
    return Draws(blit, geom, colour)


@functools.partial(jax.jit, static_argnames=("pipe", "height", "width"))
def sample(keys: jax.Array, p: float | jax.Array, pipe: Pipe, height: int, width: int) -> Draws:
    """Per-example transforms for a batch (leading axis N), each from its own key: what `augment` applies."""
    return jax.vmap(lambda k: _draw(k, p, pipe, height, width))(keys)


def _reflect(i: jax.Array, n: int) -> jax.Array:
    """Index into [0, n) mirrored about the edge pixels without repeating them (numpy 'reflect'), at any distance."""
    if n == 1:
        return jnp.zeros_like(i)
    m = jnp.mod(i, 2 * (n - 1))
    return jnp.where(m < n, m, 2 * (n - 1) - m)


@jax.jit
def blit(x: jax.Array, m: jax.Array) -> jax.Array:
    """Move pixels by integer maps m [N, 3, 3] (output -> input, centred coordinates); one exact gather per image."""
    _, h, w, _ = x.shape
    rows, cols = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    u, v = 2 * cols - (w - 1), 2 * rows - (h - 1)  # doubled centred coordinates: integers for either parity

    def one(img: jax.Array, mi: jax.Array) -> jax.Array:
        su = mi[0, 0] * u + mi[0, 1] * v + 2 * mi[0, 2]
        sv = mi[1, 0] * u + mi[1, 1] * v + 2 * mi[1, 2]
        return img[_reflect((sv + h - 1) // 2, h), _reflect((su + w - 1) // 2, w)]
    return jax.vmap(one)(x, m)


def _fir(x: jax.Array, taps: np.ndarray, axis: int, length: int) -> jax.Array:
    """out[j] = sum_k taps[k] x[j + k] along `axis` for j < length: shifted slices, which XLA fuses on every backend
    (a dilated depthwise conv took 30x longer on XLA:CPU)."""
    terms = [float(t) * jax.lax.slice_in_dim(x, k, k + length, axis=axis) for k, t in enumerate(taps)]
    return sum(terms[1:], terms[0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _upsample_axis(x: jax.Array, axis: int) -> jax.Array:
    """w[t] = sqrt(2) sum_m h[t - 2m] x[m] for t < 2n + 10, as two 6-tap polyphase filters interleaved."""
    n, half = x.shape[axis], len(SYM6) // 2
    widths = [(0, 0)] * x.ndim
    widths[axis] = (half - 1, half - 1)
    xq = jnp.pad(x, widths)
    phases = [_fir(xq, SYM6[r::2][::-1] * math.sqrt(2.0), axis, n + half - 1) for r in (0, 1)]
    y = jnp.stack(phases, axis=axis + 1)
    return y.reshape(x.shape[:axis] + (2 * (n + half - 1),) + x.shape[axis + 1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _downsample_axis(x: jax.Array, axis: int) -> jax.Array:
    """y[m] = sum_n h[n] / sqrt(2) x[2m + n] for m < (len - 10) / 2: the adjoint of `_upsample_axis`, halved."""
    half = len(SYM6) // 2
    m = x.shape[axis] // 2 - (half - 1)
    pairs = x.reshape(x.shape[:axis] + (x.shape[axis] // 2, 2) + x.shape[axis + 1:])
    even, odd = (jnp.take(pairs, r, axis=axis + 1) for r in (0, 1))
    return (_fir(even, SYM6[0::2] / math.sqrt(2.0), axis, m) + _fir(odd, SYM6[1::2] / math.sqrt(2.0), axis, m))


# Each filter's gradient is the other filter (they are adjoint up to the factor 2): autodiff's transpose of the
# slices, pads and interleave ran 27x slower than the forward on XLA:CPU (362 ms against 13.5 ms, 16 x 64 px).
_upsample_axis.defvjp(lambda x, axis: (_upsample_axis(x, axis), None),
                      lambda axis, _, g: (2.0 * _downsample_axis(g, axis),))
_downsample_axis.defvjp(lambda x, axis: (_downsample_axis(x, axis), None),
                        lambda axis, _, g: (0.5 * _upsample_axis(g, axis),))


def _upsample(x: jax.Array) -> jax.Array:
    """2x upsampling of NHWC by sym6 (2x the adjoint of `_downsample`): [N, H, W, C] -> [N, 2H + 10, 2W + 10, C]."""
    return _upsample_axis(_upsample_axis(x, 1), 2)


def _downsample(x: jax.Array) -> jax.Array:
    """Low-pass and 2x downsampling of NHWC by sym6: [N, 2H + 10, 2W + 10, C] -> [N, H, W, C]."""
    return _downsample_axis(_downsample_axis(x, 1), 2)


def _bilinear(img: jax.Array, ty: jax.Array, tx: jax.Array) -> jax.Array:
    """img [T, S, C] at fractional (row, col) positions, zero outside; exact at integer positions."""
    th, tw, c = img.shape
    ty, tx = jnp.clip(ty, -2.0, th + 1.0), jnp.clip(tx, -2.0, tw + 1.0)
    y0, x0 = jnp.floor(ty), jnp.floor(tx)
    wy, wx = (ty - y0)[..., None], (tx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    flat = rearrange(img, "t s c -> (t s) c")

    def tap(yi: jax.Array, xi: jax.Array) -> jax.Array:
        inside = (yi >= 0) & (yi < th) & (xi >= 0) & (xi < tw)
        val = flat[jnp.clip(yi, 0, th - 1) * tw + jnp.clip(xi, 0, tw - 1)]
        return val * inside[..., None].astype(img.dtype)
    wy, wx = wy.astype(img.dtype), wx.astype(img.dtype)
    return ((tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx) * (1 - wy)
            + (tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx) * wy)


@jax.jit
def transform(x: jax.Array, g: jax.Array) -> jax.Array:
    """Resample x [N, H, W, C] through float maps g [N, 3, 3] (output -> input pixel, centred coordinates).

    Reflect-pad by size - 1, upsample 2x (sym6), sample bilinearly, downsample 2x (sym6). The sample position is
    computed as the fine grid point plus twice the map's displacement, so the identity hits grid points exactly.
    """
    _, h, w, _ = x.shape
    ph, pw = h - 1, w - 1
    fine = _upsample(jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect"))
    taps = len(SYM6) - 2
    sy, sx = jnp.arange(2 * h + taps, dtype=jnp.float32), jnp.arange(2 * w + taps, dtype=jnp.float32)
    qy = ((sy - SYM6_DELAY) / 2 - (h - 1) / 2)[:, None]
    qx = ((sx - SYM6_DELAY) / 2 - (w - 1) / 2)[None, :]

    def one(img: jax.Array, gi: jax.Array) -> jax.Array:
        gi = gi.astype(jnp.float32)
        dx = (gi[0, 0] - 1) * qx + gi[0, 1] * qy + gi[0, 2]
        dy = gi[1, 0] * qx + (gi[1, 1] - 1) * qy + gi[1, 2]
        return _bilinear(img, sy[:, None] + 2 * ph + 2 * dy, sx[None, :] + 2 * pw + 2 * dx)
    return _downsample(jax.vmap(one)(fine, g))


@jax.jit
def recolour(x: jax.Array, c: jax.Array) -> jax.Array:
    """Apply 4x4 colour matrices c [N, 4, 4] per pixel: RGB directly, greyscale as (g, g, g) then the channel mean."""
    ch = x.shape[-1]
    a, t = c[:, :3, :3].astype(x.dtype), c[:, :3, 3].astype(x.dtype)
    if ch == 3:
        return jnp.sum(x[..., None, :] * a[:, None, None], axis=-1) + t[:, None, None]
    if ch == 1:
        gain = rearrange(jnp.sum(a, axis=(1, 2)) / 3, "n -> n 1 1 1")
        return x * gain + rearrange(jnp.mean(t, axis=1), "n -> n 1 1 1")
    raise ConfigError(f"ADA's colour ops need 1 (grey) or 3 (RGB) channels, got {ch}: use a pipe without 'c' "
                      "(e.g. pipe_from_spec('bg'))")


def _per_example(on: jax.Array) -> jax.Array:
    return rearrange(on, "n -> n 1 1 1")


@functools.partial(jax.jit, static_argnames=("pipe",))
def augment(x: jax.Array, keys: jax.Array, p: float | jax.Array, pipe: Pipe = BGC) -> jax.Array:
    """ADA's augmentation of an NHWC batch in [-1, 1]: blit, then general geometric, then colour, each op with
    probability p x its multiplier, example i drawn from keys[i] alone. Differentiable in x; jit-able with p traced
    (pipe static); p = 0 returns x bitwise.
    """
    if x.ndim != 4:
        raise ConfigError(f"ADA augments NHWC batches, got an array of shape {x.shape}")
    n, h, w, ch = x.shape
    if keys.shape[0] != n:
        raise ConfigError(f"ADA needs one key per example: {keys.shape[0]} keys for a batch of {n}")
    if pipe.rotate90 and h != w:
        raise ConfigError(f"ADA's rotate90 needs square images, got {h}x{w}: use a pipe with rotate90=0")
    if pipe.any_on(COLOUR) and ch not in (1, 3):
        raise ConfigError(f"ADA's colour ops need 1 (grey) or 3 (RGB) channels, got {ch}: use a pipe without 'c'")
    d = sample(keys, p, pipe, h, w)
    if pipe.any_on(BLIT):
        on = jnp.any(d.blit != jnp.eye(3, dtype=d.blit.dtype), axis=(1, 2))
        x = jnp.where(_per_example(on), blit(x, d.blit), x)
    if pipe.any_on(GEOM):
        on = jnp.any(d.geom != jnp.eye(3, dtype=d.geom.dtype), axis=(1, 2))
        x = jax.lax.cond(jnp.any(on), lambda v: jnp.where(_per_example(on), transform(v, d.geom), v),
                         lambda v: v, x)
    if pipe.any_on(COLOUR):
        on = jnp.any(d.colour != jnp.eye(4, dtype=d.colour.dtype), axis=(1, 2))
        x = jnp.where(_per_example(on), recolour(x, d.colour), x)
    return x


def adjust_p(p: float | jax.Array, real_sign_mean: float | jax.Array, batch_images: float | jax.Array, *,
             target: float = TARGET, ada_kimg: float = ADA_KIMG) -> jax.Array:
    """One controller step: p + sign(r_t - target) x batch_images / (ada_kimg x 1000), clamped at >= 0.

    r_t = `real_sign_mean`, the mean of sign(D(real)) over the `batch_images` images seen since the last adjustment
    (batch size x `INTERVAL`): above the target D is overfitting and augmentation rises, below it falls. Nothing
    caps p above (NVIDIA's code neither); the op probabilities saturate at 1.
    """
    step = jnp.asarray(batch_images, jnp.float32) / (ada_kimg * 1000.0)
    return jnp.maximum(jnp.asarray(p, jnp.float32) + jnp.sign(real_sign_mean - target) * step, 0.0)


class SignStats(NamedTuple):
    """Running sum of sign(D(real)) and the number of logits summed: r_t's accumulator in a train state."""

    total: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls) -> SignStats:
        return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

    def add(self, real_logits: jax.Array) -> SignStats:
        """Add a batch of D's logits for (augmented) real images."""
        return SignStats(self.total + jnp.sum(jnp.sign(real_logits).astype(jnp.float32)),
                         self.count + jnp.asarray(real_logits.size, jnp.float32))

    def mean(self) -> jax.Array:
        """r_t = E[sign(D(real))] (0 before anything was added)."""
        return self.total / jnp.maximum(self.count, 1.0)
