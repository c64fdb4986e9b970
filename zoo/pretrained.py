"""Pretrained weights in a framework-light, versioned format, and `load(name_or_path)`.

A pretrained model is one `.safetensors` file: the params as named arrays (keys are the linen
param paths joined by "/") and, in the file's string metadata, the format version, the registry
model name and its constructor fields as JSON. Nothing in it depends on how flax or orbax
serialise state, so a file written today keeps loading after either changes; and no pickle is
involved. Published weights are registry entries with a URL (or a file bundled in the package)
and a sha256 that is checked before the file is read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import urllib.request
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from zoo import registry

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
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp_path = pathlib.Path(tmp.name)
    save_file(flat, str(tmp_path), metadata=header)
    tmp_path.replace(path)
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
    """Read and validate one exported file: format version, model name, and every param's shape."""
    path = pathlib.Path(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except Exception as error:  # noqa: BLE001  (any parse failure means: not a weights file)
        raise ValueError(f"{path} is not a readable .safetensors weights file ({error})") from error
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={header.get('format')!r}); export it with train.export")
    version = int(header.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version}; this zoo reads up to {FORMAT_VERSION}: upgrade deepfake-zoo")
    model_config = json.loads(header["model_config"])
    module = registry.create_model(header["model"], **_constructor_fields(model_config))
    groups: dict[str, dict[tuple[str, ...], np.ndarray]] = {}
    for key, value in load_file(str(path)).items():
        collection, _, name = key.rpartition(_COLLECTION_SEP)
        groups.setdefault(collection or "params", {})[tuple(name.split("/"))] = value
    trees = {c: traverse_util.unflatten_dict(flat) for c, flat in groups.items()}
    params = trees.pop("params", {})
    _check_params(path, module, params, trees)
    config = {"model": header["model"], "model_config": model_config, "format_version": version,
              "metadata": json.loads(header.get("metadata", "{}"))}
    return Pretrained(module, jax.tree.map(jnp.asarray, params), config, jax.tree.map(jnp.asarray, trees))


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(jax.device_get(v)) for k, v in traverse_util.flatten_dict(tree).items()}


def fetch(name: str, entry: Entry, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The verified local file for a registry entry, downloading it into the cache if needed."""
    if entry.bundled:
        path = WEIGHTS_DIR / entry.bundled
    else:
        cache = pathlib.Path(cache_dir or os.environ.get("ZOO_CACHE", pathlib.Path.home() / ".cache" / "deepfake-zoo"))
        path = cache / f"{name}-{entry.sha256[:12]}.safetensors"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            with urllib.request.urlopen(entry.url) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            tmp.replace(path)
    digest = sha256(path)
    if digest != entry.sha256:
        raise ValueError(
            f"sha256 mismatch for pretrained {name!r}: {path} has {digest}, the registry expects {entry.sha256}; "
            f"delete {path} and retry, or check the URL {entry.url or entry.bundled}"
        )
    return path


def sha256(path: str | os.PathLike) -> str:
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


def _check_params(path: pathlib.Path, module: nn.Module, params: Any, collections: Mapping[str, Any]) -> None:
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *module.example_inputs()))
    expected = {"params": variables["params"]} | {c: v for c, v in variables.items() if c in _EXPORTED}
    given = {"params": params, **collections}
    want = {_key(c, k): v.shape for c, tree in expected.items() for k, v in traverse_util.flatten_dict(tree).items()}
    got = {_key(c, k): v.shape for c, tree in given.items() for k, v in traverse_util.flatten_dict(tree).items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(f"{path} does not match model {module.__class__.__name__}: missing {missing}, unexpected {extra}")
    wrong = [f"{k}: {got[k]} != {want[k]}" for k in want if tuple(got[k]) != tuple(want[k])]
    if wrong:
        raise ValueError(f"{path} has params of the wrong shape for its model config: {'; '.join(wrong)}")


def _key(collection: str, path: tuple[str, ...]) -> str:
    name = "/".join(path)
    return name if collection == "params" else f"{collection}{_COLLECTION_SEP}{name}"
