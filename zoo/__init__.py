"""The zoo's models: pure flax.linen modules found by name, and the pretrained registry.

Importing it never edits the environment; `zoo.xla_cpu.apply()` sets the XLA:CPU flag the
zoo's steps are fastest with, which the command-line entry points call and scripts may.
"""
from zoo import gan, swap, vae  # noqa: F401  (registers the GAN, swap and VAE models)
from zoo import xla_cpu  # noqa: F401  (public: `zoo.xla_cpu.apply()`; importing it applies nothing)
from zoo.catalogue import list_pretrained
from zoo.registry import create_model, list_models, register

__all__ = ["create_model", "list_models", "list_pretrained", "register"]
