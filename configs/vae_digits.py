"""Convolutional VAE on scikit-learn's bundled 8x8 digits: the default job, no download needed.

    python -m train --config configs/vae_digits.py --workdir runs/vae_digits
    python -m train.evaluate --workdir runs/vae_digits

About a minute on 2 CPU cores. 1,500 training digits, 297 held out (data/sources.py); the
16-level images are binarised dynamically for the Bernoulli likelihood.
"""
from train import sections


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "vae"
    c.vae = sections.vae()
    c.vae.iwae_samples = 200
    c.model = sections.model_section("vae_conv", latent_dim=16, channels=(32, 64), hidden=256)
    c.data.source = "digits"
    c.batch_size = 64
    c.total_steps = 3000
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.log_every = 100
    c.preview_every = 1000
    c.eval_every = 3000
    c.checkpoint.every = 1000
    c.eval.batch_size = 104
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.vae.iwae_samples = 8
