"""Name -> model constructor registry: how configs and `zoo.create_model` find architectures.

Modeled on timm's registry: a model file registers a linen module class (or a factory with
the same fields) under a name; `create_model` calls it with keyword overrides or, with
`pretrained=True`, loads a published checkpoint of it (`zoo.catalogue`). The built-in model files
(detectors, gan, reenact, stylegan2, swap, vae) are imported by every lookup here before it answers, so
`zoo.list_models()` is complete however the registry was reached, while `import zoo` alone imports
no model and no JAX. Those imports are explicit, so nothing is found by string import paths.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

import flax.linen as nn

if TYPE_CHECKING:
    from zoo.pretrained import PretrainedModel

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def _load_builtin() -> None:
    """Import the zoo's model files, which register their models (once: later calls find them imported)."""
    from zoo import detectors, gan, reenact, stylegan2, swap, vae  # noqa: F401


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a module factory available as `create_model(name)`."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return add


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style pattern, e.g. "vae_*"."""
    _load_builtin()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


@overload
def create_model(name: str, pretrained: Literal[False] = False, **overrides: Any) -> nn.Module: ...
@overload
def create_model(name: str, pretrained: Literal[True], **overrides: Any) -> PretrainedModel: ...


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module | PretrainedModel:
    """The linen module registered as `name` with fields overridden; with `pretrained`, a catalogue checkpoint.

    `pretrained=True` takes a name from `zoo.list_pretrained()` (or an export's path) and returns
    `(module, variables)` as a named tuple, the file's sha256 checked first (`zoo.pretrained.create`).
    """
    if pretrained:
        from zoo import pretrained as weights  # lazy: zoo.pretrained builds its modules through this registry

        return weights.create(name, **overrides)
    _check_name(name)
    return _MODELS[name](**overrides)


def model_class(name: str) -> Callable[..., nn.Module]:
    """The registered module class (a dataclass: its fields are the model's configuration)."""
    _check_name(name)
    return _MODELS[name]


def model_fields(name: str) -> tuple[str, ...]:
    """The constructor fields of model `name`: what a config's model section may set."""
    return tuple(f.name for f in dataclasses.fields(model_class(name)) if f.name not in ("parent", "name"))


def _check_name(name: str) -> None:
    """Raise a ValueError listing the registered models if `name` is not one."""
    _load_builtin()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
