"""Shared NHWC linen conv and dense blocks, interchangeable with flax's, whose backward passes are fast on XLA:CPU.

XLA:CPU runs a few convolution forms at 1-7 GFLOP/s, 20-80x behind an ordinary conv on the same
cores: a transposed conv's kernel gradient (jax-ml/jax#23783) and some lhs-dilated convs, such as
the input gradient of a 5x5 stride-2 conv on an 8x8 map. The custom VJPs here never emit those:
an lhs-dilated conv (a transposed conv's forward, a strided conv's input gradient) runs as
stride*stride stride-1 "phase" convs with sub-sampled kernels, interleaved by a reshape (no
zero-insertion, so no wasted FLOPs); a transposed conv's input gradient is its adjoint strided
conv and its kernel gradient that conv's filter gradient. A stride-1 conv on a map smaller than its kernel
(the DF inter's 3x3 conv on 2x2 ran at 2-6 GFLOP/s) is one GEMM over its few windows. A dense
layer's input gradient g @ kernel.T, which XLA:CPU runs 2-13x slower than an ordinary product,
is (kernel @ g.T).T where g is small. Reverse mode composes: jax.grad, grad-of-grad (the backward
passes are ordinary JAX ops, so a gradient penalty differentiates) and vmap/jit/pmap of them work;
forward mode (jax.jvp) does not, as for any custom_vjp.

These forms are chosen per backend when a function is traced (`fast_forms_enabled`): on CPU the
fast forms above, on GPU/TPU plain `lax.conv_general_dilated` / `jnp.matmul` and JAX's autodiff
(the vendor convolutions), since the fast forms were measured on XLA:CPU only; `benchmarks/gpu.py`
times both. `use_forms("plain" | "fast")` or the ZOO_LAYER_FORMS environment variable forces one,
so tests and benchmarks compare the two on any backend. A function already jitted keeps the forms it
was traced with.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange
from flax.linen.dtypes import promote_dtype
from jax import lax

Array = jax.Array
Dtype = Any
Initializer = Any
Pads = tuple[tuple[int, int], tuple[int, int]]
PaddingLike = str | int | Sequence[int | tuple[int, int]]

_DN = ("NHWC", "HWIO", "NHWC")
DATA_AXIS = "data"
TORCH_BN_MOMENTUM = 0.9  # PyTorch's 0.1 update rate of BatchNorm's running statistics, in flax's convention
TORCH_NORM_EPS = 1e-5  # PyTorch's epsilon of BatchNorm2d, InstanceNorm2d and LayerNorm
_FILTER_GRAD_DN = ("CHWN", "IHWO", "HWNC")

__all__ = ["Conv", "ConvTranspose", "Dense", "FORMS_ENV", "batch_norm", "conv_transpose", "dense_matmul",
           "fast_forms_enabled", "pixel_shuffle", "strided_conv", "use_forms"]

FORMS_ENV = "ZOO_LAYER_FORMS"
FORMS = ("auto", "fast", "plain")
FAST_FORM_BACKENDS = ("cpu",)  # where the fast forms were measured faster; elsewhere "auto" is plain
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("zoo_layer_forms", default=None)


def _check_forms(choice: str, source: str) -> str:
    """`choice` if it names a form setting, else a ValueError naming the valid ones."""
    if choice not in FORMS:
        raise ValueError(f"{source} is {choice!r}; use one of {', '.join(FORMS)}")
    return choice


def forms_setting() -> str:
    """The forms asked for: the innermost `use_forms`, else $ZOO_LAYER_FORMS, else "auto"."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    return _check_forms(os.environ.get(FORMS_ENV, "") or "auto", f"${FORMS_ENV}")


def fast_forms_enabled() -> bool:
    """Whether layers traced now use the XLA:CPU fast forms: as forced, else only on a backend they were measured on."""
    choice = forms_setting()
    if choice == "auto":
        return jax.default_backend() in FAST_FORM_BACKENDS
    return choice == "fast"


@contextlib.contextmanager
def use_forms(choice: str) -> Iterator[None]:
    """Layers traced inside use `choice` ("fast", "plain" or "auto"), so both forms can be compared on one backend."""
    token = _FORCED.set(_check_forms(choice, "use_forms' choice"))
    try:
        yield
    finally:
        _FORCED.reset(token)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    """(v, v) for an int, else the two values as a tuple: one spelling for 2-D sizes and strides."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _explicit_pads(padding: PaddingLike) -> Pads | None:
    """Int / per-dim int / (lo, hi) pairs as a Pads tuple, None for a string: canonical static args."""
    if isinstance(padding, str):
        return None
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    pads = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)
    if len(pads) != 2:
        raise ValueError(f"padding {padding!r} must give 2 spatial dimensions")
    return pads  # type: ignore[return-value]


def _conv_pads(padding: PaddingLike, in_hw: Sequence[int], k_hw: Sequence[int],
               strides: Sequence[int]) -> Pads:
    """Explicit pads of `lax.conv_general_dilated` for a flax.linen.Conv padding, so the VJP can use them."""
    pads = _explicit_pads(padding)
    if pads is not None:
        return pads
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding {padding!r} is not supported; use 'SAME', 'VALID' or (lo, hi) pairs")
    pads = lax.padtype_to_pads(in_hw, k_hw, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]


def _conv_transpose_pads(padding: PaddingLike, k_hw: Sequence[int], strides: Sequence[int]) -> Pads:
    """Pads of the lhs-dilated conv that `lax.conv_transpose` runs for this padding, so outputs match flax."""
    pads = _explicit_pads(padding)
    if pads is not None:
        return pads
    out = []
    for k, s in zip(k_hw, strides):
        if padding == "SAME":
            total = k + s - 2
            lo = k - 1 if s > k - 1 else -(-total // 2)
        elif padding == "VALID":
            total, lo = k + s - 2 + max(k - s, 0), k - 1
        else:
            raise ValueError(f"padding {padding!r} is not supported; use 'SAME', 'VALID' or (lo, hi) pairs")
        out.append((lo, total - lo))
    return tuple(out)  # type: ignore[return-value]


def _conv(lhs: Array, rhs: Array, strides: Sequence[int], pads: Sequence[tuple[int, int]],
          rhs_dilation: Sequence[int] = (1, 1), dn: tuple[str, str, str] = _DN) -> Array:
    """conv_general_dilated with negative pads done as slices: XLA:CPU miscomputes mixed-sign padding."""
    (t, b), (l, r) = ((max(-lo, 0), max(-hi, 0)) for lo, hi in pads)
    lhs = lhs[:, t:lhs.shape[1] - b, l:lhs.shape[2] - r]
    return lax.conv_general_dilated(lhs, rhs, tuple(strides), [(max(lo, 0), max(hi, 0)) for lo, hi in pads],
                                    rhs_dilation=tuple(rhs_dilation), dimension_numbers=dn)


def _patch_conv(x: Array, kernel: Array, pads: Pads) -> Array:
    """Stride-1 conv as one GEMM over the kh*kw shifted windows of the padded input (im2col).

    For a map smaller than its kernel, XLA:CPU's convolution runs at 2-6 GFLOP/s (the DF inter's
    3x3 conv on a 2x2 map: 38 ms forward and backward, 2.3 ms as here); the windows of such a map
    are few, so gathering them costs nothing and autodiff of slices and a dot stays fast.
    """
    kh, kw = kernel.shape[:2]
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    windows = jnp.concatenate([x[:, a:a + h, b:b + w] for a in range(kh) for b in range(kw)], axis=-1)
    return jnp.einsum("nhwp,po->nhwo", windows, rearrange(kernel, "kh kw i o -> (kh kw i) o"))


def _stride1_conv(x: Array, kernel: Array, pads: Pads) -> Array:
    """A stride-1 conv, as the windowed GEMM where the map is smaller than the kernel."""
    if min(x.shape[1:3]) < max(kernel.shape[:2]):
        return _patch_conv(x, kernel, pads)
    return _conv(x, kernel, (1, 1), pads)


def _flip_swap(kernel: Array) -> Array:
    """HWIO kernel spatially flipped with in/out swapped: the kernel of the adjoint conv."""
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _dilated_conv(x: Array, kernel: Array, strides: tuple[int, int], pads: Pads) -> Array:
    """`conv_general_dilated(x, kernel, 1, pads, lhs_dilation=strides)` as stride-1 phase convs, for speed."""
    kh, kw = kernel.shape[:2]
    size = [(i - 1) * s + lo + hi - k + 2
            for i, s, (lo, hi), k in zip(x.shape[1:3], strides, pads, (kh, kw))]
    q = [-(-n // s) for n, s in zip(size, strides)]

    def phase(r: int, s: int, lo: int, k: int, n_in: int, n_out: int) -> tuple[int, int, tuple[int, int]]:
        """First kernel tap, tap count and input pads of the outputs o == r (mod s) along one dim."""
        first = (lo - r) % s
        taps = max(-(-(k - first) // s), 0)
        shift = (r + first - lo) // s
        return first, taps, (-shift, n_out - 1 + taps - n_in + shift)

    rows = []
    for rh in range(strides[0]):
        fh, th, ph = phase(rh, strides[0], pads[0][0], kh, x.shape[1], q[0])
        row = []
        for rw in range(strides[1]):
            fw, tw, pw = phase(rw, strides[1], pads[1][0], kw, x.shape[2], q[1])
            if th and tw:
                row.append(_stride1_conv(x, kernel[fh::strides[0], fw::strides[1]], (ph, pw)))
            else:
                row.append(jnp.zeros((x.shape[0], q[0], q[1], kernel.shape[3]), jnp.result_type(x, kernel)))
        rows.append(jnp.stack(row, 3))
    y = rearrange(jnp.stack(rows, 2), "b h r w s c -> b (h r) (w s) c")
    return y[:, :size[0], :size[1]]


def _filter_grad(x: Array, g: Array, strides: tuple[int, int], pads: Pads, k_hw: tuple[int, int]) -> Array:
    """HWIO kernel gradient of `_conv(x, ., strides, pads)` at g in XLA's own form, fast for strided convs."""
    fg_pads = [(lo, k + (o - 1) * s - i - lo)
               for (lo, _), k, o, s, i in zip(pads, k_hw, g.shape[1:3], strides, x.shape[1:3])]
    return _conv(x, g, (1, 1), fg_pads, rhs_dilation=strides, dn=_FILTER_GRAD_DN)


def _conv_input_grad(g: Array, kernel: Array, strides: tuple[int, int], pads: Pads,
                     in_hw: tuple[int, int]) -> Array:
    """Input gradient of `conv(x, kernel, strides, pads)` at cotangent g, via phase convs, for speed."""
    adj_pads = tuple((k - 1 - lo, i - 1 - (o - 1) * s + lo)
                     for (lo, _), k, o, s, i in zip(pads, kernel.shape[:2], g.shape[1:3], strides, in_hw))
    return _dilated_conv(g, _flip_swap(kernel), strides, adj_pads)  # type: ignore[arg-type]


_FEW_INPUT_CHANNELS = 4  # at or below, XLA's input gradient beats the phase convs (measured 1-32 channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided_conv(x: Array, kernel: Array, strides: tuple[int, int], pads: Pads) -> Array:
    """Strided conv whose VJP avoids XLA:CPU's slow lhs-dilated input gradient."""
    return _conv(x, kernel, strides, pads)


def _strided_conv_fwd(x: Array, kernel: Array, strides: tuple[int, int],
                      pads: Pads) -> tuple[Array, tuple[Array, Array]]:
    """Forward pass keeping the inputs for the backward convs."""
    return _conv(x, kernel, strides, pads), (x, kernel)


def _strided_conv_bwd(strides: tuple[int, int], pads: Pads, res: tuple[Array, Array],
                      g: Array) -> tuple[Array, Array]:
    """Input gradient as phase convs, kernel gradient as XLA's ordinary backprop-filter conv.

    Where the input has at most `_FEW_INPUT_CHANNELS` channels (an image into a discriminator),
    the phase convs would each emit that few channels, XLA:CPU's slow case, so XLA's own
    lhs-dilated input gradient is used: 2-2.6x faster there (DCGAN D's first layer 40 -> 15 ms).
    """
    x, kernel = res
    if kernel.shape[2] <= _FEW_INPUT_CHANNELS:
        dx = jax.vjp(lambda x: _conv(x, kernel, strides, pads), x)[1](g)[0]
    else:
        dx = _conv_input_grad(g, kernel, strides, pads, x.shape[1:3])
    dk = _filter_grad(x, g, strides, pads, kernel.shape[:2])
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose(x: Array, kernel: Array, strides: tuple[int, int], pads: Pads) -> Array:
    """Transposed conv whose forward and VJP use only ordinary convs."""
    return _dilated_conv(x, kernel, strides, pads)


def _conv_transpose_fwd(x: Array, kernel: Array, strides: tuple[int, int],
                        pads: Pads) -> tuple[Array, tuple[Array, Array]]:
    """Forward pass keeping the inputs for the backward convs."""
    return _dilated_conv(x, kernel, strides, pads), (x, kernel)


def _conv_transpose_bwd(strides: tuple[int, int], pads: Pads, res: tuple[Array, Array],
                        g: Array) -> tuple[Array, Array]:
    """Input gradient as the adjoint strided conv of g, kernel gradient as that conv's filter gradient.

    The filter gradient of conv(g, flip_swap(kernel)), flipped back, is the kernel gradient; XLA
    runs it at 110-280 GFLOP/s on DCGAN's layers, 1.6-3.4x the one-GEMM-per-tap form it replaced.
    """
    x, kernel = res
    adj_pads = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel.shape[:2]))
    dx = _conv(g, _flip_swap(kernel), strides, adj_pads)
    dk = _flip_swap(_filter_grad(g, x, strides, adj_pads, kernel.shape[:2]))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def strided_conv(x: Array, kernel: Array, strides: int | Sequence[int], padding: PaddingLike) -> Array:
    """NHWC x HWIO conv as `flax.linen.Conv` computes it, with fast gradients when strided or on a tiny map."""
    strides = _pair(strides)
    pads = _conv_pads(padding, x.shape[1:3], kernel.shape[:2], strides)
    if not fast_forms_enabled():
        return _conv(x, kernel, strides, pads)
    if strides == (1, 1):
        return _stride1_conv(x, kernel, pads)
    return _strided_conv(x, kernel, strides, pads)


def conv_transpose(x: Array, kernel: Array, strides: int | Sequence[int], padding: PaddingLike) -> Array:
    """NHWC x HWIO transposed conv as `lax.conv_transpose` (so flax) computes it, with fast gradients."""
    strides = _pair(strides)
    pads = _conv_transpose_pads(padding, kernel.shape[:2], strides)
    if not fast_forms_enabled():
        return lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=_DN)
    return _conv_transpose(x, kernel, strides, pads)


_SMALL_COTANGENT = 1 << 17  # elements; above this, transposing the cotangent costs more than the NT GEMM


def _dense_input_grad(g: Array, kernel: Array) -> Array:
    """g @ kernel.T for g (m, out) and kernel (in, out), as a GEMM that XLA:CPU runs fast.

    g @ kernel.T contracts both operands' minor dimension, a form XLA:CPU runs at 13-40 GFLOP/s
    (the conv VAE's 16384 -> 256 layer: 28 ms). Transposing the small cotangent instead makes it
    an ordinary product, kernel @ g.T (5.6 ms with the transpose back); the barriers keep XLA from
    folding the transposes back into the dot. A large cotangent (a layer widening 256 -> 16384)
    costs more to transpose than it saves, so it keeps the direct form.
    """
    if g.size > _SMALL_COTANGENT:
        return lax.dot_general(g, kernel, (((1,), (1,)), ((), ())))
    return lax.optimization_barrier(kernel @ lax.optimization_barrier(g.T)).T


def dense_matmul(x: Array, kernel: Array) -> Array:
    """x @ kernel over x's last axis (x (..., in), kernel (in, out)), with a fast input gradient on XLA:CPU."""
    return _fast_dense_matmul(x, kernel) if fast_forms_enabled() else jnp.matmul(x, kernel)


@jax.custom_vjp
def _fast_dense_matmul(x: Array, kernel: Array) -> Array:
    """`jnp.matmul` whose input gradient is `_dense_input_grad`'s form."""
    return jnp.matmul(x, kernel)


def _dense_matmul_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    """Forward pass keeping the inputs for the backward products."""
    return jnp.matmul(x, kernel), (x, kernel)


def _dense_matmul_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    """Input gradient by `_dense_input_grad`, kernel gradient as x.T @ g (a form XLA:CPU runs well)."""
    x, kernel = res
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dx = _dense_input_grad(g2, kernel).reshape(x.shape)
    dk = lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_fast_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def pixel_shuffle(x: Array, r: int) -> Array:
    """Depth-to-space, (b, h, w, c*r*r) -> (b, h*r, w*r, c): learned upsampling without transposed convs."""
    return rearrange(x, "b h w (c r s) -> b (h r) (w s) c", r=r, s=r)


class _ConvBase(nn.Module):
    """Shared fields and param/flatten/bias logic of the two conv modules, matching flax's."""

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = (1, 1)
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    def _apply(self, op: Any, inputs: Array) -> Array:
        """Creates flax-named params, flattens leading batch dims like flax, runs `op` and adds the bias."""
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape((-1,) + inputs.shape[-3:])
        kernel_shape = _pair(self.kernel_size) + (x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = op(x, kernel, self.strides, self.padding)
        if bias is not None:
            y = y + bias
        return y.reshape(batch_shape + y.shape[1:])


class Conv(_ConvBase):
    """`flax.linen.Conv` (same fields, params and output) with a fast strided input gradient on XLA:CPU."""

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """Applies the conv to (..., h, w, c) inputs."""
        return self._apply(strided_conv, inputs)


class ConvTranspose(_ConvBase):
    """`flax.linen.ConvTranspose` (same fields, params and output) with fast gradients on XLA:CPU."""

    strides: int | Sequence[int] = (2, 2)

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """Applies the transposed conv to (..., h, w, c) inputs."""
        return self._apply(conv_transpose, inputs)


class Dense(nn.Module):
    """`flax.linen.Dense` (same fields, params and output) with a fast input gradient on XLA:CPU."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """Applies the affine map to the last axis of `inputs`."""
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = dense_matmul(x, kernel)
        return y + bias if bias is not None else y


def bound_data_axis() -> str | None:
    """`DATA_AXIS` inside a pmap that binds it, else None.

    Batch norm passes it as `axis_name`, so under pmap it normalises over the global batch exactly
    as it does under sharded jit, and the two strategies train the same model.
    """
    try:
        lax.axis_index(DATA_AXIS)
    except NameError:
        return None
    return DATA_AXIS


def batch_norm(train: bool, name: str, *, dtype: Dtype, param_dtype: Dtype, affine: bool = True) -> nn.BatchNorm:
    """BatchNorm as PyTorch's (momentum, epsilon), over the global batch under pmap (`bound_data_axis`).

    The zoo's networks follow published PyTorch (and chainer) models, so their normalisation does too;
    `affine=False` drops the scale and bias (a conditional BN supplies its own).
    """
    return nn.BatchNorm(use_running_average=not train, momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_NORM_EPS,
                        use_scale=affine, use_bias=affine, axis_name=bound_data_axis() if train else None,
                        dtype=dtype, param_dtype=param_dtype, name=name)
