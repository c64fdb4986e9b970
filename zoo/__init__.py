"""The zoo's models: pure flax.linen modules found by name, and the pretrained registry.

Importing it never edits the environment; `zoo.xla_cpu.apply()` sets the XLA:CPU flag the
zoo's steps are fastest with, which the command-line entry points call and scripts may.

Importing it imports nothing else either: the public names below, and the submodules (`zoo.swap`,
`zoo.xla_cpu`, ...), load on first use (`zoo.lazy`), so `zoo.errors` or `zoo.files` alone cost no JAX.
The registry loads the built-in model files (GAN, swap, VAE) when it is first asked for a model.
"""
from typing import TYPE_CHECKING

from zoo import lazy

_EXPORTS = {
    "create_model": "zoo.registry",
    "list_models": "zoo.registry",
    "list_pretrained": "zoo.catalogue",
    "register": "zoo.registry",
}
__all__ = ["create_model", "list_models", "list_pretrained", "register"]
__getattr__, __dir__ = lazy.attributes(globals(), _EXPORTS)

if TYPE_CHECKING:
    from zoo.catalogue import list_pretrained
    from zoo.registry import create_model, list_models, register
