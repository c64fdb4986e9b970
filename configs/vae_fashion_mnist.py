"""Convolutional VAE on Fashion-MNIST with a discretised-logistic likelihood (exact 8-bit NLL).

    apt-get install -y dataset-fashion-mnist        # idx files in /usr/share/datasets/fashion-mnist
    python -m train --config configs/vae_fashion_mnist.py --workdir runs/vae_fmnist
    python -m train --config configs/vae_fashion_mnist.py --config.data.source=tfds:fashion_mnist ...
"""
from train import sections

DEBIAN_FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "vae"
    c.vae = sections.vae()
    c.vae.iwae_samples = 500
    c.model = sections.model_section(
        "vae_conv", latent_dim=32, channels=(32, 64), hidden=512, likelihood="logistic"
    )
    c.data.source = DEBIAN_FASHION_MNIST
    c.batch_size = 128
    c.total_steps = 20_000
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 500
    c.log_every = 200
    c.preview_every = 2000
    c.eval_every = 5000
    c.checkpoint.every = 2000
    c.eval.batch_size = 500
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.vae.iwae_samples = 8
