"""Face-swap autoencoders after DeepFaceLab's SAEHD "df" and "liae" architectures (iperov/DeepFaceLab).

A clean-room reimplementation from a behavioural description of DFL's `DeepFakeArchi` (DFL is
GPL-3.0; no code was copied). Images are NHWC in [0, 1]; every decoder returns `(rgb, mask)`, both
sigmoid outputs, with rgb [B, res, res, 3] and mask [B, res, res, 1].

Naming: side A is DFL's "src" (the identity to paste in) and side B is DFL's "dst" (the footage).
`swap(x, "b2a")` is DFL's face swap: a B (dst) face rendered as A (src); `swap(x, "a2b")` is the
reverse, which DFL does not expose.

- `swap_df`: shared `encoder` and `inter`, two decoders `decoder_src` and `decoder_dst`. Each side is
  reconstructed through its own decoder; b2a is `decoder_src(inter(encoder(x_dst)))`.
- `swap_liae`: shared `encoder`, two inters `inter_AB` and `inter_B` (each emitting 2*ae_dims
  channels) and one shared `decoder`. Codes are src: `concat(inter_AB(z), inter_AB(z))`,
  dst: `concat(inter_B(z), inter_AB(z))`; b2a decodes `concat(inter_AB(z), inter_AB(z))` of a dst
  encoding, i.e. the src code of a dst face. a2b decodes the dst code of a src face.

`opts` holds DFL's variant letters:
- `u`: pixel-normalise the flattened encoder output, `x * rsqrt(mean(x^2) + 1e-6)`.
- `d`: the inter's lowest map is res/32 instead of res/16, so the decoder runs at half resolution
  and its heads end in a depth-to-space(2) (RGB: one 1x1 conv to 12 channels, equivalent to DFL's 4
  parallel convs; mask: one extra upscale). As in DFL the output stays at `resolution`: the flag
  doubles the decoder's output size for the same compute, not the image size; resolution must then
  be a multiple of 32.
- `t`: a deeper encoder (5 stride-2 convs, e,2e,4e,8e,8e, with a residual block after the first and
  the last) and a 4-stage decoder (widths 8d,8d,4d,2d); the inter then has no upscale.

Differences from DFL: no `c` (x*cos(x) activation) option; resolution is limited to 64..512;
Dense/conv initialisers are flax's defaults (lecun normal), not DFL's; the residual blocks use
LeakyReLU 0.2 and the up/downscales 0.1, as in DFL. Losses, discriminators and training live outside
this module.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from zoo import layers
from zoo.registry import register

Array = jax.Array
Dtype = Any
Output = tuple[Array, Array]

_OPTS = "udt"
_SIDES = ("src", "dst")
_DIRECTIONS = ("a2b", "b2a")
_MIN_RES, _MAX_RES = 64, 512


def pixel_norm(x: Array, eps: float = 1e-6) -> Array:
    """Scale each sample's features to unit mean square, in f32, so the code's scale is fixed (DFL `-u`)."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


class _Downscale(nn.Module):
    """5x5 stride-2 conv then LeakyReLU(0.1): halves the map, as DFL's Downscale."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block to [B, H, W, C] and returns [B, H/2, W/2, features]."""
        conv = layers.Conv(self.features, (5, 5), strides=(2, 2), dtype=self.dtype, param_dtype=self.param_dtype)
        return nn.leaky_relu(conv(x), 0.1)


class _Upscale(nn.Module):
    """3x3 conv to 4*features, LeakyReLU(0.1), depth-to-space(2): learned 2x upsampling without transposed convs."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block to [B, H, W, C] and returns [B, 2H, 2W, features]."""
        conv = layers.Conv(4 * self.features, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)
        return layers.pixel_shuffle(nn.leaky_relu(conv(x), 0.1), 2)


class _ResidualBlock(nn.Module):
    """conv3x3, LeakyReLU(0.2), conv3x3, add input, LeakyReLU(0.2): refines a decoder stage at fixed size."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block; output shape equals input shape."""
        ch = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.leaky_relu(layers.Conv(ch, (3, 3), **kw)(x), 0.2)
        h = layers.Conv(ch, (3, 3), **kw)(h)
        return nn.leaky_relu(h + x, 0.2)


class _Encoder(nn.Module):
    """Stride-2 conv stack then flatten: the shared image-to-vector map of both architectures."""

    e_dims: int
    opts: str = ""
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Encodes [B, H, W, 3] to a flat [B, F] code (pixel-normalised with `u`)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x.astype(self.dtype)
        if "t" in self.opts:
            widths = [self.e_dims * m for m in (1, 2, 4, 8, 8)]
            for i, w in enumerate(widths):
                h = _Downscale(w, **kw)(h)
                if i in (0, len(widths) - 1):
                    h = _ResidualBlock(**kw)(h)
        else:
            for m in (1, 2, 4, 8):
                h = _Downscale(self.e_dims * m, **kw)(h)
        h = rearrange(h, "b h w c -> b (h w c)")
        return pixel_norm(h) if "u" in self.opts else h


class _Inter(nn.Module):
    """Dense bottleneck to ae_dims, dense back to a lowest x lowest x out_ch map, optional upscale."""

    ae_dims: int
    out_ch: int
    lowest: int
    upscale: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: Array) -> Array:
        """Maps a flat code [B, F] to the decoder's input map [B, s, s, out_ch] (s = lowest, doubled if upscale)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.Dense(self.ae_dims, **kw)(z)
        h = nn.Dense(self.lowest * self.lowest * self.out_ch, **kw)(h)
        h = rearrange(h, "b (h w c) -> b h w c", h=self.lowest, w=self.lowest)
        return _Upscale(self.out_ch, **kw)(h) if self.upscale else h


class _Decoder(nn.Module):
    """Upscale+residual stages to an RGB head and a separate, narrower upscale-only mask branch."""

    d_dims: int
    d_mask_dims: int
    opts: str = ""
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, code: Array) -> Output:
        """Decodes a code map [B, s, s, C] to (rgb, mask) in [0, 1] at 8s (16s with `t`; doubled again with `d`)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        mults = (8, 8, 4, 2) if "t" in self.opts else (8, 4, 2)
        double = "d" in self.opts
        h = code
        for m in mults:
            h = _ResidualBlock(**kw)(_Upscale(self.d_dims * m, **kw)(h))
        rgb = layers.Conv(3 * (4 if double else 1), (1, 1), **kw)(h)
        if double:
            rgb = layers.pixel_shuffle(rgb, 2)
        m = code
        for mult in mults + ((1,) if double else ()):
            m = _Upscale(self.d_mask_dims * mult, **kw)(m)
        mask = layers.Conv(1, (1, 1), **kw)(m)
        return nn.sigmoid(rgb), nn.sigmoid(mask)


class _SwapBase(nn.Module):
    """Shared config, validation and inputs of the DFL-style swap autoencoders."""

    resolution: int = 128
    opts: str = "ud"
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _validate(self) -> None:
        """Raise a ValueError naming the bad field, before any shape error can hide it."""
        bad = sorted(set(self.opts) - set(_OPTS))
        if bad or len(set(self.opts)) != len(self.opts):
            raise ValueError(f"opts {self.opts!r}: use each of the letters {_OPTS!r} at most once")
        step = 32 if "d" in self.opts else 16
        res = self.resolution
        if not isinstance(res, int) or not _MIN_RES <= res <= _MAX_RES or res % step:
            raise ValueError(
                f"resolution {res!r} is not supported: it must be a multiple of {step}"
                f"{' (opts has d)' if step == 32 else ''} in [{_MIN_RES}, {_MAX_RES}]"
            )
        for field in ("ae_dims", "e_dims", "d_dims", "d_mask_dims"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")

    def _lowest(self) -> int:
        """Side of the inter's dense map: res/16, or res/32 with `d` (the decoder then runs at half size)."""
        return self.resolution // (32 if "d" in self.opts else 16)

    def _kw(self) -> dict[str, Dtype]:
        """Dtype fields passed to every submodule."""
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def example_inputs(self) -> tuple[Array, Array]:
        """Zero inputs of batch 1 for `init`: an A (src) and a B (dst) image batch."""
        x = jnp.zeros((1, self.resolution, self.resolution, 3), jnp.float32)
        return x, x


def _check_side(which: str) -> None:
    """Raise a ValueError unless `which` names a side."""
    if which not in _SIDES:
        raise ValueError(f"side {which!r}: choose 'src' (A) or 'dst' (B)")


def _check_direction(direction: str) -> None:
    """Raise a ValueError unless `direction` is a swap direction."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction {direction!r}: choose 'b2a' (dst face as src, DFL's swap) or 'a2b'")


class DF(_SwapBase):
    """DFL SAEHD "df": shared encoder and inter, one decoder per identity."""

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter, decoder_src and decoder_dst."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, self.opts, **kw)
        self.inter = _Inter(self.ae_dims, self.ae_dims, self._lowest(), "t" not in self.opts, **kw)
        dec = dict(d_dims=self.d_dims, d_mask_dims=self.d_mask_dims, opts=self.opts, **kw)
        self.decoder_src = _Decoder(**dec)
        self.decoder_dst = _Decoder(**dec)

    def encode(self, x: Array) -> Array:
        """Images [B, res, res, 3] to flat codes [B, F]."""
        return self.encoder(x)

    def inter_code(self, z: Array) -> Array:
        """Flat codes to the shared decoder-input map."""
        return self.inter(z)

    def decode(self, code: Array, which: str = "src") -> Output:
        """(rgb, mask) from the `which` ("src" = A or "dst" = B) decoder."""
        _check_side(which)
        return (self.decoder_src if which == "src" else self.decoder_dst)(code)

    def __call__(self, x_src: Array, x_dst: Array) -> dict[str, Output]:
        """Reconstructs each side through its own decoder: {"src": (rgb, mask), "dst": (rgb, mask)}."""
        return {"src": self.decode(self.inter(self.encode(x_src)), "src"),
                "dst": self.decode(self.inter(self.encode(x_dst)), "dst")}

    def swap(self, x: Array, direction: str = "b2a") -> Output:
        """b2a: B (dst) faces through decoder_src (DFL's swap); a2b: A (src) faces through decoder_dst."""
        _check_direction(direction)
        return self.decode(self.inter(self.encode(x)), "src" if direction == "b2a" else "dst")


class LIAE(_SwapBase):
    """DFL SAEHD "liae": shared encoder, inter_AB and inter_B, one shared decoder."""

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter_AB, inter_B and decoder."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, self.opts, **kw)
        inter = dict(ae_dims=self.ae_dims, out_ch=2 * self.ae_dims, lowest=self._lowest(),
                     upscale="t" not in self.opts, **kw)
        self.inter_AB = _Inter(**inter)
        self.inter_B = _Inter(**inter)
        self.decoder = _Decoder(self.d_dims, self.d_mask_dims, self.opts, **kw)

    def encode(self, x: Array) -> Array:
        """Images [B, res, res, 3] to flat codes [B, F]."""
        return self.encoder(x)

    def inter_code(self, z: Array, side: str = "src") -> Array:
        """The decoder input for `side`: src concat(AB, AB); dst concat(B, AB), as DFL orders them."""
        _check_side(side)
        ab = self.inter_AB(z)
        other = ab if side == "src" else self.inter_B(z)
        return jnp.concatenate([other, ab], axis=-1)

    def decode(self, code: Array) -> Output:
        """(rgb, mask) from the shared decoder."""
        return self.decoder(code)

    def __call__(self, x_src: Array, x_dst: Array) -> dict[str, Output]:
        """Reconstructs each side from its own code: {"src": (rgb, mask), "dst": (rgb, mask)}."""
        return {"src": self.decode(self.inter_code(self.encode(x_src), "src")),
                "dst": self.decode(self.inter_code(self.encode(x_dst), "dst"))}

    def swap(self, x: Array, direction: str = "b2a") -> Output:
        """b2a: the src code of B (dst) faces (DFL's swap); a2b: the dst code of A (src) faces."""
        _check_direction(direction)
        return self.decode(self.inter_code(self.encode(x), "src" if direction == "b2a" else "dst"))


register("swap_df")(DF)
register("swap_liae")(LIAE)
