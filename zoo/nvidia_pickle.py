"""Reads NVIDIA's StyleGAN2 network pickles into plain records, never importing or running anything they hold.

A stylegan2-ada-pytorch or stylegan3 snapshot (`network-snapshot-*.pkl`, the published `ffhq.pkl`...) is a
plain `pickle.dump` of a dict {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...}. Each network
is a `torch_utils.persistence` object: its pickle calls `_reconstruct_persistent_obj(meta)`, where meta holds
the class's whole module source (`module_src`), which NVIDIA's loader `exec`s, and `state`, the torch
module's `__dict__` ('_parameters', '_buffers', '_modules', '_init_args', '_init_kwargs' and plain
attributes such as `weight_gain` or `architecture`). Tensors are `torch._utils._rebuild_tensor_v2` (or
`_rebuild_parameter`) over storages pickled as `torch.storage._load_from_bytes(b)`, `b` being a legacy
(non-zip) torch.save stream of that one storage, read here by `zoo.torch_weights.load_storage_bytes`.

The unpickler admits only those globals, each mapped to a stand-in made afresh for every file:
`_reconstruct_persistent_obj` returns a record of the state (the source is never read, compiled or
imported), `dnnlib.util.EasyDict` is a dict, `collections.OrderedDict`, `builtins.set`, torch's rebuild
functions, storage types and dtypes are `zoo.torch_weights`' stand-ins, and numpy scalars and arrays (the
state holds `np.float64` gains) are rebuilt from their raw bytes for numeric dtypes only. Any other global
is refused with `UnsafePickleError` naming it before anything runs; REDUCE may call only the allow-listed
callables; BUILD (`__setstate__`) is refused on everything except the one numpy dtype/array BUILD that
numpy's own pickles carry, applied to the object just made by that REDUCE and checked field by field.
Plain `torch.nn` modules are refused too: every class in NVIDIA's networks is a persistent class.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import pickle
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from zoo.errors import WeightsError
from zoo.torch_weights import (
    _LEGACY_MAGIC,
    _MALFORMED,
    UnsafePickleError,
    _allowed,
    _Call,
    _DType,
    _PickleBytes,
    _StandIn,
    _StorageType,
    _Tensor,
    _Unpickler,
    load_storage_bytes,
)

__all__ = ["NetworkRecord", "UnsafePickleError", "network_names", "read_network_pickle"]

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_KINDS = "biufc"
_TORCH_INTERNALS = ("training",)  # module flags that are not the network's own attributes


@dataclasses.dataclass(frozen=True)
class NetworkRecord:
    """One persistent network object as data: what NVIDIA's class was called and the state it was pickled with.

    `parameters` and `buffers` are float arrays in NVIDIA's layout (OIHW weights, [out, in] dense
    weights); a None parameter (a layer without bias) is left out. `attributes` are the module's plain
    fields (`architecture`, `conv_clamp`, `weight_gain`...), numpy scalars as Python numbers. The class's
    source code is not kept: it was never read.
    """

    class_name: str
    init_args: tuple[Any, ...]
    init_kwargs: dict[str, Any]
    parameters: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    submodules: dict[str, NetworkRecord]
    attributes: dict[str, Any]

    def get(self, path: str) -> NetworkRecord:
        """The submodule at a dotted path ("synthesis.b64.conv0"); KeyError naming the missing part."""
        record = self
        for part in path.split(".") if path else []:
            if part not in record.submodules:
                raise KeyError(f"{record.class_name} has no submodule {part!r} (has {', '.join(record.submodules)})")
            record = record.submodules[part]
        return record

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Every parameter and buffer of this network and its submodules under dotted torch names."""
        out = {f"{prefix}{k}": v for k, v in (self.parameters | self.buffers).items()}
        for name, sub in self.submodules.items():
            out |= sub.tensors(f"{prefix}{name}.")
        return out


@dataclasses.dataclass(frozen=True)
class _Persistent(_StandIn):
    """What `_reconstruct_persistent_obj(meta)` gives here: the class name and the pickled state, nothing run."""

    class_name: str
    state: Mapping[str, Any]

    def _what(self) -> str:
        """The persistent object, in the refusal message."""
        return f"the persistent {self.class_name} record"


def _reconstruct_persistent_obj(meta: Any) -> _Persistent:
    """NVIDIA's persistence hook, as data: refuses anything but a class instance, and never reads `module_src`."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"_reconstruct_persistent_obj needs a meta dict, got {type(meta).__name__}")
    kind = meta.get("type")
    if kind == "module":
        raise UnsafePickleError(
            "refusing a pickled Python module (torch_utils.persistence meta type 'module'): it is source code that "
            "only exists by being executed; a StyleGAN2 network pickle holds class instances (type 'class')")
    if kind != "class":
        raise UnsafePickleError(f"refusing torch_utils.persistence meta of type {kind!r}; only 'class' is known")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, Mapping):
        raise ValueError("a persistent object's meta needs a class_name string and a state dict")
    return _Persistent(name, state)


def _refuse_easydict_build(*_: Any) -> None:
    raise UnsafePickleError("refusing to modify a dnnlib.util.EasyDict with the pickle BUILD opcode: NVIDIA's "
                            "pickles never do this, so the file was crafted; do not load it")


class _EasyDict(dict):
    """dnnlib.util.EasyDict as a plain dict (its attribute access is not needed to read it)."""

    __setstate__ = _refuse_easydict_build


@dataclasses.dataclass
class _NumpyDtype:
    """numpy.dtype(spec, align, copy) of a numeric kind; numpy's pickle then BUILDs its byte order onto it once."""

    dtype: np.dtype
    built: bool = False

    def __setstate__(self, state: Any) -> None:
        """Accepts only numpy's (version, byteorder, None, None, None, ...) state of a plain numeric dtype."""
        if (self.built or not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise UnsafePickleError(f"refusing a numpy dtype state {state!r}: only a plain numeric dtype's is allowed")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])
        self.built = True


@dataclasses.dataclass
class _NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, ...): empty until numpy's one BUILD gives shape, dtype, bytes."""

    value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        """(version, shape, dtype, fortran, raw bytes) of a numeric array; a list instead of bytes is object data."""
        if self.value is not None or not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError("refusing a numpy array state that numpy's pickles never write")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _NumpyDtype):
            raise UnsafePickleError("refusing a numpy array whose dtype is not a numeric numpy dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError(f"refusing a numpy array whose data is a {type(raw).__name__}, not raw bytes "
                                    "(object arrays hold pickled Python objects)")
        shape = tuple(int(n) for n in shape)
        if any(n < 0 for n in shape) or math.prod(shape) * dtype.dtype.itemsize != len(raw):
            raise ValueError(f"numpy array of shape {shape} and dtype {dtype.dtype} with {len(raw)} data bytes")
        self.value = np.frombuffer(bytes(raw), dtype.dtype).reshape(shape, order="F" if fortran else "C").copy()


@dataclasses.dataclass(frozen=True)
class _NdarrayType(_StandIn):
    """numpy.ndarray, only as the first argument of `_reconstruct`."""


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> _NumpyDtype:
    """A numeric dtype from its pickled type string ('f8', 'i8', 'b1'...); object, string and record dtypes refused."""
    if not isinstance(spec, str) or len(spec) > 8 or not spec.replace("<", "").replace(">", "").isalnum():
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: only plain numeric dtypes are allowed")
    dtype = np.dtype(spec)
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r} (kind {dtype.kind!r}): only numeric dtypes are "
                                "allowed; an object dtype holds pickled Python objects")
    return _NumpyDtype(dtype)


def _numpy_scalar(dtype: Any, raw: Any) -> Any:
    """numpy.core.multiarray.scalar(dtype, bytes) as a Python number."""
    if not isinstance(dtype, _NumpyDtype) or not dtype.built or not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError("refusing a numpy scalar that is not a numeric dtype with its raw bytes")
    if len(raw) != dtype.dtype.itemsize:
        raise ValueError(f"numpy {dtype.dtype} scalar with {len(raw)} bytes")
    return np.frombuffer(bytes(raw), dtype.dtype)[0].item()


def _numpy_reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _NumpyArray:
    """numpy.core.multiarray._reconstruct(numpy.ndarray, ...): a placeholder the following BUILD fills."""
    if not isinstance(cls, _NdarrayType):
        raise UnsafePickleError("refusing numpy _reconstruct of anything but numpy.ndarray")
    return _NumpyArray()


_CALLABLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): load_storage_bytes,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): _numpy_dtype,
    **{(m, "scalar"): _numpy_scalar for m in _NUMPY_MODULES},
    **{(m, "_reconstruct"): _numpy_reconstruct for m in _NUMPY_MODULES},
}


def _describe(obj: Any) -> str:
    """What a pickle tried to call or modify, for a refusal message."""
    return obj._what() if isinstance(obj, _StandIn) else f"a {type(obj).__name__}"


def _load_reduce(self: _NetworkUnpickler) -> None:
    self._check_callable(self.stack[-2], "call")
    pickle._Unpickler.load_reduce(self)


def _load_newobj(self: _NetworkUnpickler) -> None:
    self._check_class(self.stack[-2])
    pickle._Unpickler.load_newobj(self)


def _load_newobj_ex(self: _NetworkUnpickler) -> None:
    self._check_class(self.stack[-3])
    pickle._Unpickler.load_newobj_ex(self)


def _load_build(self: _NetworkUnpickler) -> None:
    target = self.stack[-2]
    if not isinstance(target, (_NumpyDtype, _NumpyArray)):
        what = "a dnnlib.util.EasyDict" if isinstance(target, _EasyDict) or target is self.easydict else \
            _describe(target)
        raise UnsafePickleError(f"refusing to modify {what} with the pickle BUILD opcode: NVIDIA's "
                                "network pickles never do this, so the file was crafted; do not load it")
    pickle._Unpickler.load_build(self)


class _NetworkUnpickler(_Unpickler):
    """The state-dict unpickler of `zoo.torch_weights` with NVIDIA's network globals added and opcodes guarded."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file: _PickleBytes) -> None:
        """Reads one pickle from `file`; every stand-in, the EasyDict class included, belongs to this reader."""
        super().__init__(file, _no_persistent_storage)
        self.easydict = type("EasyDict", (_EasyDict,), {})
        self._allowed = {
            **_allowed(),
            **{key: _Call(fn, ".".join(key)) for key, fn in _CALLABLES.items()},
            ("numpy", "ndarray"): _NdarrayType(),
        }

    def find_class(self, module: str, name: str) -> Any:
        """The stand-in for an allowed global; a TF pickle is named as such, anything else is UnsafePickleError."""
        if module.startswith("dnnlib.tflib"):
            raise WeightsError(
                f"this is a legacy TensorFlow StyleGAN/StyleGAN2 pickle ({module}.{name}), which holds TensorFlow "
                "graphs; convert it with NVIDIA's stylegan2-ada-pytorch legacy.py (in a sandbox) or use the "
                "PyTorch pickles listed in the README")
        if (module, name) == ("dnnlib.util", "EasyDict"):
            return self.easydict
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a StyleGAN2 network pickle may only name "
                "torch_utils.persistence._reconstruct_persistent_obj, dnnlib.util.EasyDict, torch tensors and "
                "storages, numpy numbers and a few containers; nothing in the file was run") from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuses: NVIDIA's plain pickles have no persistent ids (a torch.save file has)."""
        raise pickle.UnpicklingError(f"persistent id {pid!r}: this is a torch.save stream, not a plain network pickle")

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        self._check_callable(klass, "instantiate")
        super()._instantiate(klass, args)

    def _check_callable(self, func: Any, verb: str) -> None:
        """REDUCE, INST and OBJ may call only the allow-listed functions and the EasyDict class."""
        if not (isinstance(func, _Call) or func is self.easydict):
            raise UnsafePickleError(f"refusing to {verb} {_describe(func)} from the pickle: only the allow-listed "
                                    "functions may be called; the file was crafted, do not load it")

    def _check_class(self, cls: Any) -> None:
        """NEWOBJ may create only EasyDict instances (NVIDIA's only pickled class besides persistent objects)."""
        if cls is not self.easydict:
            raise UnsafePickleError(f"refusing to create an instance of {_describe(cls)} from the pickle: only "
                                    "dnnlib.util.EasyDict may be created; the file was crafted, do not load it")


def _no_persistent_storage(key: str, dtype: np.dtype, numel: int) -> None:
    raise pickle.UnpicklingError(f"storage reference {key!r}: this is a torch.save stream, not a network pickle")


class _Plain:
    """Turns the unpickled stand-ins into records, numpy arrays and Python values, each shared object once."""

    def __init__(self) -> None:
        self._memo: dict[int, Any] = {}

    def __call__(self, obj: Any) -> Any:
        """The plain value of `obj`; a shared (or cyclic) object is converted once and reused."""
        key = id(obj)
        if key in self._memo:
            return self._memo[key]
        if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
            return obj
        value = self._convert(obj)
        self._memo[key] = value
        return value

    def _convert(self, obj: Any) -> Any:
        if isinstance(obj, _Persistent):
            return self.record(obj)
        if isinstance(obj, _Tensor):
            return obj.numpy()
        if isinstance(obj, _NumpyArray):
            if obj.value is None:
                raise ValueError("a numpy array was never given its data")
            return obj.value
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, (_DType, _StorageType, _NumpyDtype)):
            return np.dtype(obj.dtype)
        if isinstance(obj, _Call):
            return f"<{obj.name}>"
        if isinstance(obj, Mapping):
            return {self(k): self(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set, frozenset)):
            return type(obj)([self(v) for v in obj])
        raise ValueError(f"unexpected {type(obj).__name__} in the pickle")

    def record(self, obj: _Persistent) -> NetworkRecord:
        """A persistent object's state split into tensors, submodules, init arguments and attributes."""
        state = obj.state

        def tensors(field: str) -> dict[str, np.ndarray]:
            out = {}
            for name, value in (state.get(field) or {}).items():
                if value is None:
                    continue
                if not isinstance(value, _Tensor):
                    raise ValueError(f"{obj.class_name}.{field}[{name!r}] is a {type(value).__name__}, not a tensor")
                out[str(name)] = value.numpy()
            return out

        submodules = {}
        for name, value in (state.get("_modules") or {}).items():
            if value is None:
                continue
            if not isinstance(value, _Persistent):
                raise ValueError(f"{obj.class_name} submodule {name!r} is a {type(value).__name__}, not a persistent "
                                 "network object")
            submodules[str(name)] = self(value)
        init_kwargs = self(state.get("_init_kwargs") or {})
        return NetworkRecord(
            class_name=obj.class_name,
            init_args=tuple(self(state.get("_init_args") or ())),
            init_kwargs=dict(init_kwargs) if isinstance(init_kwargs, Mapping) else {},
            parameters=tensors("_parameters"),
            buffers=tensors("_buffers"),
            submodules=submodules,
            attributes={str(k): self(v) for k, v in state.items()
                        if not str(k).startswith("_") and k not in _TORCH_INTERNALS},
        )


def read_network_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """A network snapshot's top-level dict: its networks ('G', 'D', 'G_ema'...) as `NetworkRecord`s, the rest plain.

    Nothing in the file is imported or run. Every refusal or parse failure is a WeightsError naming
    the file (UnsafePickleError for a crafted one).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file; pass an NVIDIA network pickle (network-snapshot-*.pkl, ffhq.pkl, "
                           "stylegan2-ffhq-1024x1024.pkl...)")
    data = path.read_bytes()
    if not data:
        raise WeightsError(f"{path} is empty; download the network pickle again")
    if zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is a torch.save zip archive (a state dict or checkpoint), not an NVIDIA network "
                           "pickle; convert the network-snapshot-*.pkl that stylegan2-ada-pytorch or stylegan3 wrote")
    if data[:1] != pickle.PROTO:
        raise WeightsError(f"{path} is not a pickle (it starts with {data[:8]!r}; NVIDIA's network pickles start with "
                           "the protocol opcode 0x80); pass the .pkl file stylegan2-ada-pytorch or stylegan3 wrote")
    try:
        obj = _NetworkUnpickler(_PickleBytes(data)).load()
        if isinstance(obj, int) and obj == _LEGACY_MAGIC:
            raise WeightsError(f"{path} is a torch.save file (legacy format: a state dict or checkpoint), not an "
                               "NVIDIA network pickle; convert the network-snapshot-*.pkl that stylegan2-ada-pytorch "
                               "or stylegan3 wrote")
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{path} holds a {type(obj).__name__}, not the dict of networks ('G', 'D', 'G_ema', "
                               "...) that stylegan2-ada-pytorch and stylegan3 pickle")
        return {str(k): v for k, v in _Plain()(obj).items()}
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except WeightsError as error:
        raise WeightsError(str(error) if str(error).startswith(str(path)) else f"{path}: {error}") from None
    except _MALFORMED as error:
        detail = str(error) or ("the data ends early" if isinstance(error, EOFError) else "no detail")
        raise WeightsError(f"{path} is not a readable network pickle ({type(error).__name__}: {detail}); if it was "
                           "downloaded, download it again") from error


def network_names(snapshot: Mapping[str, Any]) -> list[str]:
    """The keys of a snapshot that hold networks, in file order."""
    return [k for k, v in snapshot.items() if isinstance(v, NetworkRecord)]

