"""WGAN-GP (Gulrajani et al. 2017) on CIFAR-10 with the ResNet G and critic. For a GPU.

    python -m train --config configs/wgangp_cifar10.py --workdir runs/wgangp_cifar10
    python -m train.evaluate --workdir runs/wgangp_cifar10 --metrics fid

Mimicry's ResNet WGAN-GP (unconditional CIFAR-10 FID 22.29, 50k samples against the training
set): sngan_cifar10.py's generator, data, optimiser, schedule and evaluation, with the same ResNet
discriminator as the critic but without spectral norm (and, as there, without batch norm), and the
Wasserstein loss with a gradient penalty of weight 10 on random interpolates; 5 critic steps per
generator step. `:smoke` runs offline.
"""
import pathlib

from train import sections


def get_config(arg: str | None = None):
    base = pathlib.Path(__file__).with_name("sngan_cifar10.py")
    c = sections.load(f"{base}:{arg}" if arg else str(base))
    c.gan.loss = "wgan_gp"
    c.gan.gp_weight = 10.0
    c.gan.discriminator.spectral_norm = False
    return c
