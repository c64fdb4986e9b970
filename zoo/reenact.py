"""Facial reenactment by keypoint motion: FOMM (Siarohin et al., NeurIPS 2019) and TPSMM (Zhao & Zhang, CVPR 2022).

Registered models (`Reenactor`, one module holding every network of the method):

- `fomm`: the First Order Motion Model. An hourglass keypoint detector gives K keypoints and
  local affine Jacobians; a dense-motion hourglass mixes K+1 first-order motions (slot 0 the
  identity) into a flow and predicts an occlusion map; a generator encodes the source, warps
  its features by the flow, masks them by occlusion and decodes.
- `tpsmm`: the Thin-Plate Spline Motion Model (`motion="tps"`): a ResNet keypoint detector gives
  K thin-plate-spline transforms of 5 points each; an optional ResNet background predictor gives
  an affine for slot 0; the dense-motion hourglass also predicts occlusion masks at every
  generator level; the inpainting generator warps and masks every encoder level.

Interface (images NHWC in [0, 1]; coordinates (x, y) in [-1, 1], `zoo.warp`'s conventions):

- `keypoints(x, train=False) -> {"value": [B, N, 2], "jacobian": [B, N, 2, 2] (fomm with
  estimate_jacobian), "heatmap": [B, h, w, N] (fomm)}`; N = num_kp (fomm) or num_kp * 5 (tps).
- `animate(source, kp_source, kp_driving, train=False, bg_param=None, dropout_p=0.0) -> dict`:
  "prediction" [B, H, W, C]; "deformation" [B, h, w, 2], the flow at the dense-motion size
  (driving coordinates -> source coordinates to sample); "occlusion", a list of [B, h_i, w_i, 1]
  maps coarse to fine (one for fomm, empty without occlusion); "masks" [B, h, w, K+1], the
  motion weights; "sparse_deformed" [B, K+1, h, w, C], the downsampled source moved by each
  motion; "deformed" [B, H, W, C], the source moved by the flow; tps adds "warped_encoder_maps"
  (what its warp loss compares with `encode_driving`).
- `__call__(source, driving, train=False, use_background=True, dropout_p=0.0)`: the training
  forward pass, `animate` on both frames' keypoints plus "kp_source", "kp_driving" and
  "bg_param" [B, 3, 3]. The equivariance loss calls `keypoints` on a `zoo.warp.random_tps_frame`.
- `background(source, driving)`, `encode_driving(driving, occlusion)` (tps); `example_inputs()`.
- Normalisation: `norm="batch"` (FOMM's SyncBatchNorm: the "batch_stats" collection; `train=True`
  normalises over the global batch under pmap too, `zoo.layers.bound_data_axis`, and needs
  `mutable=["batch_stats"]`) or `"instance"` (TPSMM's affine InstanceNorm, no state). TPSMM's
  ResNets keep torchvision's BatchNorm, so `tpsmm` has "batch_stats" too. The keypoint detector
  and the background predictor see single frames with `train=True` several times per step
  (source, driving, transformed driving): each call updates the running statistics, as in FOMM.
  Why each: the published models differ here and their numbers were measured so; both are
  replica-independent (SyncBatchNorm's global statistics are what `bound_data_axis` gives pmap, and
  sharded jit has them already), so the pmap and jit strategies train the same model either way.
  Instance norm needs no running statistics, which also makes evaluation equal training-mode output.

Fields default to the published 256 px networks (vox-256.yaml of each repository); `CPU_PRESETS`
holds the 64 px CPU configurations (same code, narrower and shallower). Parameter counts at the
published settings, by `jax.eval_shape` (tests/test_reenact_models.py): fomm 59,790,759 (keypoint
detector 14,215,368, dense motion 37,730,268, generator 7,845,123), the reference's 59.8M (14.2M,
37.7M, 7.8M, counted from FOMM's code and vox-256.yaml); tpsmm 85,095,490 (keypoint detector
11,227,812, background 11,188,998, dense motion 37,941,397, inpainting 24,737,283), the reference's
85.1M (11.2M, 11.2M, 37.9M, 24.7M). Counts include the norm layers' scale and bias, not BatchNorm's
running statistics.

Written from the papers and the behaviour (numbers, layer order) of the authors' repositories
(AliaksandrSiarohin/first-order-model, yoyo-nb/Thin-Plate-Spline-Motion-Model); no code copied.
Differences: NHWC; flax's default initialisers except the Jacobian and background heads
(identity, as published); grid sampling with align_corners=True everywhere (FOMM was written for
PyTorch 1.0, whose grid_sample behaved so); TPSMM's multi-resolution occlusion generalised to
any number of generator levels (`gen_num_down_blocks + 1` masks, as many from the hourglass's
finest levels as the dense-motion scale allows, the rest from up blocks of half the channels,
rounded down); `gen_num_bottleneck_blocks` means FOMM's bottleneck ResBlocks and, for tps, the
ResBlocks before each of the inpainting decoder's up blocks (TPSMM: 2); TPSMM's keypoint and
background ResNets take `kp_widths`/`kp_stages` (ResNet-18 by default) and an anti-aliased input
when `kp_scale_factor` < 1.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange, reduce, repeat

from zoo import layers, resnet, warp
from zoo.errors import ConfigError, DataError
from zoo.registry import register

Array = jax.Array
Dtype = Any

__all__ = ["BATCH_STATS", "CPU_PRESETS", "MOTIONS", "NORMS", "BackgroundPredictor", "DenseMotion", "DownBlock",
           "Generator", "Hourglass", "InpaintingGenerator", "KeypointDetector", "Reenactor", "ResBlock", "ResNetEncoder",
           "SameBlock", "TPSDenseMotion", "TPSKeypointDetector", "TPSMM", "UpBlock", "deform", "sparse_motions",
           "tps_motions"]

BATCH_STATS = "batch_stats"
MOTIONS = ("fomm", "tps")
NORMS = ("batch", "instance")
PADDING_MODES = ("zeros", "circular")
_TPS_POINTS = 5


def _norm(kind: str, train: bool, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.Module:
    """BatchNorm (global-batch statistics under pmap) or affine InstanceNorm, PyTorch's epsilon and momentum."""
    if kind == "batch":
        return layers.batch_norm(train, name, dtype=dtype, param_dtype=param_dtype)
    if kind == "instance":
        return nn.InstanceNorm(epsilon=layers.TORCH_NORM_EPS, dtype=dtype, param_dtype=param_dtype, name=name)
    raise ConfigError(f"norm {kind!r} is not one of {', '.join(NORMS)}; set model.norm")


def _conv(x: Array, features: int, kernel: int, padding: int, padding_mode: str, name: str, dtype: Dtype,
          param_dtype: Dtype, **kw: Any) -> Array:
    """A stride-1 square conv (`zoo.layers.Conv`) with `padding` zeros or, with padding_mode "circular", wrapped pixels."""
    if padding_mode == "circular" and padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="wrap")
        padding = 0
    elif padding_mode not in PADDING_MODES:
        raise ConfigError(f"padding_mode {padding_mode!r} is not one of {', '.join(PADDING_MODES)}")
    return layers.Conv(features, (kernel, kernel), padding=padding, dtype=dtype, param_dtype=param_dtype, name=name,
                       **kw)(x)


class _Block(nn.Module):
    """Fields shared by the conv blocks: output width, norm kind, padding mode, dtypes."""

    features: int
    norm: str = "batch"
    padding_mode: str = "zeros"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def conv(self, x: Array, kernel: int, name: str, features: int | None = None) -> Array:
        return _conv(x, features or self.features, kernel, kernel // 2, self.padding_mode, name, self.dtype,
                     self.param_dtype)

    def norm_act(self, x: Array, train: bool, name: str) -> Array:
        return nn.relu(_norm(self.norm, train, name, self.dtype, self.param_dtype)(x))


class SameBlock(_Block):
    """conv (kernel k, same size) -> norm -> ReLU."""

    kernel: int = 3

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        return self.norm_act(self.conv(x, self.kernel, "conv"), train, "norm")


class DownBlock(_Block):
    """3x3 conv -> norm -> ReLU -> 2x2 average pool: half the size."""

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = self.norm_act(self.conv(x, 3, "conv"), train, "norm")
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class UpBlock(_Block):
    """Nearest 2x upsampling -> 3x3 conv -> norm -> ReLU: twice the size."""

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = repeat(x, "b h w c -> b (h 2) (w 2) c")
        return self.norm_act(self.conv(x, 3, "conv"), train, "norm")


class ResBlock(_Block):
    """norm -> ReLU -> 3x3 conv -> norm -> ReLU -> 3x3 conv, plus the input (pre-activation, same width)."""

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        h = self.conv(self.norm_act(x, train, "norm1"), 3, "conv1", x.shape[-1])
        h = self.conv(self.norm_act(h, train, "norm2"), 3, "conv2", x.shape[-1])
        return x + h


class Hourglass(nn.Module):
    """U-Net of `num_blocks` DownBlocks and UpBlocks with skip concatenations (FOMM's and TPSMM's hourglass).

    Encoder widths min(max_features, block_expansion 2^(i+1)) for i = 0..num_blocks-1; up block i
    (from the deepest) emits min(max_features, block_expansion 2^i) and is concatenated with the
    encoder map of its size (the input itself at the top). `out_channels` are the widths of the
    concatenated maps, coarse to fine; the finest is block_expansion + in_features. Input sides
    must be multiples of 2^num_blocks.
    """

    in_features: int
    block_expansion: int
    max_features: int
    num_blocks: int
    norm: str = "batch"
    padding_mode: str = "zeros"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _width(self, i: int) -> int:
        return min(self.max_features, self.block_expansion * 2**i)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the decoder's maps, coarse to fine (what `__call__(..., all_levels=True)` returns)."""
        return tuple(2 * self._width(i) for i in range(self.num_blocks - 1, 0, -1)) + (
            self.block_expansion + self.in_features,)

    @nn.compact
    def __call__(self, x: Array, train: bool = False, all_levels: bool = False) -> Array | list[Array]:
        """[B, H, W, in_features] -> the finest map [B, H, W, out_channels[-1]], or every level's map, coarse to fine."""
        factor = 2**self.num_blocks
        if x.shape[-1] != self.in_features or x.shape[1] % factor or x.shape[2] % factor:
            raise DataError(f"hourglass built for [B, H, W, {self.in_features}] with H and W multiples of {factor} "
                            f"({self.num_blocks} blocks), got {x.shape}; change the image size or num_blocks")
        kw = dict(norm=self.norm, padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
        skips = [x]
        for i in range(self.num_blocks):
            skips.append(DownBlock(self._width(i + 1), name=f"down{i}", **kw)(skips[-1], train))
        out = skips.pop()
        levels = []
        for i in range(self.num_blocks - 1, -1, -1):
            out = UpBlock(self._width(i), name=f"up{i}", **kw)(out, train)
            out = jnp.concatenate([out, skips.pop()], axis=-1)
            levels.append(out)
        return levels if all_levels else out


def _heatmap_softmax(logits: Array, temperature: float) -> Array:
    """Softmax over the spatial axes of [B, h, w, K] logits / temperature, in float32."""
    b, h, w, k = logits.shape
    flat = rearrange(logits.astype(jnp.float32) / temperature, "b h w k -> b (h w) k")
    return rearrange(jax.nn.softmax(flat, axis=1), "b (h w) k -> b h w k", h=h, w=w)


class KeypointDetector(nn.Module):
    """FOMM's keypoint detector: expected coordinates of K softmax heatmaps, optional local Jacobians.

    The image is anti-aliased down by `scale_factor` (`zoo.warp.antialias_downsample`), an
    Hourglass predicts features, a 7x7 conv (`kp_padding` zeros on each side; FOMM: 0, so valid)
    gives K heatmap logits; softmax over positions at `temperature`; value = sum of heatmap x
    `make_coordinate_grid` of the heatmap's size. With `estimate_jacobian`, a second 7x7 conv gives
    4K maps initialised to the identity (kernel 0, bias [1, 0, 0, 1] per keypoint), pooled with the
    heatmap weights into [B, K, 2, 2] (rows: output x, y). `padding_mode="circular"` wraps the convs
    and the anti-aliasing around (tests of translation equivariance); FOMM pads with zeros.
    """

    num_kp: int = 10
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    temperature: float = 0.1
    estimate_jacobian: bool = True
    kp_padding: int = 0
    norm: str = "batch"
    padding_mode: str = "zeros"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> dict[str, Array]:
        """Images [B, H, W, C] -> {"value": [B, K, 2], "heatmap": [B, h, w, K], "jacobian": [B, K, 2, 2]}."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = warp.antialias_downsample(x, self.scale_factor, self.padding_mode).astype(self.dtype)
        hourglass = Hourglass(x.shape[-1], self.block_expansion, self.max_features, self.num_blocks, self.norm,
                              self.padding_mode, name="predictor", **kw)
        features = hourglass(x, train)
        logits = _conv(features, self.num_kp, 7, self.kp_padding, self.padding_mode, "kp", **kw)
        heatmap = _heatmap_softmax(logits, self.temperature)
        grid = warp.make_coordinate_grid(*heatmap.shape[1:3])
        out = {"value": jnp.einsum("bhwk,hwc->bkc", heatmap, grid), "heatmap": heatmap}
        if self.estimate_jacobian:
            identity = jnp.tile(jnp.asarray([1.0, 0.0, 0.0, 1.0]), self.num_kp)
            maps = _conv(features, 4 * self.num_kp, 7, self.kp_padding, self.padding_mode, "jacobian",
                         kernel_init=nn.initializers.zeros, bias_init=lambda *_: identity.astype(self.param_dtype),
                         **kw)
            maps = rearrange(maps.astype(jnp.float32), "b h w (k f) -> b h w k f", f=4)
            jac = jnp.einsum("bhwk,bhwkf->bkf", heatmap, maps)
            out["jacobian"] = rearrange(jac, "b k (i j) -> b k i j", i=2)
        return out


def sparse_motions(shape: Sequence[int], kp_source: dict[str, Array], kp_driving: dict[str, Array]) -> Array:
    """FOMM's K+1 motions on an (h, w) grid -> [B, K+1, h, w, 2]: slot 0 the identity, slot k T_k.

    T_k(z) = kp_s + J_s J_d^-1 (z - kp_d), z in driving coordinates, T_k(z) in source coordinates;
    without Jacobians J_s J_d^-1 = I (pure translation).
    """
    grid = warp.make_coordinate_grid(int(shape[0]), int(shape[1]))
    kp_d = kp_driving["value"].astype(jnp.float32)
    kp_s = kp_source["value"].astype(jnp.float32)
    z = grid[None, None] - kp_d[:, :, None, None, :]
    if "jacobian" in kp_driving and "jacobian" in kp_source:
        jac = kp_source["jacobian"].astype(jnp.float32) @ jnp.linalg.inv(kp_driving["jacobian"].astype(jnp.float32))
        z = jnp.einsum("bkij,bkhwj->bkhwi", jac, z)
    motions = z + kp_s[:, :, None, None, :]
    identity = jnp.broadcast_to(grid, (kp_d.shape[0], 1, *grid.shape))
    return jnp.concatenate([identity, motions], axis=1)


def _warp_slots(image: Array, motions: Array) -> Array:
    """image [B, h, w, C] sampled by each of motions [B, S, h', w', 2] -> [B, S, h', w', C] (one grid_sample call)."""
    s, h = motions.shape[1], motions.shape[2]
    grid = rearrange(motions, "b s h w t -> b (s h) w t")
    out = warp.grid_sample(image, grid, align_corners=True)
    return rearrange(out, "b (s h) w c -> b s h w c", s=s, h=h)


def _blend(motions: Array, masks: Array) -> Array:
    """Flow sum_k masks_k motions_k: motions [B, S, h, w, 2], masks [B, h, w, S] -> [B, h, w, 2]."""
    return jnp.einsum("bshwt,bhws->bhwt", motions, masks.astype(jnp.float32))


class DenseMotion(nn.Module):
    """FOMM's dense motion: K+1 sparse motions mixed by softmax masks into a flow, plus a sigmoid occlusion map.

    On the source anti-aliased down by `scale_factor`: the hourglass input per slot k is the
    heatmap difference G(kp_d) - G(kp_s) (variance `kp_variance`; zeros for slot 0) followed by the
    source warped by motion k, (K+1)(C+1) channels; 7x7 convs give K+1 mask logits and one
    occlusion logit.
    """

    num_kp: int = 10
    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kp_variance: float = 0.01
    estimate_occlusion: bool = True
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, source: Array, kp_source: dict[str, Array], kp_driving: dict[str, Array],
                 train: bool = False) -> dict[str, Any]:
        """-> {"deformation" [B, h, w, 2], "masks" [B, h, w, K+1], "sparse_deformed" [B, K+1, h, w, C], "occlusion" [..]}."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        source = warp.antialias_downsample(source, self.scale_factor)
        b, h, w, c = source.shape
        heat = (warp.kp2gaussian(kp_driving["value"], (h, w), self.kp_variance)
                - warp.kp2gaussian(kp_source["value"], (h, w), self.kp_variance))
        heat = jnp.concatenate([jnp.zeros((b, h, w, 1), heat.dtype), heat], axis=-1)
        motions = sparse_motions((h, w), kp_source, kp_driving)
        deformed = _warp_slots(source, motions)
        slots = jnp.concatenate([rearrange(heat, "b h w s -> b s h w 1"), deformed.astype(jnp.float32)], axis=-1)
        x = rearrange(slots, "b s h w c -> b h w (s c)").astype(self.dtype)
        features = Hourglass(x.shape[-1], self.block_expansion, self.max_features, self.num_blocks, self.norm,
                             name="hourglass", **kw)(x, train)
        masks = jax.nn.softmax(_conv(features, self.num_kp + 1, 7, 3, "zeros", "mask", **kw).astype(jnp.float32), -1)
        out = {"deformation": _blend(motions, masks), "masks": masks, "sparse_deformed": deformed, "occlusion": []}
        if self.estimate_occlusion:
            logit = _conv(features, 1, 7, 3, "zeros", "occlusion", **kw)
            out["occlusion"] = [jax.nn.sigmoid(logit.astype(jnp.float32))]
        return out


def deform(x: Array, deformation: Array) -> Array:
    """x [B, H, W, C] sampled at the flow [B, h, w, 2], the flow first resized to H x W (bilinear, align_corners)."""
    deformation = warp.resize_bilinear(deformation, x.shape[1:3], align_corners=True)
    return warp.grid_sample(x, deformation, align_corners=True)


def _occlude(x: Array, occlusion: Array) -> Array:
    """x times the occlusion map resized (bilinear, align_corners) to x's size."""
    return x * warp.resize_bilinear(occlusion, x.shape[1:3], align_corners=True).astype(x.dtype)


class Generator(nn.Module):
    """FOMM's occlusion-aware generator: encode, warp by the flow, mask by occlusion, ResBlocks, decode.

    7x7 SameBlock to `block_expansion`, `num_down_blocks` DownBlocks (widths doubling, capped at
    `max_features`), `deform` by the flow, times the occlusion map (resized to the features),
    `num_bottleneck_blocks` ResBlocks, UpBlocks back, 7x7 conv to C channels, sigmoid.
    """

    num_channels: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _width(self, i: int) -> int:
        return min(self.max_features, self.block_expansion * 2**i)

    @nn.compact
    def __call__(self, source: Array, deformation: Array, occlusion: Sequence[Array], train: bool = False
                 ) -> dict[str, Array]:
        """-> {"prediction" [B, H, W, C], "deformed" [B, H, W, C]}."""
        kw = dict(norm=self.norm, dtype=self.dtype, param_dtype=self.param_dtype)
        out = SameBlock(self.block_expansion, kernel=7, name="first", **kw)(source.astype(self.dtype), train)
        for i in range(self.num_down_blocks):
            out = DownBlock(self._width(i + 1), name=f"down{i}", **kw)(out, train)
        out = deform(out, deformation)
        for occ in occlusion:
            out = _occlude(out, occ)
        for i in range(self.num_bottleneck_blocks):
            out = ResBlock(self._width(self.num_down_blocks), name=f"res{i}", **kw)(out, train)
        for i in range(self.num_down_blocks - 1, -1, -1):
            out = UpBlock(self._width(i), name=f"up{i}", **kw)(out, train)
        out = _conv(out, self.num_channels, 7, 3, "zeros", "final", self.dtype, self.param_dtype)
        return {"prediction": jax.nn.sigmoid(out.astype(jnp.float32)), "deformed": deform(source, deformation)}


# ---------------------------------------------------------------------------------------------------
# TPSMM


class ResNetEncoder(nn.Module):
    """`zoo.resnet.trunk` (torchvision's ResNet-18 at the defaults) and a global average pool.

    TPSMM builds its keypoint and background networks from `torchvision.models.resnet18`.
    """

    widths: Sequence[int] = (64, 128, 256, 512)
    stages: Sequence[int] = (2, 2, 2, 2)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """[B, H, W, C] -> [B, widths[-1]]."""
        h = resnet.trunk(x.astype(self.dtype), self.stages, self.widths, train, dtype=self.dtype,
                         param_dtype=self.param_dtype)
        return reduce(h, "b h w c -> b c", "mean")


class TPSKeypointDetector(nn.Module):
    """TPSMM's keypoint detector: a ResNet, a linear layer to num_tps x 5 x 2, sigmoid mapped to [-1, 1]."""

    num_tps: int = 10
    points: int = _TPS_POINTS
    widths: Sequence[int] = (64, 128, 256, 512)
    stages: Sequence[int] = (2, 2, 2, 2)
    scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> dict[str, Array]:
        """Images [B, H, W, C] -> {"value": [B, num_tps * points, 2]} (points of one transform consecutive)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = warp.antialias_downsample(x, self.scale_factor)
        h = ResNetEncoder(self.widths, self.stages, name="encoder", **kw)(x, train)
        h = layers.Dense(self.num_tps * self.points * 2, name="fc", **kw)(h)
        value = jax.nn.sigmoid(h.astype(jnp.float32)) * 2.0 - 1.0
        return {"value": rearrange(value, "b (n t) -> b n t", t=2)}


class BackgroundPredictor(nn.Module):
    """TPSMM's background motion: a ResNet on source and driving stacked, a linear layer to an affine, identity at init."""

    widths: Sequence[int] = (64, 128, 256, 512)
    stages: Sequence[int] = (2, 2, 2, 2)
    scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, source: Array, driving: Array, train: bool = False) -> Array:
        """-> [B, 3, 3] homogeneous affine mapping driving coordinates to source coordinates."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = warp.antialias_downsample(jnp.concatenate([source, driving], axis=-1), self.scale_factor)
        h = ResNetEncoder(self.widths, self.stages, name="encoder", **kw)(x, train)
        identity = jnp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        h = layers.Dense(6, kernel_init=nn.initializers.zeros,
                         bias_init=lambda *_: identity.astype(self.param_dtype), name="fc", **kw)(h)
        affine = rearrange(h.astype(jnp.float32), "b (i j) -> b i j", i=2)
        last = jnp.broadcast_to(jnp.asarray([[0.0, 0.0, 1.0]]), (affine.shape[0], 1, 3))
        return jnp.concatenate([affine, last], axis=1)


def tps_motions(shape: Sequence[int], kp_source: dict[str, Array], kp_driving: dict[str, Array], points: int,
                regularization: float, bg_param: Array | None = None) -> Array:
    """TPSMM's K+1 motions on an (h, w) grid -> [B, K+1, h, w, 2]: slot 0 the identity (or bg_param), slot k TPS k.

    TPS k is solved from the driving frame's k-th group of `points` keypoints to the source's.
    """
    h, w = int(shape[0]), int(shape[1])
    control = rearrange(kp_driving["value"], "b (k p) t -> b k p t", p=points)
    targets = rearrange(kp_source["value"], "b (k p) t -> b k p t", p=points)
    grid = warp.make_coordinate_grid(h, w)
    flat = rearrange(grid, "h w t -> (h w) t")
    moved = warp.tps_warp(flat, warp.tps_solve(control, targets, regularization))
    moved = rearrange(moved, "b k (h w) t -> b k h w t", h=h)
    background = jnp.broadcast_to(grid, (moved.shape[0], 1, h, w, 2))
    if bg_param is not None:
        background = warp.affine_warp(background, bg_param)
    return jnp.concatenate([background, moved], axis=1)


def _dropout_softmax(logits: Array, p: float, rng: Array) -> Array:
    """Softmax over slots [B, h, w, S] with each non-background slot of each sample dropped with probability p (TPSMM)."""
    keep = jax.random.bernoulli(rng, 1.0 - p, (logits.shape[0], logits.shape[-1])).at[:, 0].set(True)
    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)) * keep[:, None, None, :]
    return e / (jnp.sum(e, axis=-1, keepdims=True) + 1e-6)


class TPSDenseMotion(nn.Module):
    """TPSMM's dense motion: K+1 TPS/background motions mixed by softmax contribution maps, multi-resolution occlusion.

    Hourglass input: the heatmap differences of all num_tps x 5 keypoints with a zero map in front,
    then the downsampled source warped by each of the K+1 motions (TPSMM's 84 channels at K=10).
    `num_occlusion` masks, coarse to fine, each a factor 2 apart and the finest at the image size:
    from the hourglass's finest maps while their size allows, then from UpBlocks of half the
    channels (TPSMM: 4 masks, 2 + 2 at scale 0.25). Without `multi_mask`: one mask at the
    dense-motion size. `dropout_p` > 0, or a traced p (a schedule), drops contribution maps (needs the "dropout" rng).
    """

    num_tps: int = 10
    points: int = _TPS_POINTS
    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kp_variance: float = 0.01
    multi_mask: bool = True
    num_occlusion: int = 4
    regularization: float = 0.01
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def up_levels(self) -> int:
        """Occlusion masks made by up blocks above the dense-motion size: log2(1 / scale_factor)."""
        return round(math.log2(1 / self.scale_factor)) if self.multi_mask else 0

    @nn.compact
    def __call__(self, source: Array, kp_source: dict[str, Array], kp_driving: dict[str, Array],
                 bg_param: Array | None = None, train: bool = False, dropout_p: float = 0.0) -> dict[str, Any]:
        """-> {"deformation", "masks", "sparse_deformed", "occlusion": [coarse .. fine]} as `DenseMotion`."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        source = warp.antialias_downsample(source, self.scale_factor)
        b, h, w, c = source.shape
        heat = (warp.kp2gaussian(kp_driving["value"], (h, w), self.kp_variance)
                - warp.kp2gaussian(kp_source["value"], (h, w), self.kp_variance))
        heat = jnp.concatenate([jnp.zeros((b, h, w, 1), heat.dtype), heat], axis=-1)
        motions = tps_motions((h, w), kp_source, kp_driving, self.points, self.regularization, bg_param)
        deformed = _warp_slots(source, motions)
        x = jnp.concatenate([heat, rearrange(deformed.astype(jnp.float32), "b s h w c -> b h w (s c)")], axis=-1)
        hourglass = Hourglass(x.shape[-1], self.block_expansion, self.max_features, self.num_blocks, self.norm,
                              name="hourglass", **kw)
        levels = hourglass(x.astype(self.dtype), train, all_levels=True)
        logits = _conv(levels[-1], self.num_tps + 1, 7, 3, "zeros", "maps", **kw).astype(jnp.float32)
        dropout = not isinstance(dropout_p, (int, float)) or dropout_p > 0
        masks = _dropout_softmax(logits, dropout_p, self.make_rng("dropout")) if dropout else jax.nn.softmax(logits)
        occlusion = []
        if self.multi_mask:
            below = self.num_occlusion - self.up_levels
            for i, level in enumerate(levels[len(levels) - below:]):
                occlusion.append(_conv(level, 1, 7, 3, "zeros", f"occlusion{i}", **kw))
            out = levels[-1]
            for i in range(self.up_levels):
                out = UpBlock(hourglass.out_channels[-1] // 2 ** (i + 1), norm=self.norm, name=f"up{i}", **kw)(
                    out, train)
                occlusion.append(_conv(out, 1, 7, 3, "zeros", f"occlusion{below + i}", **kw))
        else:
            occlusion.append(_conv(levels[-1], 1, 7, 3, "zeros", "occlusion0", **kw))
        return {"deformation": _blend(motions, masks), "masks": masks, "sparse_deformed": deformed,
                "occlusion": [jax.nn.sigmoid(o.astype(jnp.float32)) for o in occlusion]}


class InpaintingGenerator(nn.Module):
    """TPSMM's inpainting network: every encoder level warped by the flow and masked by its occlusion map.

    7x7 SameBlock, `num_down_blocks` DownBlocks; from the deepest warped, masked map up:
    `res_blocks` ResBlocks, an UpBlock, concatenation with the next warped, masked encoder map;
    at the top the UpBlock's output o becomes o (1 - occ) + warped features, a 7x7 conv and
    sigmoid give p, and prediction = p (1 - occ) + deformed source occ (occ: the finest mask).
    """

    num_channels: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 3
    res_blocks: int = 2
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _width(self, i: int) -> int:
        return min(self.max_features, self.block_expansion * 2**i)

    def setup(self) -> None:
        kw = dict(norm=self.norm, dtype=self.dtype, param_dtype=self.param_dtype)
        n = self.num_down_blocks
        self.first = SameBlock(self.block_expansion, kernel=7, **kw)
        self.down = [DownBlock(self._width(i + 1), **kw) for i in range(n)]
        # Level i (from the deepest, i = 0) works on the deepest map's width, then on concatenations of two maps.
        widths = [self._width(n)] + [2 * self._width(n - i) for i in range(1, n)]
        self.res = [ResBlock(widths[i], **kw) for i in range(n) for _ in range(self.res_blocks)]
        self.up = [UpBlock(self._width(n - i - 1), **kw) for i in range(n)]
        self.final = layers.Conv(self.num_channels, (7, 7), padding=3, dtype=self.dtype, param_dtype=self.param_dtype)

    def _encode(self, x: Array, train: bool) -> list[Array]:
        maps = [self.first(x.astype(self.dtype), train)]
        for block in self.down:
            maps.append(block(maps[-1], train))
        return maps

    def _mask(self, occlusion: Sequence[Array], level: int) -> Array | None:
        """The occlusion map of level `level` (0 deepest), or the single map, or None without occlusion."""
        if not occlusion:
            return None
        return occlusion[level] if len(occlusion) > 1 else occlusion[0]

    def __call__(self, source: Array, deformation: Array, occlusion: Sequence[Array], train: bool = False
                 ) -> dict[str, Any]:
        """-> {"prediction", "deformed", "warped_encoder_maps": [deepest .. finest]}.

        As in TPSMM, the warped encoder maps carry gradients into the flow only (features and masks detached).
        """
        if occlusion and len(occlusion) not in (1, self.num_down_blocks + 1):
            raise DataError(f"the inpainting generator needs 1 or {self.num_down_blocks + 1} occlusion maps, got "
                            f"{len(occlusion)}")
        maps = self._encode(source, train)
        n = self.num_down_blocks

        def warped(level: int, x: Array, detach: bool = False) -> Array:
            """x moved by the flow and masked; `detach` stops gradients into x and the mask, not into the flow."""
            stop = jax.lax.stop_gradient if detach else (lambda a: a)
            x = deform(stop(x), deformation)
            occ = self._mask(occlusion, level)
            return x if occ is None else _occlude(x, stop(occ))

        out = warped(0, maps[-1])
        warped_maps = [warped(0, maps[-1], detach=True)]
        for i in range(n):
            for block in self.res[i * self.res_blocks:(i + 1) * self.res_blocks]:
                out = block(out, train)
            out = self.up[i](out, train)
            skip = warped(i + 1, maps[-(i + 2)])
            warped_maps.append(warped(i + 1, maps[-(i + 2)], detach=True))
            if i < n - 1:
                out = jnp.concatenate([out, skip], axis=-1)
        deformed = deform(source, deformation)
        occ = self._mask(occlusion, n)
        if occ is not None:
            occ = warp.resize_bilinear(occ, out.shape[1:3], align_corners=True).astype(out.dtype)
            out = out * (1 - occ) + skip
        else:
            out = out + skip
        prediction = jax.nn.sigmoid(self.final(out).astype(jnp.float32))
        if occ is not None:
            prediction = prediction * (1 - occ) + deformed.astype(jnp.float32) * occ
        return {"prediction": prediction, "deformed": deformed, "warped_encoder_maps": warped_maps}

    def encode_driving(self, driving: Array, occlusion: Sequence[Array], train: bool = False) -> list[Array]:
        """The driving frame's encoder maps, finest to deepest, each masked by its level's occlusion (no gradients).

        TPSMM's warp loss compares them with "warped_encoder_maps" in reverse order.
        """
        maps = self._encode(driving, train)
        n = self.num_down_blocks
        out = []
        for j, m in enumerate(maps):
            occ = self._mask(occlusion, n - j)
            out.append(jax.lax.stop_gradient(m if occ is None else _occlude(m, occ)))
        return out


# ---------------------------------------------------------------------------------------------------
# The registered models


class Reenactor(nn.Module):
    """FOMM (`motion="fomm"`, registered `fomm`) or TPSMM (`motion="tps"`, the `tpsmm` subclass): every network of one.

    Fields (the defaults are FOMM's vox-256 model; the module docstring has the interface):
    - `image_shape` (H, W, C): from the data.
    - keypoints: `num_kp` (K; keypoints for fomm, TPS transforms for tps), `kp_scale_factor`
      (anti-aliased input scale), fomm's `kp_block_expansion`, `kp_max_features`, `kp_num_blocks`,
      `kp_padding` (of the 7x7 heatmap conv), `temperature`, `estimate_jacobian`; tps's ResNet
      `kp_widths` and `kp_stages` (also the background predictor's), `background_affine`.
    - dense motion: `dm_block_expansion`, `dm_max_features`, `dm_num_blocks`, `dm_scale_factor`,
      `kp_variance`, `estimate_occlusion`; tps's `multi_mask` and `tps_regularization`.
    - generator: `gen_block_expansion`, `gen_max_features`, `gen_num_down_blocks`,
      `gen_num_bottleneck_blocks` (fomm: bottleneck ResBlocks; tps: ResBlocks per decoder level).
    - `norm`: "batch" (FOMM) or "instance" (TPSMM) in the hourglasses and generators.
    Fields of the other method are unused (fomm rejects `background_affine` and `multi_mask`,
    tps rejects `estimate_jacobian`, so no setting is silently ignored that would change a model).
    """

    image_shape: tuple[int, int, int] = (256, 256, 3)
    motion: str = "fomm"
    num_kp: int = 10
    kp_scale_factor: float = 0.25
    kp_block_expansion: int = 32
    kp_max_features: int = 1024
    kp_num_blocks: int = 5
    kp_padding: int = 0
    temperature: float = 0.1
    estimate_jacobian: bool = True
    kp_widths: tuple[int, ...] = (64, 128, 256, 512)
    kp_stages: tuple[int, ...] = (2, 2, 2, 2)
    background_affine: bool = False
    dm_block_expansion: int = 64
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_scale_factor: float = 0.25
    kp_variance: float = 0.01
    estimate_occlusion: bool = True
    multi_mask: bool = False
    tps_regularization: float = 0.01
    gen_block_expansion: int = 64
    gen_max_features: int = 512
    gen_num_down_blocks: int = 2
    gen_num_bottleneck_blocks: int = 6
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    registered_name: ClassVar[str] = "fomm"

    def _fail(self, field: str, why: str) -> None:
        raise ConfigError(f"{self.registered_name} model.{field} = {getattr(self, field)!r}: {why}")

    def _check(self) -> None:
        """A ConfigError naming the field for settings the networks cannot be built with."""
        if self.motion not in MOTIONS:
            self._fail("motion", f"use one of {', '.join(MOTIONS)}")
        if self.norm not in NORMS:
            self._fail("norm", f"use one of {', '.join(NORMS)}")
        if len(self.image_shape) != 3:
            self._fail("image_shape", "give (H, W, C)")
        h, w, _ = self.image_shape
        for field in ("kp_scale_factor", "dm_scale_factor"):
            scale = getattr(self, field)
            if scale != 1:
                warp.gaussian_taps(scale)
        if self.motion == "fomm":
            for field in ("background_affine", "multi_mask"):
                if getattr(self, field):
                    self._fail(field, "is a TPSMM option; set motion='tps' (model tpsmm) or leave it False")
            side = round(min(h, w) * self.kp_scale_factor)
            if side % 2**self.kp_num_blocks or side - 2 * (3 - self.kp_padding) < 2:
                self._fail("kp_num_blocks", f"the keypoint hourglass sees {side} px, which must be a multiple of "
                           f"2^kp_num_blocks and leave a heatmap of at least 2 px; use fewer blocks or larger images")
        else:
            if self.estimate_jacobian:
                self._fail("estimate_jacobian", "TPS keypoints have no Jacobians; set it False for motion='tps'")
            if len(self.kp_widths) != len(self.kp_stages) or not self.kp_stages:
                self._fail("kp_widths", f"give one width per entry of kp_stages {list(self.kp_stages)}")
        dm_side = round(min(h, w) * self.dm_scale_factor)
        if dm_side % 2**self.dm_num_blocks:
            self._fail("dm_num_blocks", f"the dense-motion hourglass sees {dm_side} px, which must be a multiple of "
                       "2^dm_num_blocks; use fewer blocks or larger images")
        if h % 2**self.gen_num_down_blocks or w % 2**self.gen_num_down_blocks:
            self._fail("gen_num_down_blocks", f"H and W ({h}, {w}) must be multiples of 2^gen_num_down_blocks")
        if self.motion == "tps" and self.multi_mask:
            up = math.log2(1 / self.dm_scale_factor)
            below = self.gen_num_down_blocks + 1 - round(up)
            if not 1 <= below <= self.dm_num_blocks:
                self._fail("gen_num_down_blocks", f"multi_mask needs gen_num_down_blocks + 1 masks, of which "
                           f"{below} must come from the dense-motion hourglass (1 .. dm_num_blocks = "
                           f"{self.dm_num_blocks}) at dm_scale_factor {self.dm_scale_factor}")

    def setup(self) -> None:
        self._check()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = self.image_shape[2]
        if self.motion == "fomm":
            self.kp_detector = KeypointDetector(
                self.num_kp, self.kp_block_expansion, self.kp_max_features, self.kp_num_blocks, self.kp_scale_factor,
                self.temperature, self.estimate_jacobian, self.kp_padding, self.norm, **kw)
            self.dense_motion = DenseMotion(
                self.num_kp, self.dm_block_expansion, self.dm_max_features, self.dm_num_blocks, self.dm_scale_factor,
                self.kp_variance, self.estimate_occlusion, self.norm, **kw)
            self.generator = Generator(channels, self.gen_block_expansion, self.gen_max_features,
                                       self.gen_num_down_blocks, self.gen_num_bottleneck_blocks, self.norm, **kw)
            return
        self.kp_detector = TPSKeypointDetector(self.num_kp, _TPS_POINTS, self.kp_widths, self.kp_stages,
                                               self.kp_scale_factor, **kw)
        if self.background_affine:
            self.bg_predictor = BackgroundPredictor(self.kp_widths, self.kp_stages, self.kp_scale_factor, **kw)
        self.dense_motion = TPSDenseMotion(
            self.num_kp, _TPS_POINTS, self.dm_block_expansion, self.dm_max_features, self.dm_num_blocks,
            self.dm_scale_factor, self.kp_variance, self.multi_mask, self.gen_num_down_blocks + 1,
            self.tps_regularization, self.norm, **kw)
        self.generator = InpaintingGenerator(channels, self.gen_block_expansion, self.gen_max_features,
                                             self.gen_num_down_blocks, self.gen_num_bottleneck_blocks, self.norm, **kw)

    def _check_images(self, **images: Array) -> None:
        for name, x in images.items():
            if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
                raise DataError(f"{self.registered_name} was built for images [B, {', '.join(map(str, self.image_shape))}]"
                                f" (model.image_shape), got {name} of shape {x.shape}; resize the frames or set "
                                "model.image_shape")

    def keypoints(self, x: Array, train: bool = False) -> dict[str, Array]:
        """Frames [B, H, W, C] -> {"value": [B, N, 2], ...} (see the module docstring)."""
        self._check_images(x=x)
        return self.kp_detector(x, train)

    def background(self, source: Array, driving: Array, train: bool = False) -> Array:
        """[B, 3, 3] affine of the background slot (driving -> source coordinates); identity without a predictor."""
        if self.motion == "tps" and self.background_affine:
            return self.bg_predictor(source, driving, train)
        return jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (source.shape[0], 3, 3))

    def animate(self, source: Array, kp_source: dict[str, Array], kp_driving: dict[str, Array], train: bool = False,
                bg_param: Array | None = None, dropout_p: float = 0.0) -> dict[str, Any]:
        """The source moved as kp_source -> kp_driving says: {"prediction", "deformation", "occlusion", ...}."""
        self._check_images(source=source)
        if self.motion == "fomm":
            if bg_param is not None or dropout_p:
                raise ConfigError("bg_param and dropout_p are TPSMM options; fomm takes neither")
            motion = self.dense_motion(source, kp_source, kp_driving, train)
        else:
            motion = self.dense_motion(source, kp_source, kp_driving, bg_param, train, dropout_p)
        generated = self.generator(source, motion["deformation"], motion["occlusion"], train)
        return {**motion, **generated}

    def __call__(self, source: Array, driving: Array, train: bool = False, use_background: bool = True,
                 dropout_p: float = 0.0) -> dict[str, Any]:
        """Training forward pass: keypoints of both frames, background affine (tps), `animate`.

        `use_background=False` leaves the background predictor out (TPSMM enables it after 10 epochs);
        "bg_param" is then the identity. `init` must run with it True so that its parameters exist.
        """
        self._check_images(source=source, driving=driving)
        kp_source = self.kp_detector(source, train)
        kp_driving = self.kp_detector(driving, train)
        bg_param = None
        if self.motion == "tps" and self.background_affine and use_background:
            bg_param = self.bg_predictor(source, driving, train)
        out = self.animate(source, kp_source, kp_driving, train, bg_param, dropout_p)
        if bg_param is None:
            bg_param = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (source.shape[0], 3, 3))
        return {**out, "kp_source": kp_source, "kp_driving": kp_driving, "bg_param": bg_param}

    def encode_driving(self, driving: Array, occlusion: Sequence[Array], train: bool = False) -> list[Array]:
        """TPSMM's warp-loss targets: the driving frame's encoder maps masked by `occlusion` (tps only)."""
        if self.motion != "tps":
            raise ConfigError("encode_driving is TPSMM's warp loss; fomm has no such term")
        return self.generator.encode_driving(driving, occlusion, train)

    def example_inputs(self) -> tuple[Array, Array]:
        """Batch-1 zero (source, driving) for `init`."""
        x = jnp.zeros((1, *self.image_shape), jnp.float32)
        return x, x


class TPSMM(Reenactor):
    """TPSMM's vox-256 model: `Reenactor` with motion="tps" and its published settings (see the module docstring)."""

    motion: str = "tps"
    kp_scale_factor: float = 1.0
    estimate_jacobian: bool = False
    background_affine: bool = True
    multi_mask: bool = True
    gen_num_down_blocks: int = 3
    gen_num_bottleneck_blocks: int = 2
    norm: str = "instance"

    registered_name: ClassVar[str] = "tpsmm"


register("fomm")(Reenactor)
register("tpsmm")(TPSMM)

# 64 px CPU configurations: the published code at a quarter of the widths and fewer blocks
# (widths 16-256, 3-block hourglasses on 16 px maps, the published heads and scales).
CPU_PRESETS: dict[str, dict[str, Any]] = {
    "fomm": dict(image_shape=(64, 64, 3), kp_block_expansion=16, kp_max_features=256, kp_num_blocks=3,
                 dm_block_expansion=16, dm_max_features=256, dm_num_blocks=3, gen_block_expansion=16,
                 gen_max_features=128, gen_num_bottleneck_blocks=2),
    "tpsmm": dict(image_shape=(64, 64, 3), kp_widths=(16, 32, 64, 128), kp_stages=(1, 1, 1, 1),
                  dm_block_expansion=16, dm_max_features=256, dm_num_blocks=3, gen_block_expansion=16,
                  gen_max_features=128, gen_num_bottleneck_blocks=1),
}
