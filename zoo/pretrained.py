"""Pretrained weights in a framework-light, versioned format, and `load(name_or_path)`.

A pretrained model is one `.safetensors` file: the params as named arrays (keys are the linen
param paths joined by "/") and, in the file's string metadata, the format version, the registry
model name and its constructor fields as JSON (and, for a model that takes images of any size, as the
detectors do, the input shape its arrays were built for). Nothing in it depends on how flax or orbax
serialise state, so a file written today keeps loading after either changes; and no pickle is
involved. Published weights are registry entries with a URL (or a file bundled in the package)
and a sha256 that is checked before the file is read, and for a download before it takes its name
in the cache. Every bad file is a `zoo.errors.WeightsError` naming it. What is published, with each
checkpoint's card, is `zoo.catalogue`; third-party weights are read with `convert(name)`.

    python -m zoo.pretrained list | show NAME | verify [NAME]
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import pathlib
import sys
import urllib.request
from typing import Any, BinaryIO, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import EinopsError
from flax import traverse_util
from flax.errors import FlaxError
from safetensors.numpy import load_file, save_file

from zoo import files, registry
from zoo.catalogue import CONVERTERS, REGISTRY, Converter, Entry  # noqa: F401  (Entry, REGISTRY: public here too)
from zoo.errors import WeightsError, ZooError

FORMAT = "deepfake-zoo.pretrained"
FORMAT_VERSION = 1
_COLLECTION_SEP = ":"
# State collections inference needs (batch-norm statistics; StyleGAN2's w_avg and noise_const "buffers"; the
# spectral detectors' fitted feature "stats"); spectral-norm vectors only matter in training.
_EXPORTED = ("batch_stats", "buffers", "stats")
WEIGHTS_DIR = pathlib.Path(__file__).with_name("weights")


class UnknownWeightsError(WeightsError, FileNotFoundError):
    """A name that is neither a file nor in the catalogue (a FileNotFoundError too, as `load` always raised)."""


class PretrainedModel(NamedTuple):
    """What `zoo.create_model(name, pretrained=True)` returns: unpack as `module, variables = ...`."""

    module: nn.Module
    variables: dict[str, Any]


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
           metadata: Mapping[str, Any] | None = None, collections: Mapping[str, Any] | None = None,
           input_shape: Sequence[int] | None = None) -> pathlib.Path:
    """Write params (and state collections such as "batch_stats") and model config to one .safetensors file.

    The write is atomic. A collection's arrays are stored under "<collection>:<path>" keys, so a
    params-only reader of older versions sees them as unexpected keys rather than wrong params.
    `input_shape` ([H, W, C] of the images the model was built for) is what `read` checks the arrays of a
    model without `example_inputs` against: the detectors take any image size, and their params depend on it.
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
    if input_shape is not None:
        header["input_shape"] = json.dumps([int(d) for d in input_shape])
    with files.atomic_write(path) as tmp:
        save_file(flat, str(tmp), metadata=header)
    return path


def load(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Pretrained:
    """A registered name (downloaded and sha256-verified) or a .safetensors path -> module, params, config."""
    path = pathlib.Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        if name not in REGISTRY:
            raise UnknownWeightsError(
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
    _check_params(path, module, params, trees, _example_inputs(path, module, header))
    config = {"model": header["model"], "model_config": model_config, "format_version": version,
              "metadata": _json_field(path, header, "metadata", dict, default="{}")}
    if "input_shape" in header:
        config["input_shape"] = _json_field(path, header, "input_shape", list)
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
        raise WeightsError(f"{path} has a {field!r} of type {type(value).__name__}, expected a JSON "
                           f"{'object' if kind is dict else 'array'}; re-export it")
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
    path = entry_path(name, entry, cache_dir)
    if entry.bundled:
        verify_sha256(path, entry.sha256, what=what, fix="the bundled file was changed: reinstall deepfake-zoo")
        return path
    if not path.exists():
        return download(entry.url, path, entry.sha256, what=what)
    verify_sha256(path, entry.sha256, what=what, fix=f"delete {path} and retry, or check the URL {entry.url}")
    return path


def entry_path(name: str, entry: Entry, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where a registry entry's file is read from: zoo/weights for a bundled one, else the cache."""
    if entry.bundled:
        return WEIGHTS_DIR / entry.bundled
    return files.cache_dir(cache_dir) / f"{name}-{entry.sha256[:12]}.safetensors"


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


def _unbuildable(path: pathlib.Path, module: nn.Module, error: Exception) -> WeightsError:
    return WeightsError(f"{path} holds model {type(module).__name__} with a config it cannot be built with "
                        f"({type(error).__name__}: {error}); re-export it with train.export")


def _example_inputs(path: pathlib.Path, module: nn.Module, header: Mapping[str, str]) -> tuple[jax.Array, ...]:
    """What `init` builds the model's arrays from: its own example inputs, or a zero image of the file's input_shape."""
    if hasattr(module, "example_inputs"):
        try:
            return module.example_inputs()
        except _UNBUILDABLE as error:  # a model_config of the right types with impossible values (latent_dim -1)
            raise _unbuildable(path, module, error) from error
    if "input_shape" not in header:
        raise WeightsError(f"{path} holds model {type(module).__name__}, which takes images of any size, but no "
                           "input_shape in its metadata, so its arrays cannot be checked; re-export it with "
                           "train.export")
    shape = _json_field(path, header, "input_shape", list)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise WeightsError(f"{path} has input_shape {shape} in its metadata, expected [H, W, C] of positive "
                           "integers; re-export it with train.export")
    return (jnp.zeros((1, *shape), jnp.float32),)


def _check_params(path: pathlib.Path, module: nn.Module, params: Any, collections: Mapping[str, Any],
                  example: tuple[jax.Array, ...]) -> None:
    """Every array the model needs is present with its shape and dtype; a float16 file must not load silently."""
    try:
        variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *example))
    except _UNBUILDABLE as error:  # a model_config of the right types with impossible values (a zero width...)
        raise _unbuildable(path, module, error) from error
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


def create(name: str, **overrides: Any) -> PretrainedModel:
    """A catalogue name (or an export's path) -> its module and variables: `zoo.create_model(name, pretrained=True)`.

    The module is rebuilt from the file's own config, so its fields cannot be overridden here (the params'
    shapes depend on them); change compute-only fields afterwards with `module.clone(dtype=...)`.
    """
    if overrides:
        raise WeightsError(f"create_model({name!r}, pretrained=True) builds the model from the file's config, so "
                           f"it takes no overrides (got {', '.join(sorted(overrides))}); use module.clone(...) on "
                           "the result for compute-only fields such as dtype")
    loaded = load(name)
    return PretrainedModel(loaded.module, loaded.variables)


def converter_path(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where the loader looks for a converter's downloaded file: <cache>/<its published file name>."""
    return files.cache_dir(cache_dir) / _converter(name).filename


def convert(name: str, path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None) -> Any:
    """Third-party weights `name` from `path` (default: the cache), verified against the pin, then converted.

    The check comes before the file is opened by any reader, so a tampered or truncated file is never parsed.
    """
    converter = _converter(name)
    path = pathlib.Path(path) if path else converter_path(name, cache_dir)
    if not path.is_file():
        raise WeightsError(f"{name} weights not found at {path}: download {converter.url} and put it at "
                           f"{converter_path(name, cache_dir)} (or pass its path)")
    verify_converter_file(name, path)
    return converter.resolve()(path)


def verify_converter_file(name: str, path: str | os.PathLike) -> str:
    """The file's sha256 once it matches the converter's pin (the whole digest, or the published prefix)."""
    converter = _converter(name)
    digest = sha256(path)
    if not digest.startswith(converter.sha256):
        pinned = "the pinned prefix" if converter.sha256_is_prefix else "the pinned"
        raise WeightsError(f"sha256 mismatch for {name}: {path} has {digest}, {pinned} sha256 is {converter.sha256}; "
                           f"download {converter.url} again")
    return digest


def _converter(name: str) -> Converter:
    """The registered converter, or WeightsError listing the known names."""
    if name not in CONVERTERS:
        raise WeightsError(f"unknown converter {name!r}; converters: {', '.join(sorted(CONVERTERS)) or '(none)'}")
    return CONVERTERS[name]


@dataclasses.dataclass(frozen=True)
class Check:
    """One file's verification: its status ("ok", "missing", "mismatch") and a line saying what to do."""

    name: str
    status: str
    message: str


def verify(names: Sequence[str] = (), *, cache_dir: str | os.PathLike | None = None) -> list[Check]:
    """Check every (or each named) entry's and converter's local file against its pinned sha256; nothing is fetched."""
    from zoo import catalogue

    for name in names:
        if name not in REGISTRY and name not in CONVERTERS:
            raise UnknownWeightsError(f"unknown pretrained name {name!r}; known: {catalogue.known_names()}")
    names = list(names) or catalogue.list_pretrained() + catalogue.list_converters()
    return [_check_entry(n, cache_dir) if n in REGISTRY else _check_converter(n, cache_dir) for n in names]


def _check_entry(name: str, cache_dir: str | os.PathLike | None) -> Check:
    """A registry entry's bundled or cached file against its sha256."""
    entry = REGISTRY[name]
    path = entry_path(name, entry, cache_dir)
    if not path.is_file():
        fix = "reinstall deepfake-zoo" if entry.bundled else f"download {entry.url} and put it at {path}"
        return Check(name, "missing", f"{path} is missing: {fix}")
    try:
        verify_sha256(path, entry.sha256, what=f"pretrained {name!r}", fix=f"delete it and download {entry.url}"
                      if entry.url else "reinstall deepfake-zoo")
    except WeightsError as error:
        return Check(name, "mismatch", str(error))
    return Check(name, "ok", f"{path} sha256 {entry.sha256}")


def _check_converter(name: str, cache_dir: str | os.PathLike | None) -> Check:
    """A converter's cached download against its pinned sha256 (or the pinned prefix, said so)."""
    converter, path = CONVERTERS[name], converter_path(name, cache_dir)
    if not path.is_file():
        return Check(name, "missing", f"{path} is missing: download {converter.url} and put it there")
    try:
        digest = verify_converter_file(name, path)
    except WeightsError as error:
        return Check(name, "mismatch", str(error))
    prefix = " (only its prefix is pinned)" if converter.sha256_is_prefix else ""
    return Check(name, "ok", f"{path} sha256 {digest}{prefix}")


def main(argv: Sequence[str]) -> int:
    """`python -m zoo.pretrained list | show NAME | verify [NAME...]`; a ZooError is one line and exit status 2.

    verify exits 1 when a file is present but wrong, when a bundled file is missing, or when a name asked
    for is missing; a third-party download that was never made is only reported in a plain `verify`.
    """
    from zoo import catalogue

    usage = "usage: python -m zoo.pretrained list [PATTERN] | show NAME | verify [NAME...]"
    command, args = (argv[0], list(argv[1:])) if argv else ("", [])
    try:
        if command == "list" and len(args) <= 1:
            print(_listing(args[0] if args else "*"))
            return 0
        if command == "show" and len(args) == 1:
            print(catalogue.describe(args[0]))
            return 0
        if command == "verify":
            return _report(verify(args), strict=bool(args))
    except ZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(usage, file=sys.stderr)
    return 2


def _listing(pattern: str) -> str:
    """The `list` table: zoo checkpoints with their headline metric, then third-party converters."""
    from zoo import catalogue

    lines = ["pretrained (zoo.create_model(name, pretrained=True)):"]
    for name in catalogue.list_pretrained(pattern):
        entry = REGISTRY[name]
        metric = entry.card.metrics[0].headline() if entry.card and entry.card.metrics else ""
        lines.append(f"  {name:24} {metric:28} {entry.source}")
    lines.append("converters (zoo.pretrained.convert(name)):")
    lines += [f"  {n:24} {CONVERTERS[n].url}" for n in catalogue.list_converters(pattern)]
    return "\n".join(lines)


def _report(checks: list[Check], *, strict: bool) -> int:
    """Print one line per check; 1 if anything is wrong (missing counts only for bundled files or `strict`)."""
    failed = False
    for check in checks:
        print(f"{check.status:8} {check.name}: {check.message}")
        bundled = check.name in REGISTRY and bool(REGISTRY[check.name].bundled)
        failed |= check.status == "mismatch" or (check.status == "missing" and (strict or bundled))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
