"""Face-swap autoencoders after DeepFaceLab's SAEHD "df"/"liae" and faceswap's "Original"/"IAE" plugins.

Clean-room reimplementations from behavioural descriptions of DFL's `DeepFakeArchi` (iperov/DeepFaceLab)
and of faceswap's `plugins/train/model/{original,iae}.py` (deepfakes/faceswap); both projects are
GPL-3.0 and no code was copied. Images are NHWC in [0, 1]; every decoder returns `(rgb, mask)`, both
sigmoid outputs, with rgb [B, res, res, 3] and mask [B, res, res, 1].

Naming: side A is DFL's "src" (the identity to paste in) and side B is DFL's "dst" (the footage).
`swap(x, "b2a")` is DFL's face swap: a B (dst) face rendered as A (src); `swap(x, "a2b")` is the
reverse, which DFL does not expose. All four models share one interface, written once in `_SwapModel`:
`encode(x)`, `inter_code(z, side)`, `decode(code, side)`, `__call__(x_src, x_dst) -> {"src": (rgb, mask),
"dst": (rgb, mask)}`, `swap(x, direction)` and `example_inputs()`, with `side` "src" or "dst" (a part
that both sides share checks it and ignores it). DF and Original differ only in their parts: one shared
inter and a decoder per side (`_SideDecoders`); LIAE and IAE likewise: inters per side and one shared
decoder (`_SideInters`).

- `swap_df`: shared `encoder` and `inter`, two decoders `decoder_src` and `decoder_dst`. Each side is
  reconstructed through its own decoder; b2a is `decoder_src(inter(encoder(x_dst)))`.
- `swap_liae`: shared `encoder`, two inters `inter_AB` and `inter_B` (each emitting 2*ae_dims
  channels) and one shared `decoder`. Codes are src: `concat(inter_AB(z), inter_AB(z))`,
  dst: `concat(inter_B(z), inter_AB(z))`; b2a decodes `concat(inter_AB(z), inter_AB(z))` of a dst
  encoding, i.e. the src code of a dst face. a2b decodes the dst code of a src face.
- `swap_original`: faceswap's Original (see `Original`): DF's layout without residual blocks, with
  decoders `decoder_a` and `decoder_b`.
- `swap_iae`: faceswap's IAE (see `IAE`), LIAE's ancestor: inters `inter_a`, `inter_b` and
  `inter_both` and one shared `decoder` fed `concat(inter_side(z), inter_both(z))`.

`opts` (df and liae only) holds DFL's variant letters:
- `u`: pixel-normalise the flattened encoder output, `x * rsqrt(mean(x^2) + 1e-6)`.
- `d`: the inter's lowest map is res/32 instead of res/16, so the decoder runs at half resolution
  and its heads end in a depth-to-space(2) (RGB: one 1x1 conv to 12 channels, equivalent to DFL's 4
  parallel convs; mask: one extra upscale). As in DFL the output stays at `resolution`: the flag
  doubles the decoder's output size for the same compute, not the image size; resolution must then
  be a multiple of 32.
- `t`: a deeper encoder (5 stride-2 convs, e,2e,4e,8e,8e, with a residual block after the first and
  the last) and a 4-stage decoder (widths 8d,8d,4d,2d); the inter then has no upscale.
- `c`: every downscale, upscale and residual block uses the activation `x * cos(x)` instead of
  LeakyReLU (0.1 in the down/upscales, 0.2 in the residual blocks), as DFL's `act` does. The
  parameters are the same with and without `c`; the 1x1 output convs keep their sigmoids.

Differences from DFL: resolution is limited to 64..512; Dense/conv initialisers are flax's defaults
(lecun normal), not DFL's; without `c` the residual blocks use LeakyReLU 0.2 and the up/downscales
0.1, as in DFL. Losses, discriminators and training live outside this module.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from zoo import layers
from zoo.registry import register

Array = jax.Array
Dtype = Any
Output = tuple[Array, Array]

_OPTS = "udtc"
_SIDES = ("src", "dst")
_DIRECTIONS = ("a2b", "b2a")
_MIN_RES, _MAX_RES = 64, 512
_ACTIVATIONS = ("leaky_relu", "xcos")


def pixel_norm(x: Array, eps: float = 1e-6) -> Array:
    """Scale each sample's features to unit mean square, in f32, so the code's scale is fixed (DFL `-u`)."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


def activate(x: Array, activation: str, alpha: float) -> Array:
    """LeakyReLU(alpha) for "leaky_relu"; `x * cos(x)` for "xcos" (DFL `-c`, which ignores alpha)."""
    if activation == "leaky_relu":
        return nn.leaky_relu(x, alpha)
    if activation == "xcos":
        return x * jnp.cos(x)
    raise ValueError(f"activation {activation!r}: choose one of {_ACTIVATIONS}")


def _activation(opts: str) -> str:
    """The block activation that DFL's opts select: "xcos" with `c`, else "leaky_relu"."""
    return "xcos" if "c" in opts else "leaky_relu"


class _Block(nn.Module):
    """The compute and storage dtypes of every module here; keyword-only, so subclasses may add required fields."""

    dtype: Dtype = dataclasses.field(default=jnp.float32, kw_only=True)
    param_dtype: Dtype = dataclasses.field(default=jnp.float32, kw_only=True)

    def _kw(self) -> dict[str, Dtype]:
        """Dtype fields passed to every submodule."""
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)


class _Scale(_Block):
    """The fields of `_Downscale` and `_Upscale`: output width and activation."""

    features: int
    activation: str = "leaky_relu"


class _Downscale(_Scale):
    """5x5 stride-2 conv then LeakyReLU(0.1) (or x*cos(x)): halves the map, as DFL's Downscale."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block to [B, H, W, C] and returns [B, H/2, W/2, features]."""
        conv = layers.Conv(self.features, (5, 5), strides=(2, 2), **self._kw())
        return activate(conv(x), self.activation, 0.1)


class _Upscale(_Scale):
    """3x3 conv to 4*features, LeakyReLU(0.1) (or x*cos(x)), depth-to-space(2): 2x upsampling, no transposed conv."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block to [B, H, W, C] and returns [B, 2H, 2W, features]."""
        conv = layers.Conv(4 * self.features, (3, 3), **self._kw())
        return layers.pixel_shuffle(activate(conv(x), self.activation, 0.1), 2)


class _ResidualBlock(_Block):
    """conv3x3, LeakyReLU(0.2), conv3x3, add input, LeakyReLU(0.2): refines a decoder stage at fixed size.

    With activation "xcos" both activations are x*cos(x), as in DFL's `-c`.
    """

    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the block; output shape equals input shape."""
        ch = x.shape[-1]
        kw = self._kw()
        h = activate(layers.Conv(ch, (3, 3), **kw)(x), self.activation, 0.2)
        h = layers.Conv(ch, (3, 3), **kw)(h)
        return activate(h + x, self.activation, 0.2)


class _Encoder(_Block):
    """Stride-2 conv stack then flatten: the shared image-to-vector map of every architecture here."""

    e_dims: int
    opts: str = ""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Encodes [B, H, W, 3] to a flat [B, F] code (pixel-normalised with `u`)."""
        kw = dict(activation=_activation(self.opts), **self._kw())
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


class _Inter(_Block):
    """Dense bottleneck to ae_dims, dense back to a lowest x lowest x out_ch map, optional upscale."""

    ae_dims: int
    out_ch: int
    lowest: int
    upscale: bool
    up_ch: int = 0
    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, z: Array) -> Array:
        """Maps a flat code [B, F] to the decoder's input map [B, s, s, C].

        s = lowest, doubled if upscale; C = out_ch, or up_ch (when positive) after the upscale.
        """
        kw = self._kw()
        h = layers.Dense(self.ae_dims, **kw)(z)
        h = layers.Dense(self.lowest * self.lowest * self.out_ch, **kw)(h)
        h = rearrange(h, "b (h w c) -> b h w c", h=self.lowest, w=self.lowest)
        if not self.upscale:
            return h
        return _Upscale(self.up_ch or self.out_ch, self.activation, **kw)(h)


class _Decoder(_Block):
    """Upscale+residual stages to an RGB head and a separate, narrower upscale-only mask branch."""

    d_dims: int
    d_mask_dims: int
    opts: str = ""

    @nn.compact
    def __call__(self, code: Array) -> Output:
        """Decodes a code map [B, s, s, C] to (rgb, mask) in [0, 1] at 8s (16s with `t`; doubled again with `d`)."""
        kw = self._kw()
        act = _activation(self.opts)
        mults = (8, 8, 4, 2) if "t" in self.opts else (8, 4, 2)
        double = "d" in self.opts
        h = code
        for m in mults:
            h = _ResidualBlock(act, **kw)(_Upscale(self.d_dims * m, act, **kw)(h))
        rgb = layers.Conv(3 * (4 if double else 1), (1, 1), **kw)(h)
        if double:
            rgb = layers.pixel_shuffle(rgb, 2)
        m = code
        for mult in mults + ((1,) if double else ()):
            m = _Upscale(self.d_mask_dims * mult, act, **kw)(m)
        mask = layers.Conv(1, (1, 1), **kw)(m)
        return nn.sigmoid(rgb), nn.sigmoid(mask)


def _check_resolution(res: Any, step: int, why: str = "") -> None:
    """Raise a ValueError naming `resolution` unless it is an int multiple of `step` in [64, 512]."""
    if not isinstance(res, int) or not _MIN_RES <= res <= _MAX_RES or res % step:
        raise ValueError(
            f"resolution {res!r} is not supported: it must be a multiple of {step}"
            f"{why if step != 16 else ''} in [{_MIN_RES}, {_MAX_RES}]"
        )


def _check_positive(module: nn.Module, fields: tuple[str, ...]) -> None:
    """Raise a ValueError naming the first of `fields` that is not a positive int."""
    for field in fields:
        value = getattr(module, field)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a positive int, got {value!r}")


def _check_side(side: str) -> None:
    """Raise a ValueError unless `side` names a side."""
    if side not in _SIDES:
        raise ValueError(f"side {side!r}: choose 'src' (A) or 'dst' (B)")


def _check_direction(direction: str) -> None:
    """Raise a ValueError unless `direction` is a swap direction."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction {direction!r}: choose 'b2a' (dst face as src, DFL's swap) or 'a2b'")


class _SwapModel(_Block):
    """The interface of all four models, written once over each one's `inter_code(z, side)` and `decode(code, side)`.

    A model is `(_SideDecoders or _SideInters, config base)`: the config base (`_SwapBase`, `_FaceswapBase`)
    declares the fields and validation, its setup builds `encoder`. Listing the behaviour first puts its
    dtype fields after the config's, last, as on every zoo model.
    """

    def encode(self, x: Array) -> Array:
        """Images [B, res, res, 3] to flat codes [B, F]."""
        return self.encoder(x)

    def _render(self, x: Array, side: str) -> Output:
        """(rgb, mask) of images x through `side`'s code and decoder: a reconstruction, or a swap into `side`."""
        return self.decode(self.inter_code(self.encode(x), side), side)

    def __call__(self, x_src: Array, x_dst: Array) -> dict[str, Output]:
        """Reconstructs each side through its own code and decoder: {"src": (rgb, mask), "dst": (rgb, mask)}."""
        return {"src": self._render(x_src, "src"), "dst": self._render(x_dst, "dst")}

    def swap(self, x: Array, direction: str = "b2a") -> Output:
        """b2a: B (dst) faces rendered as A (src), DFL's swap; a2b: A faces rendered as B."""
        _check_direction(direction)
        return self._render(x, "src" if direction == "b2a" else "dst")

    def example_inputs(self) -> tuple[Array, Array]:
        """Zero inputs of batch 1 for `init`: an A (src) and a B (dst) image batch."""
        x = jnp.zeros((1, self.resolution, self.resolution, 3), jnp.float32)
        return x, x


class _SideDecoders(_SwapModel):
    """DF and Original: one inter shared by both sides, one decoder per side (`decoder_names`: src's, dst's)."""

    decoder_names: ClassVar[tuple[str, str]]

    def inter_code(self, z: Array, side: str = "src") -> Array:
        """Flat codes to the shared inter's decoder-input map, the same for both sides."""
        _check_side(side)
        return self.inter(z)

    def decode(self, code: Array, side: str = "src") -> Output:
        """(rgb, mask) from `side`'s decoder: "src" (A) or "dst" (B)."""
        _check_side(side)
        return getattr(self, self.decoder_names[_SIDES.index(side)])(code)


class _SideInters(_SwapModel):
    """LIAE and IAE: one decoder shared by both sides, fed concat(own(z), common(z)) (`inter_names[side]`)."""

    inter_names: ClassVar[dict[str, tuple[str, str]]]

    def inter_code(self, z: Array, side: str = "src") -> Array:
        """The decoder input for `side`: concat(own(z), common(z)), the inters `inter_names[side]` names."""
        _check_side(side)
        own, common = self.inter_names[side]
        shared = getattr(self, common)(z)
        mine = shared if own == common else getattr(self, own)(z)
        return jnp.concatenate([mine, shared], axis=-1)

    def decode(self, code: Array, side: str = "src") -> Output:
        """(rgb, mask) from the decoder that both sides share; `side` is checked, the code carries it."""
        _check_side(side)
        return self.decoder(code)


class _SwapBase(nn.Module):
    """Shared config and validation of the DFL-style swap autoencoders."""

    resolution: int = 128
    opts: str = "ud"
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22

    def _validate(self) -> None:
        """Raise a ValueError naming the bad field, before any shape error can hide it."""
        bad = sorted(set(self.opts) - set(_OPTS))
        if bad or len(set(self.opts)) != len(self.opts):
            raise ValueError(f"opts {self.opts!r}: use each of the letters {_OPTS!r} at most once")
        _check_resolution(self.resolution, 32 if "d" in self.opts else 16, " (opts has d)")
        _check_positive(self, ("ae_dims", "e_dims", "d_dims", "d_mask_dims"))

    def _lowest(self) -> int:
        """Side of the inter's dense map: res/16, or res/32 with `d` (the decoder then runs at half size)."""
        return self.resolution // (32 if "d" in self.opts else 16)


class DF(_SideDecoders, _SwapBase):
    """DFL SAEHD "df": shared encoder and inter, one decoder per identity (b2a goes through decoder_src)."""

    decoder_names = ("decoder_src", "decoder_dst")

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter, decoder_src and decoder_dst."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, self.opts, **kw)
        self.inter = _Inter(self.ae_dims, self.ae_dims, self._lowest(), "t" not in self.opts,
                            activation=_activation(self.opts), **kw)
        dec = dict(d_dims=self.d_dims, d_mask_dims=self.d_mask_dims, opts=self.opts, **kw)
        self.decoder_src = _Decoder(**dec)
        self.decoder_dst = _Decoder(**dec)


class LIAE(_SideInters, _SwapBase):
    """DFL SAEHD "liae": shared encoder, inter_AB and inter_B, one shared decoder.

    Codes as DFL orders them: src concat(AB, AB), dst concat(B, AB); b2a decodes the src code of B faces.
    """

    inter_names = {"src": ("inter_AB", "inter_AB"), "dst": ("inter_B", "inter_AB")}

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter_AB, inter_B and decoder."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, self.opts, **kw)
        inter = dict(ae_dims=self.ae_dims, out_ch=2 * self.ae_dims, lowest=self._lowest(),
                     upscale="t" not in self.opts, activation=_activation(self.opts), **kw)
        self.inter_AB = _Inter(**inter)
        self.inter_B = _Inter(**inter)
        self.decoder = _Decoder(self.d_dims, self.d_mask_dims, self.opts, **kw)


class _FSDecoder(_Block):
    """faceswap decoder: Upscales of width d_dims * (2**(stages-1), ..., 2, 1), then 5x5 sigmoid convs to RGB and mask.

    faceswap's learn_mask adds a second Upscale stack for the mask; here the mask is one 5x5 conv off
    the RGB head's last feature map (a 1-channel head costing 25*d_dims+1 params).
    """

    d_dims: int
    stages: int

    @nn.compact
    def __call__(self, code: Array) -> Output:
        """Decodes a code map [B, s, s, C] to (rgb, mask) in [0, 1] at s * 2**stages."""
        kw = self._kw()
        h = code
        for i in reversed(range(self.stages)):
            h = _Upscale(self.d_dims * 2**i, **kw)(h)
        rgb = layers.Conv(3, (5, 5), **kw)(h)
        mask = layers.Conv(1, (5, 5), **kw)(h)
        return nn.sigmoid(rgb), nn.sigmoid(mask)


class _FaceswapBase(nn.Module):
    """Shared config and validation of the faceswap-style models (defaults: faceswap's, 64 px).

    Fields: the encoder convs are e_dims * (1, 2, 4, 8) wide; `encoder_dim` is the Dense bottleneck
    (faceswap's encoder_dim; 512 is its lowmem setting); the second Dense emits a (res/16)^2 x
    inter_dims map; the decoder's Upscales are d_dims * (8, 4, 2, 1) wide.
    """

    resolution: int = 64
    e_dims: int = 128
    encoder_dim: int = 1024
    inter_dims: int = 1024
    d_dims: int = 64

    def _validate(self) -> None:
        """Raise a ValueError naming the bad field, before any shape error can hide it."""
        _check_resolution(self.resolution, 16)
        _check_positive(self, ("e_dims", "encoder_dim", "inter_dims", "d_dims"))


class Original(_SideDecoders, _FaceswapBase):
    """faceswap's "Original" plugin (deepfakes/faceswap `plugins/train/model/original.py`): one encoder, two decoders.

    encoder: 4 Downscales (5x5 stride 2, LeakyReLU 0.1; 128, 256, 512, 1024 by default), flatten.
    inter: Dense(encoder_dim), Dense to a (res/16)^2 x inter_dims map, one Upscale to 8*d_dims (512).
    decoder_a / decoder_b: Upscales to 4d, 2d, d (256, 128, 64), a 5x5 conv to 3 channels and a sigmoid.
    A is src, B is dst: `swap(x, "b2a")` renders B faces through decoder_a.

    Differences from faceswap: the Dense layers and the first Upscale form the `inter` submodule (in
    faceswap they end the encoder; both are shared by the two sides, so only the parameter path
    differs); resolution may be any multiple of 16 in 64..512 (faceswap fixes 64), the dense map
    growing to (res/16)^2; a mask head is always present and is a single 5x5 conv to 1 channel off the
    decoder's last feature map (faceswap's optional learn_mask branch is a second Upscale stack);
    no lowmem switch (set e_dims/encoder_dim instead); initialisers are flax's defaults (faceswap's
    default is Keras' glorot uniform, with optional ICNR / conv-aware init).
    """

    decoder_names = ("decoder_a", "decoder_b")

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter, decoder_a and decoder_b."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, **kw)
        self.inter = _Inter(self.encoder_dim, self.inter_dims, self.resolution // 16, True,
                            up_ch=8 * self.d_dims, **kw)
        self.decoder_a = _FSDecoder(self.d_dims, 3, **kw)
        self.decoder_b = _FSDecoder(self.d_dims, 3, **kw)


class IAE(_SideInters, _FaceswapBase):
    """faceswap's "IAE" plugin (deepfakes/faceswap `plugins/train/model/iae.py`), the ancestor of DFL's LIAE.

    encoder: as `Original`'s (4 Downscales, flatten). inter_a, inter_b, inter_both: each
    Dense(encoder_dim), Dense to a (res/16)^2 x inter_dims map (512 by default), no upscale.
    decoder (shared): Upscales to 8d, 4d, 2d, d (512, 256, 128, 64), a 5x5 conv to 3 channels and a
    sigmoid, fed `concat(inter_side(z), inter_both(z))` (2 * inter_dims channels). A (src) is
    reconstructed from inter_a, B (dst) from inter_b; `swap(x, "a2b")` decodes
    `concat(inter_b(z), inter_both(z))` of A faces and `swap(x, "b2a")` `concat(inter_a(z), inter_both(z))`
    of B faces.

    Differences from faceswap: resolution may be any multiple of 16 in 64..512 (faceswap fixes 64);
    the mask head is always present and is a single 5x5 conv off the decoder's last feature map
    (faceswap's optional learn_mask branch is a second Upscale stack); initialisers are flax's defaults.
    """

    inter_dims: int = 512
    inter_names = {"src": ("inter_a", "inter_both"), "dst": ("inter_b", "inter_both")}

    def setup(self) -> None:
        """Validates the config, then builds encoder, inter_a, inter_b, inter_both and decoder."""
        self._validate()
        kw = self._kw()
        self.encoder = _Encoder(self.e_dims, **kw)
        inter = dict(ae_dims=self.encoder_dim, out_ch=self.inter_dims, lowest=self.resolution // 16,
                     upscale=False, **kw)
        self.inter_a = _Inter(**inter)
        self.inter_b = _Inter(**inter)
        self.inter_both = _Inter(**inter)
        self.decoder = _FSDecoder(self.d_dims, 4, **kw)


register("swap_df")(DF)
register("swap_liae")(LIAE)
register("swap_original")(Original)
register("swap_iae")(IAE)
