"""PEP 562 module attributes for a package's `__init__`: each public name imports its module on first use.

Why: `data/__init__` and `zoo/__init__` used to import their public names eagerly, which pulls in JAX,
grain and flax; a process that only needs `zoo.errors` or `data.faces.extract` (an extraction worker,
started by spawn) then spent 2-5 s importing JAX it never ran. With these attributes `import zoo;
zoo.list_models()` still works, and pays for JAX at the call, not at the import.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Mapping, MutableMapping


def attributes(namespace: MutableMapping[str, Any],
               exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for the package whose `globals()` is `namespace`; `exports`: name -> its module.

    Any other name that is a submodule of the package is imported on access too (`zoo.xla_cpu`), as the
    eager imports used to make such names attributes; anything else is the usual AttributeError. A
    resolved name is stored in the package, so each is looked up once.
    """
    package = namespace["__name__"]

    def getattr_(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *exports})

    return getattr_, dir_
