"""Reads PyTorch `.pth` state dicts into numpy arrays without running pickle code or importing torch.

`torch.save` writes a pickle whose tensors point at raw storages through "persistent ids", in one
of two containers: the zip archive (torch>=1.6: `<name>/data.pkl` and `<name>/data/<key>`) or
the legacy stream (pickled magic number, protocol and sys-info, the pickled object, the sorted
storage keys, then each storage as an 8-byte element count and its raw bytes). Both are read
with a `pickle.Unpickler` whose `find_class` admits only the few globals a state dict names
(OrderedDict, the tensor/parameter rebuild functions, storage types, dtypes), each mapped to a
numpy stand-in: a file naming anything else fails with `UnsafePickleError` before it can run.
The stand-ins are built afresh for every unpickler and refuse BUILD (`__setstate__`), so a file
can neither run code nor change how this or any later file decodes (a BUILD on the `FloatStorage`
stand-in once turned every later float32 file into float16 garbage).
"""
from __future__ import annotations

import collections
import dataclasses
import io
import lzma
import os
import pathlib
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, Mapping

import ml_dtypes
import numpy as np

from zoo.errors import WeightsError

__all__ = ["UnsafePickleError", "load_state_dict", "load_storage_bytes"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
_TORCH_DTYPES: dict[str, Any] = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16, "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class UnsafePickleError(WeightsError, pickle.UnpicklingError):
    """A weights file names a global outside the state-dict allow-list, or modifies a stand-in (it could run code)."""


class _StandIn:
    """Base of the reader's own objects: BUILD on one is refused, as a state dict never needs it."""

    def __setstate__(self, state: Any) -> None:
        """Refuses, so a file cannot rewrite a storage type, dtype, rebuild function, storage or tensor."""
        raise UnsafePickleError(
            f"refusing to modify {self._what()} with the pickle BUILD opcode: torch.save never does this, so the "
            "file was crafted; do not load it"
        )

    def _what(self) -> str:
        """What the stand-in stands for, in the refusal message."""
        return f"a {type(self).__name__.lstrip('_').lower()}"


@dataclasses.dataclass(frozen=True)
class _StorageType(_StandIn):
    """Stand-in for a torch.*Storage class: only its element dtype matters."""

    dtype: np.dtype

    def _what(self) -> str:
        """The storage type's element dtype, in the refusal message."""
        return f"the {self.dtype} storage type"


@dataclasses.dataclass(frozen=True)
class _DType(_StandIn):
    """Stand-in for a torch dtype such as torch.float32 (numpy's own dtype objects are process-wide)."""

    dtype: np.dtype

    def _what(self) -> str:
        """The dtype, in the refusal message."""
        return f"the dtype {self.dtype}"


@dataclasses.dataclass(frozen=True)
class _Call(_StandIn):
    """Stand-in for an allowed callable global (a rebuild function, OrderedDict): calls it, nothing else."""

    fn: Callable[..., Any]
    name: str

    def _what(self) -> str:
        """The global the file named, in the refusal message."""
        return self.name

    def __call__(self, *args: Any) -> Any:
        """What the REDUCE opcode runs."""
        return self.fn(*args)


@dataclasses.dataclass
class _Storage(_StandIn):
    """A flat storage whose bytes may arrive after the pickle (legacy files); views share a root."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    root: _Storage | None = None
    offset: int = 0

    def array(self) -> np.ndarray:
        """The storage's elements as a 1-D array, once its bytes have been read."""
        if self.root is not None:
            return self.root.array()[self.offset:self.offset + self.numel]
        if self.data is None:
            raise ValueError("a tensor refers to a storage whose bytes are missing from the file")
        return self.data


@dataclasses.dataclass(frozen=True)
class _Tensor(_StandIn):
    """Stand-in for a rebuilt tensor: a strided view of a storage, materialised after loading."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        """A native-endian copy of the view, bounds-checked so a malformed file cannot read past its storage."""
        base = self.storage.array()
        dtype = base.dtype.newbyteorder("=")
        if len(self.shape) != len(self.stride) or self.offset < 0 or min(self.stride, default=0) < 0:
            raise ValueError(f"malformed tensor: shape {self.shape}, stride {self.stride}, offset {self.offset}")
        if 0 in self.shape:
            return np.zeros(self.shape, dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if last >= base.size:
            raise ValueError(f"tensor of shape {self.shape} reads past the end of its storage ({base.size} elements)")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.shape, strides=[s * base.itemsize for s in self.stride], writeable=False
        )
        return np.array(view, dtype=dtype)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> _Tensor:
    """torch._utils._rebuild_tensor(_v2) as a lazy view; requires_grad, hooks and metadata are dropped."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    return _Tensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    """torch._utils._rebuild_parameter(_with_state): a parameter is its data here."""
    return data


_CALLABLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


def _allowed() -> dict[tuple[str, str], _StandIn]:
    """A fresh stand-in for every allowed global, so nothing one file reaches is shared with another."""
    return {
        **{key: _Call(fn, ".".join(key)) for key, fn in _CALLABLES.items()},
        **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
        **{("torch", name): _DType(np.dtype(dtype)) for name, dtype in _TORCH_DTYPES.items()},
    }


class _Unpickler(pickle._Unpickler):
    """Unpickler with an allow-list of globals; storages come from `read_storage(key, dtype, numel)`.

    Python's own unpickler rather than the C one, which allocates whatever size a BINBYTES or BINUNICODE length
    field declares before reading it (up to all of memory for one damaged byte); this one reads what is there and
    fails on the short read. A state dict's pickle is small (the tensors' bytes are stored beside it), so speed
    does not matter here.
    """

    def __init__(self, file: BinaryIO, read_storage: Callable[[str, np.dtype, int], np.ndarray | None],
                 big_endian: bool = False) -> None:
        """Reads from `file`; `read_storage` returns a storage's elements or None to fill them in later."""
        super().__init__(file)
        self._read_storage = read_storage
        self._big_endian = big_endian
        self._allowed = _allowed()
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        """The stand-in for an allowed global; anything else raises UnsafePickleError naming it."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a state dict may only name tensors, storages, dtypes "
                "and collections.OrderedDict; this file may contain code (use torch.load(weights_only=True) "
                "in a sandbox if you trust it)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        """The storage a ('storage', type, key, location, numel[, view]) persistent id names."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}; expected a torch storage reference")
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        key, dtype = str(key), stype.dtype.newbyteorder(">" if self._big_endian else "<")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, int(numel), self._read_storage(key, dtype, int(numel)))
        root = self.storages[key]
        if view is None:
            return root
        view_key, offset, view_size = view
        return self.storages.setdefault(str(view_key), _Storage(dtype, int(view_size), root=root, offset=int(offset)))


class _PickleBytes(io.BytesIO):
    """In-memory pickle input whose `readline` fails at a line cut off by the end of the data, as C pickle's does.

    Python's unpickler would take the fragment, so a file truncated inside a GLOBAL opcode would be refused as
    naming a forbidden global (a crafted file) instead of reported as truncated.
    """

    def readline(self, size: int | None = -1) -> bytes:
        """The next line, newline included; UnpicklingError when the data ends before the newline."""
        line = super().readline(size)
        if not line.endswith(b"\n"):
            raise pickle.UnpicklingError("pickle data was truncated")
        return line


def _no_storage(key: str, dtype: np.dtype, numel: int) -> None:
    """read_storage for pickles that must hold no tensors (legacy headers, key lists)."""
    raise pickle.UnpicklingError(f"unexpected storage reference {key!r} outside the state dict")


def _read_zip(path: str | os.PathLike) -> Any:
    """The unpickled object of a zip-format file, storages read from the archive; a damaged archive is named."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _unpickle_zip(path, zf)
    except _DAMAGED_ZIP as error:  # offsets, sizes or compression methods the archive's headers got wrong
        raise WeightsError(f"{path}: damaged zip archive ({type(error).__name__}: {error}); re-download the file or "
                           "re-save it with torch.save") from error


_DAMAGED_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, zlib.error, lzma.LZMAError)


def _unpickle_zip(path: str | os.PathLike, zf: zipfile.ZipFile) -> Any:
    """The state dict pickled in an open torch zip archive, its storages read from the archive's data/ entries."""
    names = zf.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise WeightsError(f"{path}: expected one data.pkl in the zip archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    order = prefix + "byteorder"
    big = order in names and zf.read(order).decode().strip() == "big"

    def read_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        raw = zf.read(f"{prefix}data/{key}")
        if len(raw) < numel * dtype.itemsize:
            raise WeightsError(f"{path}: storage {key} holds {len(raw)} bytes, needs {numel * dtype.itemsize}")
        return np.frombuffer(raw, dtype, count=numel)

    return _Unpickler(_PickleBytes(zf.read(pickles[0])), read_storage, big).load()


def _read_legacy(path: str | os.PathLike) -> Any:
    """The unpickled object of a legacy-format file, storages read after the pickle.

    Read from memory: a damaged length field then yields a short read instead of a multi-gigabyte allocation.
    """
    return _read_legacy_bytes(pathlib.Path(path).read_bytes(), path)


def load_storage_bytes(data: bytes) -> _Storage:
    """The storage in `torch.storage._load_from_bytes(data)`: how a plain `pickle.dump` of a tensor holds its bytes.

    `data` is a legacy (non-zip) torch.save stream of that one storage; a stream holding anything else is refused.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"_load_from_bytes needs the bytes of a torch.save stream, got {type(data).__name__}")
    storage = _read_legacy_bytes(bytes(data), "a storage's _load_from_bytes stream")
    if not isinstance(storage, _Storage):
        raise ValueError(f"a _load_from_bytes stream holds {type(storage).__name__}, not a storage")
    return storage


def _read_legacy_bytes(data: bytes, path: str | os.PathLike) -> Any:
    """The unpickled object of a legacy torch.save stream held in memory; `path` names it in errors."""
    with _PickleBytes(data) as f:
        header = [_Unpickler(f, _no_storage).load() for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
            raise WeightsError(f"{path}: not a PyTorch file (bad magic number or protocol {header[1]!r})")
        big = isinstance(header[2], dict) and header[2].get("little_endian") is False
        unpickler = _Unpickler(f, lambda key, dtype, numel: None, big)
        obj = unpickler.load()
        keys = _Unpickler(f, _no_storage).load()
        for key in keys:
            storage = unpickler.storages[str(key)]
            head = f.read(8)
            if len(head) != 8:
                raise WeightsError(f"{path}: file ends before storage {key}")
            (numel,) = struct.unpack(">q" if big else "<q", head)
            raw = f.read(numel * storage.dtype.itemsize)
            if numel < storage.numel or len(raw) != numel * storage.dtype.itemsize:
                raise WeightsError(f"{path}: storage {key} is truncated or shorter than its tensors need")
            storage.data = np.frombuffer(raw, storage.dtype)
    return obj


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    """Collects tensors from (nested) mappings under dotted keys; non-tensor leaves are skipped."""
    if isinstance(obj, _Tensor):
        out[prefix] = obj.numpy()
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)


_MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
              OverflowError, RecursionError, struct.error, zipfile.BadZipFile)


def _read(path: str | os.PathLike) -> Any:
    """The unpickled object of a zip or legacy file; the old tar format is named, not misparsed."""
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        if f.read(262)[257:262] == b"ustar":
            raise WeightsError(f"{path}: the pre-0.4 tar checkpoint format is not supported; re-save it with torch")
    return _read_legacy(path)


def _tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The file's tensors under dotted keys, errors raised as they come."""
    obj = _read(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save`d state dict (zip or legacy format) as numpy arrays, without pickle code.

    Every refusal or parse failure is a WeightsError naming the file (UnsafePickleError for a crafted one).
    """
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such file; pass the path of a .pth/.pt file written by torch.save")
    try:
        return _tensors(path)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except WeightsError:
        raise
    except _MALFORMED as error:
        detail = str(error) or ("the data ends early" if isinstance(error, EOFError) else "no detail")
        raise WeightsError(f"{path} is not a readable PyTorch state dict ({type(error).__name__}: {detail})") from error
