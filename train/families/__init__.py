"""Families by name: each module has `section()` (its config defaults) and `make(config, info)`."""
from __future__ import annotations

from types import ModuleType

from train.families import detect, gan, reenact, swap, vae
from zoo.errors import ConfigError

FAMILIES: dict[str, ModuleType] = {"vae": vae, "gan": gan, "swap": swap, "detect": detect, "reenact": reenact}


def get(name: str) -> ModuleType:
    """The family module called `name`, or an error listing the known ones."""
    if name not in FAMILIES:
        raise ConfigError(f"family = {name!r} is not a model family; choose one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
