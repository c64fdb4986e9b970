"""beta-VAE (Higgins et al. 2017) on Fashion-MNIST: beta = 4 with a linear KL warm-up.

    python -m train --config configs/beta_vae_fashion_mnist.py --workdir runs/beta_vae_fmnist

Same model and data as vae_fashion_mnist.py; only the KL weight differs, trading reconstruction
for a more factorised latent. The reported neg_elbo and IWAE NLL are always the beta = 1 bounds.
"""
import pathlib

from train import sections


def get_config(arg: str | None = None):
    c = sections.load(str(pathlib.Path(__file__).with_name("vae_fashion_mnist.py")) + (f":{arg}" if arg else ""))
    c.vae.beta = 4.0
    c.vae.kl_warmup_steps = 5000 if not arg else 2
    return c
