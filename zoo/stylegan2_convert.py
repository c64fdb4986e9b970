"""NVIDIA's StyleGAN2 networks (read by `zoo.nvidia_pickle`) -> the zoo's `stylegan2_g` / `stylegan2_d` variables.

    python -m zoo.convert stylegan2 --pkl ffhq.pkl --out ffhq.safetensors [--net G_ema|G|D]

Every NVIDIA tensor maps to one zoo array (R: a block resolution; i: a mapping layer; K: 0 or 1),
values unchanged, only the layout (torch NCHW/OIHW, [out, in] dense) turned into the zoo's (NHWC,
HWIO, [in, out] dense):

    NVIDIA tensor (torch layout)                    zoo variable (collection:path)             layout change
    mapping.embed.weight [E, c_dim]                 params:mapping/embed/weight [c_dim, E]     o i -> i o
    mapping.fc{i}.weight [out, in]                  params:mapping/fc{i}/weight [in, out]      o i -> i o
    mapping.{embed,fc{i}}.bias [out]                params:mapping/{embed,fc{i}}/bias          -
    mapping.w_avg [w_dim]                           buffers:mapping/w_avg                      -
    synthesis.b4.const [C, 4, 4]                    params:synthesis/b4/const [4, 4, C]        c h w -> h w c
    synthesis.bR.conv{K}.weight [O, I, 3, 3]        params:synthesis/bR/conv{K}/weight         o i h w -> h w i o
    synthesis.bR.conv{K}.affine.weight [I, w_dim]   params:synthesis/bR/conv{K}/affine/weight  o i -> i o
    synthesis.bR.conv{K}.{bias, affine.bias}        params:synthesis/bR/conv{K}/...            -
    synthesis.bR.conv{K}.noise_strength []          params:synthesis/bR/conv{K}/noise_strength -
    synthesis.bR.conv{K}.noise_const [R, R]         buffers:synthesis/bR/conv{K}/noise_const   -
    synthesis.bR.torgb.weight [C, I, 1, 1]          params:synthesis/bR/torgb/weight           o i h w -> h w i o
    synthesis.bR.torgb.affine.weight [I, w_dim]     params:synthesis/bR/torgb/affine/weight    o i -> i o
    synthesis.bR.torgb.{bias, affine.bias}          params:synthesis/bR/torgb/...              -
    D: bR.{fromrgb,conv0,conv1,skip}.weight         params:bR/{fromrgb,conv0,conv1,skip}/weight o i h w -> h w i o
    D: bR.{fromrgb,conv0,conv1}.bias (skip: none)   params:bR/.../bias                         -
    D: b4.conv.{weight,bias}                        params:b4/conv/...                         o i h w -> h w i o
    D: b4.fc.weight [C, C * 16], inputs (c h w)     params:b4/fc/weight [16 C, C], (h w c)     o (c h w) -> (h w c) o
    D: b4.out.weight [1 or cmap_dim, C]             params:b4/out/weight [C, 1 or cmap_dim]    o i -> i o
    D: b4.{fc,out}.bias                             params:b4/{fc,out}/bias                    -
    D: mapping.{embed,fc{i}}.* (conditional)        params:mapping/...                         as G's mapping
    *.resample_filter (every block and resampling layer)  dropped, once checked to be the zoo's [1, 3, 3, 1] filter

A name left over on either side is an error naming it, so nothing is silently dropped or left at init.

The model config comes from the networks' pickled state: the attributes NVIDIA's forward pass reads
(`architecture`, `conv_clamp`, `use_fp16`, the mapping's `w_avg_beta`, `num_layers`, `bias_gain`,
the epilogue's `mbstd.group_size`...), not from the init kwargs alone, because the two NVIDIA
repositories give the same kwargs different defaults (w_avg_beta 0.995 or 0.998, conv_clamp None or
256, num_fp16_res 0 or 4) and a kwarg left out is not in `_init_kwargs`. Only channel_base and
channel_max are not stored as attributes: they come from the init kwargs (default 32768 and 512 in
both repositories) and are checked against every block's tensor shapes. NVIDIA's fp16 blocks become
the zoo's bf16 blocks (`num_bf16_res`; set it to 0 with `module.clone(num_bf16_res=0)` for float32
images). Anything the zoo's model cannot represent is refused, naming the field: another G or D
architecture, a kernel other than 3x3, embed/layer features other than w_dim, a D mapping with a
learning-rate multiplier other than 0.01 or a cmap_dim other than its 4x4 channels, minibatch stddev
over the whole batch (group size None), an activation other than lrelu, noise disabled, a filter
other than [1, 3, 3, 1], StyleGAN3's networks. The conditional networks take class indices where
NVIDIA takes a c vector: the same for one-hot c.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
from typing import Any, Callable, Mapping

import numpy as np
from einops import rearrange
from safetensors import SafetensorError

from zoo import nvidia_pickle, resample
from zoo.errors import WeightsError
from zoo.nvidia_pickle import NetworkRecord

__all__ = ["Converted", "convert_discriminator", "convert_generator", "convert_stylegan2", "read_network_pickle"]

read_network_pickle = nvidia_pickle.read_network_pickle

NETS = ("G_ema", "G", "D")
_DEFAULT_CHANNEL_BASE, _DEFAULT_CHANNEL_MAX = 32768, 512
_D_MAPPING_LR_MUL = 0.01  # the zoo's discriminator maps labels at NVIDIA's default multiplier


@dataclasses.dataclass(frozen=True)
class Converted:
    """One converted network: the zoo's registry name, its constructor fields, and its variables."""

    model: str
    model_config: dict[str, Any]
    params: dict[str, Any]
    buffers: dict[str, Any]


def _fail(where: str, message: str) -> WeightsError:
    return WeightsError(f"{where}: {message}")


def _sub(record: NetworkRecord, path: str, where: str) -> NetworkRecord:
    """The submodule at a dotted `path`; WeightsError naming it when the network has none there."""
    try:
        return record.get(path)
    except KeyError as error:
        raise _fail(where, f"{path}: {error.args[0]}; is this a StyleGAN2 network from stylegan2-ada-pytorch or "
                    "stylegan3?") from None


def _attr(record: NetworkRecord, path: str, name: str, where: str) -> Any:
    """An attribute of the submodule at `path`; WeightsError naming both when it is missing."""
    sub = _sub(record, path, where)
    if name not in sub.attributes:
        raise _fail(where, f"{path or record.class_name} has no attribute {name!r}; is this a StyleGAN2 network from "
                    "stylegan2-ada-pytorch or stylegan3?")
    return sub.attributes[name]


def _require(where: str, field: str, value: Any, allowed: Any, why: str) -> None:
    """Refuse a network whose `field` is not `allowed`, naming the field and value."""
    ok = value in allowed if isinstance(allowed, (tuple, list)) else value == allowed
    if not ok:
        raise _fail(where, f"{field} = {value!r}: the zoo's model supports only {allowed!r} ({why})")


def _same(where: str, field: str, values: Mapping[str, Any]) -> Any:
    """The one value a field has in every layer listed; mixed values are refused, naming two layers."""
    distinct = {repr(v): (k, v) for k, v in values.items()}
    if len(distinct) > 1:
        (k1, v1), (k2, v2) = list(distinct.values())[:2]
        raise _fail(where, f"{field} differs between layers ({k1}: {v1!r}, {k2}: {v2!r}); the zoo's model uses one "
                    "value for all")
    return next(iter(values.values()))


def _clamp(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _num_low_precision(where: str, blocks: Mapping[int, NetworkRecord]) -> int:
    """How many of the highest-resolution blocks run in fp16 (bf16 in the zoo); they must be the top ones."""
    flags = [bool(blocks[r].attributes.get("use_fp16", False)) for r in sorted(blocks, reverse=True)]
    count = sum(flags)
    if flags != [True] * count + [False] * (len(flags) - count):
        raise _fail(where, f"use_fp16 is on for blocks {[r for r in blocks if blocks[r].attributes.get('use_fp16')]}, "
                    "not the highest resolutions; the zoo's num_bf16_res covers the N highest")
    return count


def _check_filters(where: str, tensors: Mapping[str, np.ndarray]) -> set[str]:
    """The resample_filter buffers, each checked to be the zoo's normalised [1, 3, 3, 1] filter (then dropped)."""
    want = resample.fir_filter()
    names = {k for k in tensors if k == "resample_filter" or k.endswith(".resample_filter")}
    for name in sorted(names):
        f = np.asarray(tensors[name], np.float64)
        if f.ndim == 1 and f.shape == (4,):
            f = np.outer(f, f)
        if f.shape != want.shape or not np.allclose(f, want, rtol=1e-6, atol=1e-7):
            raise _fail(where, f"{name} is not the [1, 3, 3, 1] low-pass filter the zoo's model resamples with "
                        f"(got {np.asarray(tensors[name]).round(4).tolist()}); resample_filter must be [1, 3, 3, 1]")
    return names


def _channels(where: str, kwargs: Mapping[str, Any], nested: str | None) -> tuple[int, int]:
    """channel_base and channel_max from the init kwargs (top level, or inside `nested`), NVIDIA's defaults else."""
    inner = kwargs.get(nested) or {} if nested else {}
    base = kwargs.get("channel_base", inner.get("channel_base", _DEFAULT_CHANNEL_BASE))
    cmax = kwargs.get("channel_max", inner.get("channel_max", _DEFAULT_CHANNEL_MAX))
    for name, value in (("channel_base", base), ("channel_max", cmax)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(where, f"{name} = {value!r} in the init kwargs is not a positive integer")
    return base, cmax


def _blocks(record: NetworkRecord, path: str, where: str) -> dict[int, NetworkRecord]:
    """The `b{R}` submodules at `path` by resolution."""
    parent = _sub(record, path, where)
    blocks = {int(name[1:]): sub for name, sub in parent.submodules.items() if name[:1] == "b" and name[1:].isdigit()}
    if not blocks:
        raise _fail(where, f"{path or record.class_name} has no b{{R}} blocks; is this a StyleGAN2 network?")
    return blocks


def _mapping_config(record: NetworkRecord, path: str, where: str) -> tuple[int, float]:
    """A mapping network's layer count and learning-rate multiplier, its activations and embed checked."""
    num_layers = _attr(record, path, "num_layers", where)
    layers = {f"{path}.fc{i}": _sub(record, f"{path}.fc{i}", where) for i in range(num_layers)}
    _same(where, "the mapping's activation", {k: v.attributes.get("activation") for k, v in layers.items()})
    _require(where, f"{path}.fc0.activation", layers[f"{path}.fc0"].attributes.get("activation"), "lrelu",
             "NVIDIA's default mapping activation")
    lr_mul = _same(where, "the mapping's lr_multiplier (bias_gain)", {k: float(v.attributes.get("bias_gain", 1.0))
                                                                      for k, v in layers.items()})
    if "embed" in _sub(record, path, where).submodules:
        embed = _sub(record, f"{path}.embed", where).attributes
        _require(where, f"{path}.embed.activation", embed.get("activation"), "linear", "NVIDIA's label embedding")
        _require(where, f"{path}.embed lr_multiplier (bias_gain)", float(embed.get("bias_gain", 1.0)), 1.0,
                 "NVIDIA's label embedding")
    return num_layers, lr_mul


def _generator_config(record: NetworkRecord, where: str) -> dict[str, Any]:
    """The stylegan2_g fields of an NVIDIA Generator, every field the zoo cannot represent refused by name."""
    if "synthesis" not in record.submodules or "mapping" not in record.submodules:
        raise _fail(where, f"{record.class_name} has no mapping and synthesis networks; is this a StyleGAN2 "
                    f"generator? (submodules: {', '.join(record.submodules)})")
    synthesis = _sub(record, "synthesis", where)
    if "input" in synthesis.submodules or any(n[:1] == "L" and n[1:2].isdigit() for n in synthesis.submodules):
        raise _fail(where, "this is a StyleGAN3 generator (networks_stylegan3: synthesis.input and L0_... layers); "
                    "the zoo converts StyleGAN2 networks only (the stylegan2-*.pkl files of the stylegan3 repo work)")
    res, channels = _attr(record, "", "img_resolution", where), _attr(record, "", "img_channels", where)
    blocks = _blocks(record, "synthesis", where)
    if sorted(blocks) != [2**i for i in range(2, int(math.log2(res)) + 1)]:
        raise _fail(where, f"synthesis blocks {sorted(blocks)} do not run from 4 to img_resolution {res}")
    for r, block in blocks.items():
        _require(where, f"synthesis.b{r}.architecture", block.attributes.get("architecture"), "skip",
                 "the zoo's generator is StyleGAN2's default skip architecture")
    layers = {f"synthesis.b{r}.{n}": blocks[r].submodules[n] for r in blocks for n in ("conv0", "conv1")
              if n in blocks[r].submodules}
    for name, layer in layers.items():
        _require(where, f"{name}.activation", layer.attributes.get("activation"), "lrelu", "NVIDIA's default")
        _require(where, f"{name}.use_noise", layer.attributes.get("use_noise"), True,
                 "every synthesis layer has a noise input")
    torgbs = {f"synthesis.b{r}.torgb": blocks[r].submodules["torgb"] for r in blocks if "torgb" in blocks[r].submodules}
    conv_clamp = _same(where, "conv_clamp", {k: v.attributes.get("conv_clamp") for k, v in (layers | torgbs).items()})
    mapping_layers, lr_mul = _mapping_config(record, "mapping", where)
    w_avg_beta = _attr(record, "mapping", "w_avg_beta", where)
    if w_avg_beta is None:
        raise _fail(where, "mapping.w_avg_beta = None (no tracked w_avg): the zoo's generator needs w_avg for "
                    "truncation")
    z_dim = _attr(record, "", "z_dim", where)
    if not isinstance(z_dim, int) or z_dim < 1:
        raise _fail(where, f"z_dim = {z_dim!r}: the zoo's generator needs a latent (z_dim >= 1)")
    base, cmax = _channels(where, record.init_kwargs, "synthesis_kwargs")
    return {
        "image_shape": [res, res, channels],
        "latent_dim": z_dim,
        "w_dim": _attr(record, "", "w_dim", where),
        "num_classes": _attr(record, "", "c_dim", where),
        "mapping_layers": mapping_layers,
        "mapping_lr_mul": lr_mul,
        "w_avg_beta": float(w_avg_beta),
        "channel_base": base,
        "channel_max": cmax,
        "num_bf16_res": _num_low_precision(where, blocks),
        "conv_clamp": _clamp(conv_clamp),
    }


def _discriminator_config(record: NetworkRecord, where: str) -> dict[str, Any]:
    """The stylegan2_d fields of an NVIDIA Discriminator, every field the zoo cannot represent refused by name."""
    res, channels = _attr(record, "", "img_resolution", where), _attr(record, "", "img_channels", where)
    blocks = _blocks(record, "", where)
    epilogue = blocks.pop(4, None)
    if epilogue is None or sorted(blocks) != [2**i for i in range(3, int(math.log2(res)) + 1)]:
        raise _fail(where, f"discriminator blocks {sorted(blocks)} (and the b4 epilogue) do not run from "
                    f"img_resolution {res} down to 8")
    for r, block in list(blocks.items()) + [(4, epilogue)]:
        _require(where, f"b{r}.architecture", block.attributes.get("architecture"), "resnet",
                 "the zoo's discriminator is StyleGAN2's default residual architecture")
    convs = {f"b{r}.{n}": blocks[r].submodules[n] for r in blocks for n in ("fromrgb", "conv0", "conv1")
             if n in blocks[r].submodules} | {"b4.conv": _sub(record, "b4.conv", where)}
    for name, layer in convs.items():
        _require(where, f"{name}.activation", layer.attributes.get("activation"), "lrelu", "NVIDIA's default")
    for r in blocks:
        _require(where, f"b{r}.skip.activation", _sub(record, f"b{r}.skip", where).attributes.get("activation"), "linear",
                 "NVIDIA's residual skip")
    for name in ("fc", "out"):
        _require(where, f"b4.{name} lr_multiplier (bias_gain)", float(_sub(record, f"b4.{name}", where).attributes.get("bias_gain",
                 1.0)), 1.0, "NVIDIA's epilogue")
    conv_clamp = _same(where, "conv_clamp", {k: v.attributes.get("conv_clamp") for k, v in convs.items()})
    base, cmax = _channels(where, record.init_kwargs, None)
    mbstd_group, mbstd_channels = 0, 1
    if "mbstd" in epilogue.submodules:
        mbstd_group = _attr(record, "b4.mbstd", "group_size", where)
        mbstd_channels = _attr(record, "b4.mbstd", "num_channels", where)
        if mbstd_group is None:
            raise _fail(where, "b4.mbstd.group_size = None (minibatch stddev over the whole batch): the zoo's "
                        "discriminator needs a fixed group size (mbstd_group_size)")
    num_classes = _attr(record, "", "c_dim", where)
    mapping_layers = 8
    if num_classes:
        mapping_layers, lr_mul = _mapping_config(record, "mapping", where)
        _require(where, "mapping lr_multiplier", lr_mul, _D_MAPPING_LR_MUL, "the zoo's discriminator maps labels at "
                 "NVIDIA's default multiplier")
        cmap = epilogue.attributes.get("cmap_dim")
        c4 = min(base // 4, cmax)
        _require(where, "cmap_dim", cmap, c4, "the zoo projects onto an embedding as wide as its 4x4 features")
    return {
        "image_shape": [res, res, channels],
        "num_classes": num_classes,
        "channel_base": base,
        "channel_max": cmax,
        "mbstd_group": mbstd_group,
        "mbstd_channels": mbstd_channels,
        "mapping_layers": mapping_layers,
        "num_bf16_res": _num_low_precision(where, blocks),
        "conv_clamp": _clamp(conv_clamp),
    }


_Rule = tuple[str, str, Callable[[np.ndarray], np.ndarray]]  # (collection, zoo path, layout change)


def _dense(w: np.ndarray) -> np.ndarray:
    return rearrange(w, "o i -> i o")


def _conv(w: np.ndarray) -> np.ndarray:
    return rearrange(w, "o i h w -> h w i o")


def _same_layout(x: np.ndarray) -> np.ndarray:
    return x


def _fc_chw_to_hwc(w: np.ndarray) -> np.ndarray:
    return rearrange(w, "o (c h w) -> (h w c) o", h=4, w=4)


def _const(x: np.ndarray) -> np.ndarray:
    return rearrange(x, "c h w -> h w c")


def _rule(name: str) -> _Rule | None:
    """Where one NVIDIA tensor goes in the zoo's variables and how its layout changes (the docstring's table)."""
    parts = name.split(".")
    path = "/".join(parts)
    leaf = parts[-1]
    if name == "mapping.w_avg" or leaf == "noise_const":
        return "buffers", path, _same_layout
    if name == "synthesis.b4.const":
        return "params", path, _const
    if name == "b4.fc.weight":
        return "params", path, _fc_chw_to_hwc
    if leaf == "weight":
        layer = parts[-2]
        dense = layer in ("affine", "embed", "fc", "out") or (layer.startswith("fc") and layer[2:].isdigit())
        return "params", path, _dense if dense else _conv
    if leaf in ("bias", "noise_strength"):
        return "params", path, _same_layout
    return None


def _nest(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _expected(model: str, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every variable the zoo's model has for this config, "collection:path" -> shape."""
    import jax
    from flax import traverse_util

    from zoo import registry

    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    module = registry.create_model(model, **fields)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *module.example_inputs()))
    return {f"{c}:{'/'.join(k)}": tuple(v.shape) for c, tree in shapes.items()
            for k, v in traverse_util.flatten_dict(tree).items()}


def _convert(record: NetworkRecord, model: str, config: dict[str, Any], where: str) -> Converted:
    """Map every tensor by the table, check each against the zoo's shapes; leftovers on either side are errors."""
    tensors = record.tensors()
    dropped = _check_filters(where, tensors)
    expected = _expected(model, config)
    out: dict[str, dict[str, np.ndarray]] = {"params": {}, "buffers": {}}
    unmapped, wrong = [], []
    for name in sorted(set(tensors) - dropped):
        rule = _rule(name)
        key = rule and f"{rule[0]}:{rule[1]}"
        if rule is None or key not in expected:
            unmapped.append(name)
            continue
        value = np.asarray(tensors[name])
        if value.dtype.kind != "f":
            raise _fail(where, f"{name} has dtype {value.dtype}; a StyleGAN2 network's tensors are floats")
        value = rule[2](value.astype(np.float32))
        if value.shape != expected[key]:
            wrong.append(f"{name} {tuple(np.asarray(tensors[name]).shape)} -> {key} {value.shape}, the zoo's model "
                         f"has {expected[key]}")
            continue
        out[rule[0]][rule[1]] = np.array(value, np.float32, order="C")  # ascontiguousarray makes scalars 1-d
    if unmapped:
        raise _fail(where, f"tensors with no place in the zoo's {model}: {', '.join(unmapped)}; the network has "
                    "layers StyleGAN2's default architecture does not")
    if wrong:
        raise _fail(where, "tensor shapes the zoo's model cannot hold (embed/layer features other than w_dim, "
                    f"another kernel size, channel_base/channel_max?): {'; '.join(wrong)}")
    missing = sorted(set(expected) - {f"{c}:{k}" for c, flat in out.items() for k in flat})
    if missing:
        raise _fail(where, f"the network lacks what the zoo's {model} needs: {', '.join(missing)}")
    return Converted(model, config, _nest(out["params"]), _nest(out["buffers"]))


def convert_generator(record: NetworkRecord, where: str = "generator") -> Converted:
    """An NVIDIA Generator record -> stylegan2_g config and variables."""
    return _convert(record, "stylegan2_g", _generator_config(record, where), where)


def convert_discriminator(record: NetworkRecord, where: str = "discriminator") -> Converted:
    """An NVIDIA Discriminator record -> stylegan2_d config and variables."""
    return _convert(record, "stylegan2_d", _discriminator_config(record, where), where)


def convert_network(snapshot: Mapping[str, Any], net: str, where: str) -> Converted:
    """The network `net` of a read snapshot, converted; a net the snapshot lacks is named with those it has."""
    if net not in NETS:
        raise WeightsError(f"--net {net!r} is not one of {', '.join(NETS)}")
    record = snapshot.get(net)
    if not isinstance(record, NetworkRecord):
        held = nvidia_pickle.network_names(snapshot)
        raise WeightsError(f"{where} has no network {net!r}; it holds {', '.join(held) or 'no networks'} (pass one "
                           "of them with --net)")
    label = f"{where} [{net}, {record.class_name}]"
    if net == "D":
        return convert_discriminator(record, label)
    return convert_generator(record, label)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def convert_stylegan2(pkl_path: str | os.PathLike, out_path: str | os.PathLike, net: str = "G_ema") -> pathlib.Path:
    """Convert network `net` of NVIDIA's pickle at `pkl_path` to a zoo export at `out_path` (written atomically).

    Load the result with `zoo.pretrained.load(out_path)` or `zoo.create_model(out_path, pretrained=True)`.
    """
    from zoo import pretrained

    pkl_path, out_path = pathlib.Path(pkl_path), pathlib.Path(out_path)
    if net not in NETS:
        raise WeightsError(f"--net {net!r} is not one of {', '.join(NETS)}")
    _check_writable(out_path)
    snapshot = read_network_pickle(pkl_path)
    converted = convert_network(snapshot, net, str(pkl_path))
    metadata = {"source": pkl_path.name, "source_sha256": _sha256(pkl_path), "net": net,
                "nvidia_class": snapshot[net].class_name, "converted_by": "zoo.convert stylegan2",
                "licence": "that of the source network pickle"}
    try:
        return pretrained.export(out_path, converted.model, converted.model_config, converted.params, metadata,
                                 collections={"buffers": converted.buffers} if converted.buffers else None)
    except (OSError, SafetensorError) as error:
        raise WeightsError(f"cannot write {out_path} ({error}); pass a writable --out path") from None


def _check_writable(out_path: pathlib.Path) -> None:
    """Fail before reading the pickle when `out_path` is a directory or its directory cannot be written."""
    if out_path.is_dir():
        raise WeightsError(f"--out {out_path} is a directory; pass a file path such as {out_path / 'G_ema.safetensors'}")
    existing = next(p for p in (out_path.parent.absolute(), *out_path.parent.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise WeightsError(f"cannot write {out_path}: {existing} is not a writable directory; pass a writable --out path")
