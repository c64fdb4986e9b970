"""The zoo's models: pure flax.linen modules found by name, and the pretrained registry."""
from zoo import xla_cpu

xla_cpu.apply()  # before any JAX computation starts the CPU backend

from zoo import gan, swap, vae  # noqa: E402,F401  (registers the GAN, swap and VAE models)
from zoo.registry import create_model, list_models, register  # noqa: E402

__all__ = ["create_model", "list_models", "register"]
