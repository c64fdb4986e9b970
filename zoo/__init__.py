"""The zoo's models: pure flax.linen modules found by name, and the pretrained registry."""
from zoo import gan, swap, vae  # noqa: F401  (registers the GAN, swap and VAE models)
from zoo.registry import create_model, list_models, register

__all__ = ["create_model", "list_models", "register"]
