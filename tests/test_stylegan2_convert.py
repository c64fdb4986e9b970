"""NVIDIA's StyleGAN2 pickles convert to the zoo's models without running their code (issue 14, item 4).

The pickles are built here with NVIDIA's structure: stand-in `torch_utils.persistence` and
`dnnlib.util` modules exist in sys.modules only while pickling, and every network is a torch module
whose `__reduce__` is the persistence decorator's (`_reconstruct_persistent_obj(meta)`, meta holding
`module_src` and the module's `__dict__`), with real torch Parameters and buffers laid out as
stylegan2-ada-pytorch's `training/networks.py` lays them out. `module_src` writes a marker file
when executed: no test may find it.

The round trip compares the converted zoo model with a NumPy reference of StyleGAN2 written below
from the paper's equations in NVIDIA's NCHW layout on the stand-in's raw tensors: equalised-lr
scaling, mapping with second-moment normalisation, modulation/demodulation as per-example weights
(NVIDIA's fused form), upsampling as a stride-2 transposed conv then the [1, 3, 3, 1] FIR with gain
4, const noise, bias + lrelu * sqrt(2), clamps, ToRGB without demodulation, the skip image
upsampled; the residual D with FIR downsampling, minibatch stddev grouped as NVIDIA groups (a
strided reshape), the (c h w)-flattened FC and the label projection. Minibatch stddev is checked
with a batch of exactly one group, where NVIDIA's strided grouping and the zoo's consecutive
grouping are the same groups.
"""
from __future__ import annotations

import contextlib
import hashlib
import pathlib
import pickle
import struct
import subprocess
import sys
import types
import zipfile

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_torch

from zoo import pretrained
from zoo.errors import WeightsError
from zoo.nvidia_pickle import NetworkRecord, UnsafePickleError, read_network_pickle
from zoo.stylegan2_convert import convert_stylegan2

torch = import_torch()

ROOT = pathlib.Path(__file__).resolve().parents[1]
SQRT2, SQRT_HALF = np.sqrt(2.0), np.sqrt(0.5)
FIR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0

UNCOND = dict(z_dim=16, w_dim=16, c_dim=0, res=32, channels=3, base=512, cmax=32, map_layers=2, lr=0.01,
              clamp=None, mbstd=(4, 1), fp16=0, d_map_layers=8, channels_last=False)
COND = dict(UNCOND, c_dim=3, clamp=1.5, mbstd=(2, 2), fp16=2, d_map_layers=2, channels_last=True)


# ----------------------------------------------------------------------------- NVIDIA's structure, built in torch


class _EasyDict(dict):
    """dnnlib.util.EasyDict as NVIDIA's train.py fills init kwargs with it."""


class _Persistent(torch.nn.Module):
    """A torch module pickled as `@persistence.persistent_class` pickles one: its state is the module's __dict__."""

    def __reduce__(self):
        state = dict(object.__reduce__(self)[2])
        meta = dict(type="class", version=6, module_src=state.pop("_src"), class_name=state.pop("_cls"), state=state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


@contextlib.contextmanager
def _standin_modules():
    """`torch_utils.persistence` and `dnnlib.util` in sys.modules for the duration of pickling only."""
    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the converter must never call NVIDIA's persistence")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _EasyDict.__module__, _EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = _EasyDict
    modules = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
               "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    with pytest.MonkeyPatch.context() as mp:
        for name, module in modules.items():
            mp.setitem(sys.modules, name, module)
        yield


class _Builder:
    """Builds NVIDIA's G and D module trees with seeded random tensors (values, not NVIDIA's init, so all matter)."""

    def __init__(self, src: str, seed: int):
        self.src, self.gen = src, torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        return torch.randn(list(shape), generator=self.gen) * scale + shift

    def net(self, cls, init_kwargs=None, params=None, buffers=None, modules=None, **attrs):
        m = _Persistent()
        for k, v in (params or {}).items():
            m.register_parameter(k, None if v is None else torch.nn.Parameter(v, requires_grad=False))
        for k, v in (buffers or {}).items():
            m.register_buffer(k, v)
        for k, v in (modules or {}).items():
            m.add_module(k, v)
        m._src, m._cls, m._init_args, m._init_kwargs = self.src, cls, (), dict(init_kwargs or {})
        for k, v in attrs.items():
            setattr(m, k, v)
        return m.eval()

    def fc(self, fin, fout, act="linear", lr=1.0, bias_init=0.0, bias=True):
        return self.net("FullyConnectedLayer", dict(in_features=fin, out_features=fout, activation=act, lr_multiplier=lr),
                        params={"weight": self.randn(fout, fin) / lr,
                                "bias": self.randn(fout, scale=0.3, shift=bias_init) if bias else None},
                        activation=act, weight_gain=np.float64(lr / np.sqrt(fin)), bias_gain=lr)

    def conv(self, cin, cout, k, act="lrelu", down=1, bias=True, clamp=None):
        return self.net("Conv2dLayer", dict(in_channels=cin, out_channels=cout, kernel_size=k),
                        params={"weight": self.randn(cout, cin, k, k), "bias": self.randn(cout, scale=0.3) if bias
                                else None},
                        buffers={"resample_filter": torch.tensor(FIR, dtype=torch.float32)},
                        activation=act, up=1, down=down, conv_clamp=clamp, padding=k // 2,
                        weight_gain=np.float64(1 / np.sqrt(cin * k * k)), act_gain=SQRT2 if act == "lrelu" else 1.0)

    def mapping(self, cfg, z_dim, w_dim, layers, num_ws, w_avg):
        mods = {}
        embed = w_dim if cfg["c_dim"] else 0
        if cfg["c_dim"]:
            mods["embed"] = self.fc(cfg["c_dim"], w_dim)
        feats = [z_dim + embed] + [w_dim] * layers
        for i in range(layers):
            mods[f"fc{i}"] = self.fc(feats[i], feats[i + 1], "lrelu", cfg["lr"] if w_avg else 0.01)
        return self.net("MappingNetwork", dict(z_dim=z_dim, c_dim=cfg["c_dim"], w_dim=w_dim, num_ws=num_ws),
                        buffers={"w_avg": self.randn(w_dim, scale=0.5)} if w_avg else {}, modules=mods,
                        z_dim=z_dim, c_dim=cfg["c_dim"], w_dim=w_dim, num_ws=num_ws, num_layers=layers,
                        w_avg_beta=0.995 if w_avg else None)

    def synthesis_layer(self, cin, cout, w_dim, res, up, clamp, channels_last):
        weight = self.randn(cout, cin, 3, 3)
        if channels_last:
            weight = weight.to(memory_format=torch.channels_last)
        return self.net("SynthesisLayer", dict(in_channels=cin, out_channels=cout, w_dim=w_dim, resolution=res, up=up),
                        params={"weight": weight, "noise_strength": self.randn(scale=0.3),
                                "bias": self.randn(cout, scale=0.3)},
                        buffers={"resample_filter": torch.tensor(FIR, dtype=torch.float32),
                                 "noise_const": self.randn(res, res)},
                        modules={"affine": self.fc(w_dim, cin, bias_init=1.0)},
                        resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=clamp, padding=1,
                        act_gain=SQRT2)

    def generator(self, cfg, architecture="skip"):
        res_log2, w_dim = int(np.log2(cfg["res"])), cfg["w_dim"]
        resolutions = [2**i for i in range(2, res_log2 + 1)]
        ch = {r: min(cfg["base"] // r, cfg["cmax"]) for r in resolutions}
        fp16_res = max(2 ** (res_log2 + 1 - cfg["fp16"]), 8)
        blocks = {}
        for r in resolutions:
            mods, params = {}, {}
            if r == 4:
                params["const"] = self.randn(ch[4], 4, 4)
            else:
                mods["conv0"] = self.synthesis_layer(ch[r // 2], ch[r], w_dim, r, 2, cfg["clamp"], False)
            mods["conv1"] = self.synthesis_layer(ch[r], ch[r], w_dim, r, 1, cfg["clamp"],
                                                 cfg["channels_last"] and r == 16)
            mods["torgb"] = self.net("ToRGBLayer", dict(in_channels=ch[r], out_channels=cfg["channels"], w_dim=w_dim),
                                     params={"weight": self.randn(cfg["channels"], ch[r], 1, 1),
                                             "bias": self.randn(cfg["channels"], scale=0.3)},
                                     modules={"affine": self.fc(w_dim, ch[r], bias_init=1.0)},
                                     conv_clamp=cfg["clamp"], weight_gain=np.float64(1 / np.sqrt(ch[r])))
            blocks[f"b{r}"] = self.net(
                "SynthesisBlock", dict(in_channels=0 if r == 4 else ch[r // 2], out_channels=ch[r], resolution=r),
                params=params, buffers={"resample_filter": torch.tensor(FIR, dtype=torch.float32)}, modules=mods,
                in_channels=0 if r == 4 else ch[r // 2], w_dim=w_dim, resolution=r, img_channels=cfg["channels"],
                is_last=r == cfg["res"], architecture=architecture, use_fp16=r >= fp16_res, channels_last=False,
                num_conv=1 if r == 4 else 2, num_torgb=1)
        num_ws = 2 * res_log2 - 2
        synthesis = self.net("SynthesisNetwork", dict(w_dim=w_dim, img_resolution=cfg["res"]), modules=blocks,
                             w_dim=w_dim, img_resolution=cfg["res"], img_resolution_log2=res_log2,
                             img_channels=cfg["channels"], block_resolutions=resolutions, num_ws=num_ws)
        mapping = self.mapping(cfg, cfg["z_dim"], w_dim, cfg["map_layers"], num_ws, True)
        kwargs = dict(z_dim=cfg["z_dim"], w_dim=w_dim, c_dim=cfg["c_dim"], img_resolution=cfg["res"],
                      img_channels=cfg["channels"], mapping_kwargs=_EasyDict(num_layers=cfg["map_layers"]),
                      synthesis_kwargs=_EasyDict(channel_base=cfg["base"], channel_max=cfg["cmax"],
                                                 num_fp16_res=cfg["fp16"], conv_clamp=cfg["clamp"]))
        return self.net("Generator", kwargs, modules={"synthesis": synthesis, "mapping": mapping},
                        z_dim=cfg["z_dim"], c_dim=cfg["c_dim"], w_dim=w_dim, img_resolution=cfg["res"],
                        img_channels=cfg["channels"], num_ws=num_ws)

    def discriminator(self, cfg, architecture="resnet"):
        res_log2 = int(np.log2(cfg["res"]))
        resolutions = [2**i for i in range(res_log2, 2, -1)]
        ch = {r: min(cfg["base"] // r, cfg["cmax"]) for r in resolutions + [4]}
        fp16_res = max(2 ** (res_log2 + 1 - cfg["fp16"]), 8)
        mods = {}
        for r in resolutions:
            block = {}
            if r == cfg["res"]:
                block["fromrgb"] = self.conv(cfg["channels"], ch[r], 1, clamp=cfg["clamp"])
            block["conv0"] = self.conv(ch[r], ch[r], 3, clamp=cfg["clamp"])
            block["conv1"] = self.conv(ch[r], ch[r // 2], 3, down=2, clamp=cfg["clamp"])
            block["skip"] = self.conv(ch[r], ch[r // 2], 1, act="linear", down=2, bias=False)
            mods[f"b{r}"] = self.net("DiscriminatorBlock", dict(resolution=r), modules=block,
                                     buffers={"resample_filter": torch.tensor(FIR, dtype=torch.float32)},
                                     in_channels=0 if r == cfg["res"] else ch[r], resolution=r,
                                     img_channels=cfg["channels"], architecture=architecture,
                                     use_fp16=r >= fp16_res, channels_last=False, num_layers=len(block))
        cmap = ch[4] if cfg["c_dim"] else 0
        if cfg["c_dim"]:
            mods["mapping"] = self.mapping(cfg, 0, cmap, cfg["d_map_layers"], None, False)
        group, nch = cfg["mbstd"]
        c4 = ch[4]
        mods["b4"] = self.net("DiscriminatorEpilogue", dict(in_channels=c4, cmap_dim=cmap, resolution=4),
                              modules={"mbstd": self.net("MinibatchStdLayer", dict(group_size=group),
                                                         group_size=group, num_channels=nch),
                                       "conv": self.conv(c4 + nch, c4, 3, clamp=cfg["clamp"]),
                                       "fc": self.fc(c4 * 16, c4, "lrelu"), "out": self.fc(c4, cmap or 1)},
                              in_channels=c4, cmap_dim=cmap, resolution=4, img_channels=cfg["channels"],
                              architecture="resnet")
        kwargs = dict(c_dim=cfg["c_dim"], img_resolution=cfg["res"], img_channels=cfg["channels"],
                      channel_base=cfg["base"], channel_max=cfg["cmax"], num_fp16_res=cfg["fp16"],
                      conv_clamp=cfg["clamp"], block_kwargs=_EasyDict(), mapping_kwargs=_EasyDict(),
                      epilogue_kwargs=_EasyDict(mbstd_group_size=group))
        if cfg["c_dim"]:
            kwargs["mapping_kwargs"] = _EasyDict(num_layers=cfg["d_map_layers"])
        return self.net("Discriminator", kwargs, modules=mods, c_dim=cfg["c_dim"], img_resolution=cfg["res"],
                        img_resolution_log2=res_log2, img_channels=cfg["channels"], block_resolutions=resolutions)

    def augment_pipe(self):
        return self.net("AugmentPipe", dict(xflip=1), buffers={"p": torch.tensor(0.25)}, xflip=1.0,
                        probabilities=np.array([0.5, 0.25], np.float32))


def _source(marker: pathlib.Path) -> str:
    """module_src that leaves `marker` behind if anything ever executes it."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\nclass Generator:\n    pass\n"


def _write_pickle(path: pathlib.Path, obj_fn, protocol: int = 4) -> pathlib.Path:
    with _standin_modules():
        path.write_bytes(pickle.dumps(obj_fn(), protocol=protocol))
    return path


class Snapshot:
    """One stand-in network-snapshot.pkl and the torch modules it was made from."""

    def __init__(self, directory: pathlib.Path, cfg: dict, protocol: int = 4):
        self.cfg, self.marker = cfg, directory / "module_src_ran"
        b = _Builder(_source(self.marker), seed=1 + cfg["c_dim"])
        self.nets = {"G": b.generator(cfg), "D": b.discriminator(cfg), "G_ema": b.generator(cfg),
                     "augment_pipe": b.augment_pipe()}
        self.path = _write_pickle(directory / "network-snapshot.pkl", lambda: dict(
            self.nets, training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", use_labels=True)),
            protocol)

    def tensors(self, net: str) -> dict[str, np.ndarray]:
        """The raw tensors of one network, in NVIDIA's layout, as float64."""
        module = self.nets[net]
        named = dict(module.named_parameters()) | dict(module.named_buffers())
        return {k: v.detach().double().numpy() for k, v in named.items()}


@pytest.fixture(scope="module", params=[UNCOND, COND], ids=["unconditional", "conditional"])
def snapshot(request, tmp_path_factory):
    snap = Snapshot(tmp_path_factory.mktemp("pkl"), request.param)
    yield snap
    assert not snap.marker.exists(), "module_src was executed"


# ----------------------------------------------------------------------------- NumPy reference, NCHW


def _lrelu(x):
    return np.where(x >= 0, x, 0.2 * x) * SQRT2


def _bias_act(x, b, act, gain=1.0, clamp=None):
    """x + b, the activation with its default gain (sqrt(2) for lrelu), times `gain`, clamped to +-clamp."""
    if b is not None:
        x = x + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    x = (_lrelu(x) if act == "lrelu" else x) * gain
    return x if clamp is None else np.clip(x, -clamp, clamp)


def _fc(P, name, x, act="linear", lr=1.0):
    w = P[f"{name}.weight"]
    return _bias_act(x @ (w * (lr / np.sqrt(w.shape[1]))).T, P[f"{name}.bias"] * lr, act)


def _norm2(x):
    return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-8)


def _upfirdn2d(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """NVIDIA's upfirdn2d on NCHW: zero insertion, pad (x0, x1, y0, y1; negative crops), true convolution, decimate."""
    n, c, h, w = x.shape
    if up > 1:
        z = np.zeros((n, c, h * up, w * up))
        z[:, :, ::up, ::up] = x
        x = z
    x0, x1, y0, y1 = pad
    x = np.pad(x, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    k = np.flip(f) * gain
    oh, ow = x.shape[2] - k.shape[0] + 1, x.shape[3] - k.shape[1] + 1
    out = sum(k[i, j] * x[:, :, i:i + oh, j:j + ow] for i in range(k.shape[0]) for j in range(k.shape[1]))
    return out[:, :, ::down, ::down]


def _conv2d(x, w, stride=1, pad=0):
    """torch's conv2d (a correlation) on NCHW; w [O, I, k, k] shared or [N, O, I, k, k] per example."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    spec = "nihw,noi->nohw" if w.ndim == 5 else "nihw,oi->nohw"
    out = 0.0
    for a in range(k):
        for b in range(k):
            patch = x[:, :, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride]
            out = out + np.einsum(spec, patch, w[..., a, b])
    return out


def _conv_transpose2d(x, w):
    """torch's conv_transpose2d with stride 2, padding 0, per-example w [N, I, O, k, k]: out[2i+a, 2j+b] += x w."""
    n, _, h, wd = x.shape
    k = w.shape[-1]
    out = np.zeros((n, w.shape[2], 2 * (h - 1) + k, 2 * (wd - 1) + k))
    for a in range(k):
        for b in range(k):
            out[:, :, a:a + 2 * h - 1:2, b:b + 2 * wd - 1:2] += np.einsum("nihw,nio->nohw", x, w[..., a, b])
    return out


def _modulated_conv(x, weight, styles, demodulate=True, up=False):
    """Per-example weights w * s, demodulated by rsqrt(sum w^2 + 1e-8); up: transposed conv, then FIR with gain 4."""
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w / np.sqrt(np.sum(w**2, axis=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    if up:
        return _upfirdn2d(_conv_transpose2d(x, w.transpose(0, 2, 1, 3, 4)), FIR, pad=(1, 1, 1, 1), gain=4.0)
    return _conv2d(x, w, pad=weight.shape[-1] // 2)


def _mapping(P, prefix, z, c, cfg, layers, lr):
    parts = [] if z is None else [_norm2(z)]
    if c is not None:
        parts.append(_norm2(_fc(P, f"{prefix}embed", c)))
    x = np.concatenate(parts, axis=1)
    for i in range(layers):
        x = _fc(P, f"{prefix}fc{i}", x, "lrelu", lr)
    return x


def reference_generator(P, cfg, z, c, psi=1.0, cutoff=None):
    """StyleGAN2's skip generator on NVIDIA's raw tensors -> images NCHW (noise_mode const)."""
    num_ws = 2 * int(np.log2(cfg["res"])) - 2
    ws = np.repeat(_mapping(P, "mapping.", z, c, cfg, cfg["map_layers"], cfg["lr"])[:, None], num_ws, axis=1)
    if psi != 1.0:
        cut = num_ws if cutoff is None else cutoff
        ws[:, :cut] = P["mapping.w_avg"] + psi * (ws[:, :cut] - P["mapping.w_avg"])

    def layer(x, w, p, up=False):
        x = _modulated_conv(x, P[p + "weight"], _fc(P, p + "affine", w), up=up)
        x = x + (P[p + "noise_const"] * P[p + "noise_strength"])[None, None]
        return _bias_act(x, P[p + "bias"], "lrelu", clamp=cfg["clamp"])

    def torgb(x, w, p):
        styles = _fc(P, p + "affine", w) / np.sqrt(x.shape[1])
        return _bias_act(_modulated_conv(x, P[p + "weight"], styles, demodulate=False), P[p + "bias"], "linear",
                         clamp=cfg["clamp"])

    x = img = None
    idx = 0
    for log_r in range(2, int(np.log2(cfg["res"])) + 1):
        p = f"synthesis.b{2**log_r}."
        if x is None:
            x = layer(np.repeat(P[p + "const"][None], z.shape[0], axis=0), ws[:, 0], p + "conv1.")
            idx = 1
        else:
            x = layer(x, ws[:, idx], p + "conv0.", up=True)
            x = layer(x, ws[:, idx + 1], p + "conv1.")
            idx += 2
        y = torgb(x, ws[:, idx], p + "torgb.")
        img = y if img is None else _upfirdn2d(img, FIR, up=2, pad=(2, 1, 2, 1), gain=4.0) + y
    return img


def _dconv(P, p, x, act="lrelu", down=False, gain=1.0, clamp=None):
    w = P[p + "weight"]
    w = w / np.sqrt(np.prod(w.shape[1:]))
    k = w.shape[-1]
    if down and k == 1:
        x = _conv2d(_upfirdn2d(x, FIR, down=2, pad=(1, 1, 1, 1)), w)
    elif down:
        x = _conv2d(_upfirdn2d(x, FIR, pad=(2, 2, 2, 2)), w, stride=2)
    else:
        x = _conv2d(x, w, pad=k // 2)
    return _bias_act(x, P.get(p + "bias"), act, gain, None if clamp is None else clamp * gain)


def reference_discriminator(P, cfg, img, c):
    """StyleGAN2's residual D on NVIDIA's raw tensors, img NCHW -> logits [N]."""
    x, clamp = None, cfg["clamp"]
    for log_r in range(int(np.log2(cfg["res"])), 2, -1):
        p = f"b{2**log_r}."
        if x is None:
            x = _dconv(P, p + "fromrgb.", img, clamp=clamp)
        y = _dconv(P, p + "skip.", x, "linear", down=True, gain=SQRT_HALF)
        x = _dconv(P, p + "conv0.", x, clamp=clamp)
        x = y + _dconv(P, p + "conv1.", x, down=True, gain=SQRT_HALF, clamp=clamp)
    n, ch, h, w = x.shape
    group, f = cfg["mbstd"]
    g = min(group, n)
    s = x.reshape(g, -1, f, ch // f, h, w)  # NVIDIA's grouping: example i is in group i % (n / g)
    s = np.sqrt(np.mean((s - s.mean(axis=0)) ** 2, axis=0) + 1e-8).mean(axis=(2, 3, 4))
    x = np.concatenate([x, np.tile(s.reshape(-1, f, 1, 1), (g, 1, h, w))], axis=1)
    x = _dconv(P, "b4.conv.", x, clamp=clamp)
    x = _fc(P, "b4.out", _fc(P, "b4.fc", x.reshape(n, -1), "lrelu"))
    if c is not None:
        cmap = _mapping(P, "mapping.", None, c, cfg, cfg["d_map_layers"], 0.01)
        x = np.sum(x * cmap, axis=1, keepdims=True) / np.sqrt(cmap.shape[1])
    return x[:, 0]


def test_the_reference_resampling_is_torch_and_scipy():
    """The NumPy reference's convolutions are torch's, and its upfirdn2d is scipy.signal.upfirdn along both axes."""
    import scipy.signal

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(_conv2d(x, w, stride=2, pad=1),
                               torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=2, padding=1),
                               rtol=1e-10, atol=1e-10)
    wt = rng.standard_normal((3, 4, 3, 3))
    np.testing.assert_allclose(_conv_transpose2d(x, np.broadcast_to(wt, (2,) + wt.shape)),
                               torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(wt), stride=2),
                               rtol=1e-10, atol=1e-10)
    f1 = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    for up, down, pad in ((2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (2, 1, (1, 1, 1, 1))):
        want = x
        for axis in (2, 3):
            want = np.apply_along_axis(lambda v: scipy.signal.upfirdn(f1 * up, v, up, 1), axis, want)
        lo, hi = pad[0], pad[1]
        # scipy's full convolution is NVIDIA's with pads (len(f) - 1, len(f) - up): crop it to (lo, hi), decimate.
        start, n = len(f1) - 1 - lo, x.shape[2] * up + lo + hi - len(f1) + 1
        want = want[:, :, start:start + n, start:start + n][:, :, ::down, ::down]
        np.testing.assert_allclose(_upfirdn2d(x, FIR, up=up, down=down, pad=pad, gain=up * up), want, rtol=1e-10,
                                   atol=1e-12)


# ----------------------------------------------------------------------------- round trips


def _inputs(cfg, batch, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, cfg["z_dim"])).astype(np.float32)
    labels = rng.integers(0, cfg["c_dim"], batch) if cfg["c_dim"] else None
    onehot = np.eye(cfg["c_dim"])[labels] if cfg["c_dim"] else None
    return z, labels, onehot


def _close(zoo_out, reference):
    np.testing.assert_allclose(np.asarray(zoo_out, np.float64), reference, rtol=1e-4,
                               atol=1e-4 * float(np.abs(reference).max()))


@pytest.mark.parametrize("net", ["G_ema", pytest.param("G", marks=pytest.mark.slow)])  # same network, other weights
def test_generator_matches_the_numpy_reference_on_nvidias_tensors(snapshot, tmp_path, net):
    out = convert_stylegan2(snapshot.path, tmp_path / "g.safetensors", net=net)
    loaded = pretrained.load(out)
    cfg = snapshot.cfg
    assert loaded.config["model"] == "stylegan2_g"
    assert loaded.config["model_config"] == {
        "image_shape": [32, 32, 3], "latent_dim": 16, "w_dim": 16, "num_classes": cfg["c_dim"], "mapping_layers": 2,
        "mapping_lr_mul": 0.01, "w_avg_beta": 0.995, "channel_base": 512, "channel_max": 32,
        "num_bf16_res": cfg["fp16"], "conv_clamp": cfg["clamp"] or 0.0}
    module = loaded.module.clone(num_bf16_res=0)  # NVIDIA's fp16 blocks run in bf16 here; compare in float32
    z, labels, onehot = _inputs(cfg, 3)
    P = snapshot.tensors(net)
    args = (jnp.asarray(z),) + ((jnp.asarray(labels),) if labels is not None else ())
    for psi, cutoff in ((1.0, None), (0.5, 3)):
        images = module.apply(loaded.variables, *args, psi=psi, cutoff=cutoff, noise_mode="const")
        chex.assert_shape(images, (3, 32, 32, 3))
        reference = reference_generator(P, cfg, z.astype(np.float64), onehot, psi, cutoff)
        _close(images, reference.transpose(0, 2, 3, 1))
    assert not snapshot.marker.exists()


def test_discriminator_matches_the_numpy_reference_on_nvidias_tensors(snapshot, tmp_path):
    out = convert_stylegan2(snapshot.path, tmp_path / "d.safetensors", net="D")
    loaded = pretrained.load(out)
    cfg = snapshot.cfg
    group, nch = cfg["mbstd"]
    assert loaded.config["model"] == "stylegan2_d"
    assert loaded.config["model_config"] == {
        "image_shape": [32, 32, 3], "num_classes": cfg["c_dim"], "channel_base": 512, "channel_max": 32,
        "mbstd_group": group, "mbstd_channels": nch, "mapping_layers": cfg["d_map_layers"] if cfg["c_dim"] else 8,
        "num_bf16_res": cfg["fp16"], "conv_clamp": cfg["clamp"] or 0.0}
    module = loaded.module.clone(num_bf16_res=0)
    # One stddev group: NVIDIA groups examples i, i + B/G, ... and the zoo consecutive ones; with B = G both agree.
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (group, 32, 32, 3)).astype(np.float32)
    _, labels, onehot = _inputs(cfg, group, seed=2)
    args = (jnp.asarray(images),) + ((jnp.asarray(labels),) if labels is not None else ())
    logits = module.apply(loaded.variables, *args)
    chex.assert_shape(logits, (group,))
    _close(logits, reference_discriminator(snapshot.tensors("D"), cfg, images.transpose(0, 3, 1, 2).astype(np.float64),
                                           onehot))


def test_the_cli_converts_g_ema_by_default_with_provenance(tmp_path):
    snapshot = Snapshot(tmp_path, UNCOND)
    out = tmp_path / "ffhq.safetensors"
    proc = subprocess.run([sys.executable, "-m", "zoo.convert", "stylegan2", "--pkl", str(snapshot.path), "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    loaded = pretrained.load(out)
    assert loaded.config["metadata"] == {
        "source": "network-snapshot.pkl", "source_sha256": hashlib.sha256(snapshot.path.read_bytes()).hexdigest(),
        "net": "G_ema", "nvidia_class": "Generator", "converted_by": "zoo.convert stylegan2",
        "licence": "that of the source network pickle"}
    want = snapshot.tensors("G_ema")["synthesis.b8.conv0.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(loaded.params["synthesis"]["b8"]["conv0"]["weight"]), want)
    assert not snapshot.marker.exists()


# ----------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("protocol", [3, 4])
def test_reader_gives_records_of_state_never_running_module_src(tmp_path, protocol):
    snap = Snapshot(tmp_path, COND, protocol)
    data = read_network_pickle(snap.path)
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    g = data["G_ema"]
    assert isinstance(g, NetworkRecord) and g.class_name == "Generator"
    assert g.init_kwargs["mapping_kwargs"] == {"num_layers": 2} and type(g.init_kwargs["mapping_kwargs"]) is dict
    assert g.get("mapping.fc0").attributes["weight_gain"] == pytest.approx(0.01 / np.sqrt(32)) and \
        type(g.get("mapping.fc0").attributes["weight_gain"]) is float
    assert g.get("synthesis.b32").attributes["use_fp16"] is True
    strided = snap.nets["G_ema"].synthesis.b16.conv1.weight
    assert not strided.is_contiguous(), "the stand-in holds a channels_last weight, as NVIDIA's fp16 layers may"
    np.testing.assert_array_equal(g.get("synthesis.b16.conv1").parameters["weight"], strided.detach().numpy())
    assert set(g.tensors()) == set(snap.tensors("G_ema"))
    aug = data["augment_pipe"]
    np.testing.assert_array_equal(aug.attributes["probabilities"], np.array([0.5, 0.25], np.float32))
    assert float(aug.buffers["p"]) == 0.25
    assert data["training_set_kwargs"]["use_labels"] is True
    assert not snap.marker.exists()


# ----------------------------------------------------------------------------- refusals


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


class _Crafted:
    """An object whose pickle is the given __reduce__ tuple (a BUILD follows when it has a state)."""

    def __init__(self, reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _persistence_call():
    return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj


def _storage_bytes():
    return torch.zeros(3)._typed_storage().__reduce__()[1][0]


def _evil_easydict():
    e = _EasyDict(num_layers=2)
    object.__setattr__(e, "evil", 1)  # an instance __dict__: pickled as a BUILD on the new EasyDict
    return e


CRAFTED = {
    "os.system": (lambda m: pickle.PROTO + b"\x02" + _global("os", "system") + _text(f"touch {m}")
                  + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP, "refusing to load global os.system"),
    "builtins.eval": (lambda m: pickle.PROTO + b"\x02" + _global("builtins", "eval")
                      + _text(f"open({str(m)!r}, 'w')") + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP,
                      "refusing to load global builtins.eval"),
    "reduce_on_a_storage_type": (lambda m: pickle.PROTO + b"\x02" + _global("torch", "FloatStorage")
                                 + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP,
                                 "refusing to call the float32 storage type"),
    "build_on_easydict_class": (lambda m: pickle.PROTO + b"\x02" + _global("dnnlib.util", "EasyDict")
                                + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP,
                                "refusing to modify a dnnlib.util.EasyDict with the pickle BUILD"),
    "tensorflow_pickle": (lambda m: pickle.PROTO + b"\x02" + _global("dnnlib.tflib.network", "Network")
                          + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.STOP, "legacy TensorFlow StyleGAN"),
}

CRAFTED_OBJECTS = {
    "build_on_persistent_record": (
        lambda src: _Crafted((_persistence_call(), (dict(type="class", version=6, module_src=src,
                                                         class_name="Generator", state={}),), {"x": 1})),
        "refusing to modify the persistent Generator record with the pickle BUILD"),
    "build_on_storage": (
        lambda src: _Crafted((torch.storage._load_from_bytes, (_storage_bytes(),), {"dtype": "float16"})),
        "refusing to modify a storage with the pickle BUILD"),
    "build_on_easydict": (lambda src: {"G": _evil_easydict()},
                          "refusing to modify a dnnlib.util.EasyDict with the pickle BUILD"),
    "persistent_module": (
        lambda src: {"G": _Crafted((_persistence_call(), (dict(type="module", version=6, module_src=src),)))},
        "refusing a pickled Python module \\(torch_utils.persistence meta type 'module'\\)"),
    "numpy_object_array": (lambda src: {"G": np.array([None, "x"], dtype=object)},
                           "refusing numpy dtype 'O8' \\(kind 'O'\\): only numeric dtypes"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_opcodes_are_refused_before_anything_runs(tmp_path, name):
    marker = tmp_path / "ran"
    build, message = CRAFTED[name]
    path = tmp_path / "crafted.pkl"
    path.write_bytes(build(marker))
    error = UnsafePickleError if name != "tensorflow_pickle" else WeightsError
    with pytest.raises(error, match=message) as refused:
        read_network_pickle(path)
    assert str(path) in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", list(CRAFTED_OBJECTS))
def test_crafted_network_pickles_are_refused_without_effect(tmp_path, name):
    marker = tmp_path / "ran"
    build, message = CRAFTED_OBJECTS[name]
    path = _write_pickle(tmp_path / "crafted.pkl", lambda: build(_source(marker)))
    with pytest.raises(UnsafePickleError, match=message):
        read_network_pickle(path)
    assert not marker.exists()


def test_a_refused_build_leaves_later_files_reading_correctly(tmp_path, snapshot):
    crafted = _write_pickle(tmp_path / "crafted.pkl", lambda: CRAFTED_OBJECTS["build_on_storage"][0](""))
    with pytest.raises(UnsafePickleError):
        read_network_pickle(crafted)
    g = read_network_pickle(snapshot.path)["G_ema"]
    np.testing.assert_array_equal(g.get("mapping.fc0").parameters["weight"],
                                  snapshot.nets["G_ema"].mapping.fc0.weight.detach().numpy())


def test_files_that_are_not_network_pickles_are_named(tmp_path, snapshot):
    state = {"w": torch.ones(2)}
    cases = {
        "state.pt": (lambda p: torch.save(state, p), "is a torch.save zip archive \\(a state dict or checkpoint\\)"),
        "legacy.pt": (lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
                      "is a torch.save file \\(legacy format"),
        "empty.pkl": (lambda p: p.write_bytes(b""), "is empty"),
        "truncated.pkl": (lambda p: p.write_bytes(snapshot.path.read_bytes()[:5000]),
                          "is not a readable network pickle .*download it again"),
        "text.pkl": (lambda p: p.write_text("not a pickle at all\n"), "is not a pickle \\(it starts with b'not a pi'"),
        "list.pkl": (lambda p: p.write_bytes(pickle.dumps([1, 2])), "holds a list, not the dict of networks"),
    }
    for name, (write, message) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(WeightsError, match=message):
            read_network_pickle(path)
    with pytest.raises(WeightsError, match="no such file"):
        read_network_pickle(tmp_path / "absent.pkl")
    assert zipfile.is_zipfile(tmp_path / "state.pt")


# ----------------------------------------------------------------------------- networks the zoo cannot represent


def _one_network_pickle(tmp_path, net, **kwargs):
    b = _Builder(_source(tmp_path / "ran"), seed=0)
    return _write_pickle(tmp_path / "net.pkl", lambda: {"G_ema": net(b, **kwargs)})


@pytest.mark.parametrize("arch", ["orig", "resnet"])
def test_a_generator_of_another_architecture_is_refused_naming_it(tmp_path, arch):
    path = _one_network_pickle(tmp_path, lambda b: b.generator(UNCOND, architecture=arch))
    with pytest.raises(WeightsError, match=f"synthesis.b4.architecture = '{arch}': the zoo's model supports only "
                                           "'skip'"):
        convert_stylegan2(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("arch", ["skip", "orig"])
def test_a_discriminator_of_another_architecture_is_refused_naming_it(tmp_path, arch):
    b = _Builder("", seed=0)
    path = _write_pickle(tmp_path / "net.pkl", lambda: {"D": b.discriminator(UNCOND, architecture=arch)})
    with pytest.raises(WeightsError, match=f"b32.architecture = '{arch}'.*'resnet'"):
        convert_stylegan2(path, tmp_path / "out.safetensors", net="D")


def test_a_stylegan3_generator_is_refused_naming_it(tmp_path):
    def sg3(b):
        synthesis = b.net("SynthesisNetwork", modules={"input": b.net("SynthesisInput"), "L0_36_512": b.net("Layer")})
        return b.net("Generator", modules={"synthesis": synthesis, "mapping": b.net("MappingNetwork")},
                     z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3)

    path = _one_network_pickle(tmp_path, sg3)
    with pytest.raises(WeightsError, match="StyleGAN3 generator"):
        convert_stylegan2(path, tmp_path / "out.safetensors")


def test_a_changed_resample_filter_is_refused(tmp_path):
    def blurred(b):
        g = b.generator(UNCOND)
        g.synthesis.b8.resample_filter.fill_(1 / 16)
        return g

    path = _one_network_pickle(tmp_path, blurred)
    with pytest.raises(WeightsError, match="synthesis.b8.resample_filter is not the \\[1, 3, 3, 1\\]"):
        convert_stylegan2(path, tmp_path / "out.safetensors")


def test_a_leftover_tensor_is_named(tmp_path):
    def extra(b):
        g = b.generator(UNCOND)
        g.synthesis.b8.register_buffer("mystery", torch.zeros(2))
        return g

    path = _one_network_pickle(tmp_path, extra)
    with pytest.raises(WeightsError, match="no place in the zoo's stylegan2_g: synthesis.b8.mystery"):
        convert_stylegan2(path, tmp_path / "out.safetensors")


# ----------------------------------------------------------------------------- the CLI's errors


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zoo.convert", "stylegan2", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_errors_are_one_line_and_status_2(tmp_path):
    b = _Builder("", seed=0)
    only_g = _write_pickle(tmp_path / "g_only.pkl", lambda: {"G_ema": b.generator(UNCOND)})
    cases = [
        (("--pkl", str(tmp_path / "absent.pkl"), "--out", str(tmp_path / "x.safetensors")), "absent.pkl: no such file"),
        (("--pkl", str(only_g), "--out", str(tmp_path / "x.safetensors"), "--net", "D"),
         "has no network 'D'; it holds G_ema"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("weights error: ") and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_the_stand_in_pickle_really_carries_code_that_would_leave_the_marker(snapshot, tmp_path):
    raw = snapshot.path.read_bytes()
    assert str(snapshot.marker).encode() in raw
    assert b"torch_utils.persistence" in raw and b"_reconstruct_persistent_obj" in raw
    control = tmp_path / "control"
    exec(compile(_source(control), "module_src", "exec"), {})
    assert control.exists(), "the payload is live: running it leaves its marker, so the marker checks can fail"


def test_an_output_that_is_a_directory_is_refused_before_the_pickle_is_read(tmp_path):
    with pytest.raises(WeightsError, match="is a directory; pass a file path such as .*G_ema.safetensors"):
        convert_stylegan2(tmp_path / "absent.pkl", tmp_path)
