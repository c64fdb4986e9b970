"""Pretrained weights in a framework-light, versioned format, and `load(name_or_path)`.

A pretrained model is one `.safetensors` file: the params as named arrays (keys are the linen
param paths joined by "/") and, in the file's string metadata, the format version, the registry
model name and its constructor fields as JSON. Nothing in it depends on how flax or orbax
serialise state, so a file written today keeps loading after either changes; and no pickle is
involved. Published weights are registry entries with a URL (or a file bundled in the package)
and a sha256 that is checked before the file is read, and for a download before it takes its name
in the cache. Every bad file is a `zoo.errors.WeightsError` naming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import pathlib
import urllib.request
from typing import Any, BinaryIO, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import EinopsError
from flax import traverse_util
from flax.errors import FlaxError
from safetensors.numpy import load_file, save_file

from zoo import files, registry
from zoo.errors import WeightsError

FORMAT = "deepfake-zoo.pretrained"
FORMAT_VERSION = 1
_COLLECTION_SEP = ":"
_EXPORTED = ("batch_stats",)  # state collections inference needs; spectral-norm vectors only matter in training
WEIGHTS_DIR = pathlib.Path(__file__).with_name("weights")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A published checkpoint: where it lives (an https URL or a file bundled in zoo/weights) and its sha256."""

    sha256: str
    url: str = ""
    bundled: str = ""
    description: str = ""


REGISTRY: dict[str, Entry] = {
    "vae_digits": Entry(
        sha256="bd4ae8efd7867a052c963cf7655c53cb0ca4d04b488fd24d6657c65a09c6d0ad",
        bundled="vae_digits.safetensors",
        description="configs/vae_digits.py, 3,000 steps; test neg-ELBO 22.67 nats, IWAE(k=200) 22.02 on the 297 held-out digits",
    ),
}


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded model: the linen module, its params, and the metadata it was saved with."""

    module: nn.Module
    params: Any
    config: dict[str, Any]
    collections: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        """What `module.apply` takes: params plus any state collections (batch-norm statistics)."""
        return {"params": self.params, **self.collections}


def export(path: str | os.PathLike, model: str, model_config: Mapping[str, Any], params: Any,
           metadata: Mapping[str, Any] | None = None, collections: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write params (and state collections such as "batch_stats") and model config to one .safetensors file.

    The write is atomic. A collection's arrays are stored under "<collection>:<path>" keys, so a
    params-only reader of older versions sees them as unexpected keys rather than wrong params.
    """
    path = pathlib.Path(path)
    registry.create_model(model, **_constructor_fields(model_config))
    flat = _flatten(params)
    for name, tree in (collections or {}).items():
        flat |= {f"{name}{_COLLECTION_SEP}{k}": v for k, v in _flatten(tree).items()}
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": model,
        "model_config": json.dumps(dict(model_config), sort_keys=True),
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True, default=str),
    }
    with files.atomic_write(path) as tmp:
        save_file(flat, str(tmp), metadata=header)
    return path


def load(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Pretrained:
    """A registered name (downloaded and sha256-verified) or a .safetensors path -> module, params, config."""
    path = pathlib.Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        if name not in REGISTRY:
            raise FileNotFoundError(
                f"{name!r} is neither a file nor a registered pretrained model; registered: "
                f"{', '.join(sorted(REGISTRY)) or '(none)'}; export one with train.export"
            )
        path = fetch(name, REGISTRY[name], cache_dir)
    return read(path)


def read(path: str | os.PathLike) -> Pretrained:
    """Read and validate one exported file: format version, model and config, every array's shape and dtype."""
    path = pathlib.Path(path)
    header = _header(path)
    version = _format_version(path, header)
    model_config = _json_field(path, header, "model_config", dict)
    module = _module(path, header, model_config)
    groups: dict[str, dict[tuple[str, ...], np.ndarray]] = {}
    for key, value in load_file(str(path)).items():
        collection, _, name = key.rpartition(_COLLECTION_SEP)
        groups.setdefault(collection or "params", {})[tuple(name.split("/"))] = value
    trees = {c: traverse_util.unflatten_dict(flat) for c, flat in groups.items()}
    params = trees.pop("params", {})
    _check_params(path, module, params, trees)
    config = {"model": header["model"], "model_config": model_config, "format_version": version,
              "metadata": _json_field(path, header, "metadata", dict, default="{}")}
    return Pretrained(module, jax.tree.map(jnp.asarray, params), config, jax.tree.map(jnp.asarray, trees))


def _header(path: pathlib.Path) -> dict[str, str]:
    """The file's string metadata, once it is known to be this zoo's format."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except Exception as error:  # noqa: BLE001  (any parse failure means: not a weights file)
        raise WeightsError(f"{path} is not a readable .safetensors weights file ({error})") from error
    if header.get("format") != FORMAT:
        raise WeightsError(
            f"{path} is not a {FORMAT} file (format={header.get('format')!r}); export it with train.export"
        )
    return header


def _format_version(path: pathlib.Path, header: Mapping[str, str]) -> int:
    """The file's format version, an integer this zoo can read, or WeightsError saying why not."""
    raw = header.get("format_version")
    try:
        version = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise WeightsError(
            f"{path} has format_version {raw!r} in its metadata, not an integer; the file is damaged or was not "
            "written by train.export: re-export it"
        ) from None
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{path} has format version {version}; this zoo reads up to {FORMAT_VERSION}: upgrade deepfake-zoo"
        )
    if version < 1:
        raise WeightsError(f"{path} has format version {version}; versions start at 1: re-export it with train.export")
    return version


def _json_field(path: pathlib.Path, header: Mapping[str, str], field: str, kind: type,
                default: str | None = None) -> Any:
    """A JSON-encoded metadata field of the expected kind, or WeightsError naming the file and the field."""
    raw = header.get(field, default)
    if raw is None:
        raise WeightsError(f"{path} has no {field!r} in its metadata, so its model cannot be rebuilt; re-export it "
                           "with train.export")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path} has a {field!r} that is not valid JSON ({error}); re-export it") from None
    if not isinstance(value, kind):
        raise WeightsError(f"{path} has a {field!r} of type {type(value).__name__}, expected a JSON object; "
                           "re-export it")
    return value


def _module(path: pathlib.Path, header: Mapping[str, str], model_config: Mapping[str, Any]) -> nn.Module:
    """The registry model the file names, built with its config; WeightsError if this zoo cannot build it."""
    model = header.get("model")
    if not model:
        raise WeightsError(f"{path} names no model in its metadata; re-export it with train.export")
    if model not in registry.list_models():
        raise WeightsError(f"{path} holds model {model!r}, which this zoo does not have (it has "
                           f"{', '.join(registry.list_models())}); check the zoo version it was exported with")
    _check_model_config(path, model, model_config)
    try:
        return registry.create_model(model, **_constructor_fields(model_config))
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{path} holds model {model!r} with config {dict(model_config)}, which this zoo cannot "
                           f"build ({error}); check the zoo version it was exported with") from error


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "Dtype": (lambda v: isinstance(v, str), "a dtype name such as \"float32\""),
    "Sequence[int]": (lambda v: isinstance(v, list) and all(_KINDS["int"][0](x) for x in v), "a list of integers"),
    "tuple[int, int, int]": (lambda v: isinstance(v, list) and len(v) == 3 and all(_KINDS["int"][0](x) for x in v),
                             "a list of 3 integers"),
}


def _check_model_config(path: pathlib.Path, model: str, model_config: Mapping[str, Any]) -> None:
    """Every field in the file's model_config is a constructor field of `model` holding a JSON value of its kind.

    The config comes from the file, so a damaged one must be named here rather than fail deep inside the model.
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(registry.model_class(model))}
    for key, value in model_config.items():
        if key not in fields or key in ("parent", "name"):
            raise WeightsError(f"{path} has model_config field {key!r}, which model {model!r} does not have (fields: "
                               f"{', '.join(registry.model_fields(model))}); re-export it with train.export")
        check, kind = _KINDS.get(fields[key], (lambda v: True, ""))
        if not check(value):
            raise WeightsError(f"{path} has model_config {key} = {value!r}, expected {kind}; re-export it with "
                               "train.export")


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(jax.device_get(v)) for k, v in traverse_util.flatten_dict(tree).items()}


def fetch(name: str, entry: Entry, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The verified local file for a registry entry, downloading it into the cache if needed."""
    what = f"pretrained {name!r}"
    if entry.bundled:
        path = WEIGHTS_DIR / entry.bundled
        verify_sha256(path, entry.sha256, what=what, fix="the bundled file was changed: reinstall deepfake-zoo")
        return path
    path = files.cache_dir(cache_dir) / f"{name}-{entry.sha256[:12]}.safetensors"
    if not path.exists():
        return download(entry.url, path, entry.sha256, what=what)
    verify_sha256(path, entry.sha256, what=what, fix=f"delete {path} and retry, or check the URL {entry.url}")
    return path


def download(url: str, path: pathlib.Path, expected_sha256: str, *, what: str) -> pathlib.Path:
    """Download `url` to `path`, which it reaches only once its sha256 is `expected_sha256`.

    The bytes go to a temporary file beside `path` and are renamed into place after the check, so an
    interrupted or tampered download never takes the name the cache trusts.
    """
    with files.atomic_write(path) as tmp:
        with open(tmp, "wb") as out:
            digest = _copy_hashing(url, out, what=what, path=path)
        if digest != expected_sha256:
            raise WeightsError(
                f"sha256 mismatch for {what}: the download from {url} has {digest}, expected {expected_sha256}; "
                f"it was deleted. Retry, or download it by hand, check its sha256 is {expected_sha256} and put it "
                f"at {path}"
            )
    return path


def _copy_hashing(url: str, out: BinaryIO, *, what: str, path: pathlib.Path) -> str:
    """Copy `url` into `out` and return its sha256; a failed download is a WeightsError saying where to put a copy."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response:
            while chunk := response.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise WeightsError(f"could not download {what} from {url} ({error}); download it by hand and put it at "
                           f"{path}") from error
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, *, what: str, fix: str) -> str:
    """The file's sha256 if it is `expected`; otherwise WeightsError naming both hashes, the file and `fix`."""
    digest = sha256(path)
    if digest != expected:
        raise WeightsError(f"sha256 mismatch for {what}: {path} has {digest}, expected {expected}; {fix}")
    return digest


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256 as 64 hex digits, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _constructor_fields(model_config: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in model_config.items()}
    if "dtype" in fields:
        fields["dtype"] = jnp.dtype(fields["dtype"])
    return fields


_UNBUILDABLE = (TypeError, ValueError, ArithmeticError, EinopsError, FlaxError)


def _check_params(path: pathlib.Path, module: nn.Module, params: Any, collections: Mapping[str, Any]) -> None:
    """Every array the model needs is present with its shape and dtype; a float16 file must not load silently."""
    try:
        variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *module.example_inputs()))
    except _UNBUILDABLE as error:  # a model_config of the right types with impossible values (a zero width...)
        raise WeightsError(f"{path} holds model {type(module).__name__} with a config it cannot be built with "
                           f"({type(error).__name__}: {error}); re-export it with train.export") from error
    expected = {"params": variables["params"]} | {c: v for c, v in variables.items() if c in _EXPORTED}
    given = {"params": params, **collections}
    want = {_key(c, k): v for c, tree in expected.items() for k, v in traverse_util.flatten_dict(tree).items()}
    got = {_key(c, k): v for c, tree in given.items() for k, v in traverse_util.flatten_dict(tree).items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise WeightsError(
            f"{path} does not match model {module.__class__.__name__}: missing {missing}, unexpected {extra}"
        )
    wrong = [f"{k}: {got[k].shape} != {want[k].shape}" for k in want if tuple(got[k].shape) != tuple(want[k].shape)]
    if wrong:
        raise WeightsError(f"{path} has params of the wrong shape for its model config: {'; '.join(wrong)}")
    cast = [f"{k}: {np.dtype(got[k].dtype)} != {np.dtype(want[k].dtype)}" for k in want
            if np.dtype(got[k].dtype) != np.dtype(want[k].dtype)]
    if cast:
        raise WeightsError(f"{path} has arrays of the wrong dtype for its model config: {'; '.join(cast)}; re-export "
                           "it from a run with this config (train.export) rather than casting the file")


def _key(collection: str, path: tuple[str, ...]) -> str:
    name = "/".join(path)
    return name if collection == "params" else f"{collection}{_COLLECTION_SEP}{name}"
