"""WGAN-GP (Gulrajani et al. 2017) on CIFAR-10 with the ResNet G and critic. For a GPU.

    python -m train --config configs/wgangp_cifar10.py --workdir runs/wgangp_cifar10
    python -m train.evaluate --workdir runs/wgangp_cifar10 --metrics fid

Mimicry's ResNet WGAN-GP (unconditional CIFAR-10 FID 22.29, 50k samples against the training
set): SNGAN's ResNet generator and, as the critic, the same ResNet discriminator without spectral
norm or batch norm; the Wasserstein loss with a gradient penalty of weight 10 on random
interpolates; 5 critic steps per generator step, Adam 2e-4 with betas (0, 0.9), batch 64,
100k generator steps (500k critic steps, which total_steps counts). Difference: cosine, not
linear, learning-rate decay. Evaluation and data as sngan_cifar10.py; `:smoke` runs offline.
"""
from train import config as config_lib
from train.families import gan


def get_config(arg: str | None = None):
    c = config_lib.base_config()
    c.family = "gan"
    c.gan = gan.section()
    c.model = config_lib.model_section("sngan_g", latent_dim=128, ngf=256)
    c.gan.discriminator = config_lib.model_section("sngan_d", ndf=128, spectral_norm=False)
    c.gan.loss = "wgan_gp"
    c.gan.gp_weight = 10.0
    c.gan.n_critic = 5
    c.gan.extractor = "inception_v3_fid"
    c.gan.eval_samples = 50_000
    c.data.source = "tfds:cifar10"
    c.data.eval_split = "train"
    c.data.worker_count = 4
    c.batch_size = 64
    c.total_steps = 500_000
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.optim.schedule = "cosine"
    c.log_every = 500
    c.preview_every = 10_000
    c.eval_every = 100_000
    c.checkpoint.every = 10_000
    c.eval.batch_size = 500
    c.eval.metrics = ("fid", "disc")
    return config_lib.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    config_lib.smoke(c)
    c.data.source = "synthetic_faces:n=40;size=32"
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.model.ngf, c.gan.discriminator.ndf = 16, 16
    c.eval.metrics = ("disc",)
    c.gan.eval_samples = 64
